"""``python -m engine.bench.heads``: heads onto heads, cut from the FAUST bodies, each target turned.

For each FAUST pair of the split (``--split dev|val`` as the body benchmark): the source's head
cut as a template head is (a ball of 1.4 ear widths round the ears' midpoint: head and neck),
the target's as a scan is (2.3 ear widths: head, neck and the top of the shoulders), the target
turned by a random rotation (seeded per pair). The ears come from the full bodies' keypoints.
Rows: the rigid baseline and the default match; the mean geodesic error x100 over the
ground-truth points inside both cuts (on the target head, / sqrt(its area)), what guided the
match (face landmarks, or nothing), the verdict and the seconds; then the pair's whole bodies
matched once, for the time a head pair takes beside a 5k body pair in the same run.

``--template`` adds the MakeHuman head (the realworld template's body cut at 1.4 ear widths)
onto every target head: where its nose, ears and head top land against the target's own
(the nose tip of the face mesh, the ears of the body keypoints, found on the whole body; the head
top: the highest vertex along the face's up), in % of the target head's bounding-box diagonal,
and whether an ear landed on the other side.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def cut_head(vertices: np.ndarray, faces: np.ndarray, body, radius: float):
    """The part of a mesh within ``radius`` ear widths of the ears' midpoint (faces wholly inside).

    Returns vertices (h, 3), faces (g, 3), the kept vertices' indices in the mesh (h,), the ear width.
    """
    ears = body.point("left_ear"), body.point("right_ear")
    width = float(np.linalg.norm(ears[0] - ears[1]))
    keep = np.linalg.norm(vertices - (ears[0] + ears[1]) / 2, axis=1) < radius * width
    kept = faces[keep[faces].all(1)]
    used = np.unique(kept)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[kept], used, width


def _landmarks(vertices: np.ndarray, faces: np.ndarray, body, used: np.ndarray) -> dict:
    """Reference points of a head as indices into it: the nose tip (the face mesh's, found from
    the whole body; else the body keypoint's), the ears (the body keypoints'), the head top (the
    highest vertex along the face's up, forehead over chin; else the body's up: a tilted head's
    highest point is not its crown)."""
    from ..keypoints.face import NOSE, detect_face_landmarks

    where = {int(v): i for i, v in enumerate(used)}
    face = detect_face_landmarks(vertices, faces, body=body)
    out = {}
    for name in ("nose", "left_ear", "right_ear"):
        v = int(face.vertices[NOSE]) if name == "nose" and face.vertices[NOSE] >= 0 else int(body.vertices[body.index(name)])
        if v in where:
            out[name] = where[v]
    up = face.up if face.found_face else body.frame()[1]
    out["head_top"] = int(np.argmax(vertices[used] @ up))
    return out


def _mapped(corr, target_vertices: np.ndarray, target_faces: np.ndarray, index: int) -> np.ndarray:
    f, b = int(corr.src_to_tgt_face[index]), corr.src_to_tgt_bary[index].astype(np.float64)
    return b @ target_vertices[target_faces[f]]


def main(argv: list[str] | None = None) -> int:
    import engine
    from scipy.spatial.transform import Rotation

    from ..keypoints.detect import detect_keypoints
    from .datasets import default_data_dir, load_pairs, load_triangles
    from .geodesics import geodesic_matrix
    from .metrics import map_errors

    p = argparse.ArgumentParser(prog="python -m engine.bench.heads", description=__doc__.split("\n\n")[1])
    p.add_argument("--data", default=None, help=f"benchmark data folder (default: {default_data_dir()})")
    p.add_argument("--split", default="dev", choices=("all", "dev", "val"))
    p.add_argument("--pairs", type=int, default=None, metavar="N", help="the first N pairs of the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the targets' rotations (plus the pair's index)")
    p.add_argument("--template", action="store_true", help="also the MakeHuman head onto every target head")
    p.add_argument("--no-baseline", action="store_true")
    args = p.parse_args(argv)
    data = args.data or str(default_data_dir())
    # a fresh feature and keypoint cache: every match pays its detections, as a new asset does
    # (the seconds would otherwise depend on what earlier runs left)
    import tempfile

    os.environ["STABLEWRAP_CACHE"] = tempfile.mkdtemp(prefix="stablewrap-heads-")
    pairs = load_pairs(data, "faust5k", limit=args.pairs, split=args.split)
    bodies: dict = {}

    def body(path):
        if path not in bodies:
            v, f = load_triangles(path)
            v, f = np.array(v, np.float64), np.array(f, np.int64)
            bodies[path] = (v, f, detect_keypoints(v, f))
        return bodies[path]

    template = None
    if args.template:
        from ..mesh import load_mesh

        mh = load_mesh(os.path.join(data, "realworld", "mh_body.obj")).mesh
        mh_kp = detect_keypoints(mh.vertices, mh.faces)
        hv, hf, used, _ = cut_head(mh.vertices, mh.faces, mh_kp, 1.4)
        template = (hv, hf, _landmarks(mh.vertices, mh.faces, mh_kp, used))
    rows = ["rigid", "default"] if not args.no_baseline else ["default"]
    print(f"{'pair':<24} {'row':<8} {'err x100':>8} {'guided by':>9} {'verdict':>8} {'s':>6}")
    totals = {r: [] for r in rows}
    head_s, body_s, lm_rows = [], [], []
    for pair in pairs:
        va, fa, ka = body(str(pair.path_a))
        vb, fb, kb = body(str(pair.path_b))
        sv, sf, s_used, _ = cut_head(va, fa, ka, 1.4)
        tv, tf, t_used, _ = cut_head(vb, fb, kb, 2.3)
        turn = Rotation.random(random_state=args.seed + pair.index).as_matrix()
        gt_a, gt_b = pair.ground_truth()
        ia, ib = np.full(len(va), -1), np.full(len(vb), -1)
        ia[s_used], ib[t_used] = np.arange(len(s_used)), np.arange(len(t_used))
        inside = (ia[gt_a] >= 0) & (ib[gt_b] >= 0)
        geo = geodesic_matrix(tv, tf)
        for row in rows:
            t = time.perf_counter()
            corr = engine.match((sv, sf), (tv @ turn.T, tf), method="rigid" if row == "rigid" else "full")
            secs = time.perf_counter() - t
            if row == "default":
                head_s.append(secs)
            err = map_errors(geo, tf, corr.src_to_tgt_face, corr.src_to_tgt_bary, ia[gt_a[inside]], ib[gt_b[inside]])
            totals[row].append(err)
            kp = corr.meta.get("keypoints", {})
            guided = kp.get("kind", "-") if kp.get("used") else "none"
            verdict = (corr.meta.get("verdict") or {}).get("verdict", "-")
            print(f"{pair.label:<24} {row:<8} {100 * err.mean():>8.2f} {guided:>9} {verdict:>8} {secs:>6.1f}", flush=True)
        t = time.perf_counter()
        engine.match((va, fa), (vb, fb))
        body_s.append(time.perf_counter() - t)
        if template is not None:
            mv, mf, mlm = template
            tlm = _landmarks(vb, fb, kb, t_used)
            tvr = tv @ turn.T
            diag = float(np.linalg.norm(tv.max(0) - tv.min(0)))
            corr = engine.match((mv, mf), (tvr, tf))
            errs, swapped = {}, False
            for name, si in mlm.items():
                if name in tlm:
                    got = _mapped(corr, tvr, tf, si)
                    errs[name] = float(np.linalg.norm(got - tvr[tlm[name]])) / diag
                    twin = {"left_ear": "right_ear", "right_ear": "left_ear"}.get(name)
                    if twin in tlm and np.linalg.norm(got - tvr[tlm[twin]]) < np.linalg.norm(got - tvr[tlm[name]]):
                        swapped = True
            lm_rows.append((pair.label, errs, swapped, (corr.meta.get("verdict") or {}).get("verdict", "-")))
    print()
    for row in rows:
        allerr = np.concatenate(totals[row])
        per = [100 * e.mean() for e in totals[row]]
        print(f"{row:<8} mean {100 * allerr.mean():.2f}  median pair {np.median(per):.2f}  pairs > 5: {sum(x > 5 for x in per)} of {len(per)}")
    print(f"seconds a head pair {np.mean(head_s):.1f}, a 5k body pair {np.mean(body_s):.1f} ({np.mean(head_s) / np.mean(body_s):.2f}x)")
    if lm_rows:
        print()
        print(f"{'MakeHuman head ->':<24} {'nose %':>7} {'ears %':>7} {'top %':>7} {'ear side':>8} {'verdict':>8}")
        for label, errs, swapped, verdict in lm_rows:
            ears = [errs[n] for n in ("left_ear", "right_ear") if n in errs]
            print(f"{label.split('->')[1] if '->' in label else label:<24} {100 * errs.get('nose', np.nan):>7.1f} "
                  f"{100 * max(ears) if ears else float('nan'):>7.1f} {100 * errs.get('head_top', np.nan):>7.1f} "
                  f"{'SWAPPED' if swapped else 'ok':>8} {verdict:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
