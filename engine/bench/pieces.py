"""``python -m engine.bench.pieces``: templates as artists ship them, with eyes, teeth and helpers.

Bodies: MakeHuman's base mesh as shipped (body, eyeballs, teeth, tongue, lashes, tights, skirt
and hair helpers, 139 joint cubes) onto each target, matched three ways in one run: ``pieces``
(the default: the skin found and matched, every other piece carried by it), ``as skin`` (every
piece matched as skin: the match before) and ``skin alone`` (MakeHuman's body without its pieces,
the reference for time and accuracy). Per row: the verdict's keypoints (median and worst, in % of
the target's diagonal), whether a part landed on another part or side, the verdict, the seconds
(each match with a fresh feature and keypoint cache).

Heads (``--heads N``): the base mesh's head cut with its pieces (1.4 ear widths round the ears:
skin, eyeballs, teeth, tongue, lashes, the head's joint cubes) onto the heads of the first N FAUST
bodies of the split, cut as scans (2.3 ear widths) and each turned by a random rotation. Per pair:
the eyeballs' and tooth rows' shape error (RMS after the best similarity, % of the piece's
radius), each eyeball centre's distance from where the skin round it carries it, in eye radii
(``eye/lids``: by the best similarity of its lids; ``eye/ties``: its rest centre tied to the
nearest skin face), the nose, ears and head top against the target's own (% of the
target head's diagonal), the verdict. ``as skin`` rows for the match before.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

BODY_TARGETS = ("realworld/xbot.obj", "realworld/ogre.obj")  # dev characters
TEMPLATE = "realworld/mh_base_full.obj"
SKIN_ALONE = "realworld/mh_body.obj"
# the named pieces whose shape the head rows measure (the template file's groups)
RIGID_GROUPS = ("helper-l-eye", "helper-r-eye", "helper-upper-teeth", "helper-lower-teeth")


def obj_groups(path: str) -> np.ndarray:
    """(faces,) the ``g`` group name of every face of an OBJ file, in file order ("" before any)."""
    names, group = [], ""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("g "):
                group = line.split(maxsplit=1)[1].strip()
            elif line.startswith("f "):
                names.append(group)
    return np.asarray(names, object)


def _fresh_cache() -> None:
    os.environ["STABLEWRAP_CACHE"] = tempfile.mkdtemp(prefix="stablewrap-pieces-")


def _timed(source, target, **kw):
    from ..pipeline import match

    _fresh_cache()
    t = time.perf_counter()
    corr = match(source, target, **kw)
    return corr, time.perf_counter() - t


def _misplaced(verdict: dict) -> str:
    reason = verdict.get("reason", "")
    for key in ("swapped", "mirrored", "other parts", "other body parts"):
        if key in reason:
            return reason.split(":")[-1].strip()[:40] if ":" in reason else key
    return "none"


def bodies(data: str, targets: list[str]) -> list[dict]:
    from ..mesh import load_mesh

    template, alone = os.path.join(data, TEMPLATE), os.path.join(data, SKIN_ALONE)
    n_template = len(load_mesh(template).orig_vertices)
    rows = []
    print(f"{'target':<18} {'row':<10} {'kp med %':>8} {'kp worst %':>10} {'misplaced':>12} {'verdict':>7} {'s':>6}")
    for tgt in targets:
        diag = load_mesh(tgt).mesh.bbox_diagonal  # the normalised target's: the verdict's units are its sqrt(area) = 1
        for row, src, kw in (("pieces", template, {}), ("as skin", template, {"skin": np.ones(n_template, bool)}),
                             ("skin alone", alone, {})):
            corr, secs = _timed(src, tgt, **kw)
            v = corr.meta.get("verdict") or {}
            med, worst = v.get("keypoint_error", np.nan), v.get("keypoint_error_max", np.nan)
            r = {"target": os.path.basename(tgt), "row": row, "kp_med_pct": 100 * med / diag,
                 "kp_worst_pct": 100 * worst / diag, "misplaced": _misplaced(v), "verdict": v.get("verdict", "-"), "s": secs}
            rows.append(r)
            print(f"{r['target']:<18} {row:<10} {r['kp_med_pct']:>8.2f} {r['kp_worst_pct']:>10.2f} {r['misplaced']:>12} "
                  f"{r['verdict']:>7} {secs:>6.1f}", flush=True)
    return rows


def head_template(data: str):
    """The base mesh's head with its pieces: vertices, faces, the named pieces' vertex indices
    (RIGID_GROUPS), the skin landmarks (engine.bench.heads) as indices into the head."""
    from ..keypoints.detect import detect_keypoints
    from ..mesh import load_mesh_file, triangulate
    from .heads import _landmarks, cut_head

    v, f, _ = load_mesh_file(os.path.join(data, TEMPLATE))
    tri, tri_to_poly = triangulate(f, len(v))
    tri_group = obj_groups(os.path.join(data, TEMPLATE))[tri_to_poly]
    bv, bf, _ = load_mesh_file(os.path.join(data, SKIN_ALONE))
    body_tris = triangulate(bf, len(bv))[0]
    kp = detect_keypoints(np.asarray(bv, np.float64), body_tris)  # the base mesh's body is this body, vertex for vertex
    hv, hf, used, _ = cut_head(np.asarray(v, np.float64), tri, kp, 1.4)
    where = np.full(len(v), -1)
    where[used] = np.arange(len(used))
    kept = (where[tri] >= 0).all(axis=1)
    named = {g: np.unique(where[tri[kept & (tri_group == g)]]) for g in RIGID_GROUPS}
    body_used = used[used < len(bv)]
    lm = _landmarks(np.asarray(bv, np.float64), body_tris, kp, body_used)
    landmarks = {k: int(where[body_used[i]]) for k, i in lm.items()}
    return hv, hf, named, landmarks


def _shape_error(rest: np.ndarray, got: np.ndarray) -> float:
    """RMS distance after the best similarity, in % of the rest piece's radius."""
    from ..geometry.ride_along import similarity

    s, rot, t = similarity(rest, got)
    radius = float(np.sqrt(np.mean(np.sum((rest - rest.mean(0)) ** 2, axis=1))))
    resid = got - (s * rest @ rot.T + t)
    return 100.0 * float(np.sqrt(np.mean(np.sum(resid**2, axis=1)))) / (s * radius)


def _lid_offset(hv, skin: np.ndarray, eye: np.ndarray, fitted: np.ndarray) -> float:
    """The fitted eyeball centre's distance from where its lids carry it, in eye radii (fitted):
    the lids are the skin vertices within a quarter radius beyond the skin nearest the eyeball's
    surface, their best similarity (rest -> fitted) carries the rest centre."""
    from scipy.spatial import cKDTree

    from ..geometry.ride_along import similarity

    idx = np.nonzero(skin)[0]
    d = cKDTree(hv[eye]).query(hv[idx])[0]
    radius = float(np.mean(np.linalg.norm(hv[eye] - hv[eye].mean(0), axis=1)))
    lids = idx[d <= d.min() + 0.25 * radius]
    s, rot, t = similarity(hv[lids], fitted[lids])
    got = fitted[eye]
    return float(np.linalg.norm(got.mean(0) - (s * hv[eye].mean(0) @ rot.T + t))) / float(
        np.mean(np.linalg.norm(got - got.mean(0), axis=1)))


def _eye_offset(hv, hf, skin: np.ndarray, eye: np.ndarray, fitted: np.ndarray) -> float:
    """The fitted eyeball centre's distance from where the skin surface carries it (surface ties
    of its rest centre to the nearest skin face: stricter than the lids', and noisier, the
    centre lying a few of those faces behind it), in eye radii (fitted)."""
    from ..geometry.surface_ties import SurfaceTies

    idx = np.nonzero(skin)[0]
    remap = np.full(len(hv), -1)
    remap[idx] = np.arange(len(idx))
    faces = remap[hf[skin[hf].all(axis=1)]]
    centre = hv[eye].mean(0, keepdims=True)
    carried = SurfaceTies(hv[idx], faces, centre).carry(fitted[idx])[0]
    got = fitted[eye]
    radius = float(np.mean(np.linalg.norm(got - got.mean(0), axis=1)))
    return float(np.linalg.norm(got.mean(0) - carried)) / radius


def heads(data: str, n: int, split: str, seed: int) -> list[dict]:
    from scipy.spatial.transform import Rotation

    from ..keypoints.detect import detect_keypoints
    from ..mesh import load_mesh, prepare_mesh
    from ..geometry.pieces import find_pieces
    from .datasets import load_pairs, load_triangles
    from .heads import _landmarks, _mapped, cut_head

    hv, hf, named, lm = head_template(data)
    pm = prepare_mesh(hv, hf, "head template")
    skin = find_pieces(pm.mesh).skin[pm.orig_to_clean]
    print(f"head template: {len(hv)} vertices, skin {int(skin.sum())}; pieces: "
          + ", ".join(f"{g} {len(i)}" for g, i in named.items()))
    targets = []
    for pair in load_pairs(data, "faust5k", split=split):
        if str(pair.path_b) not in targets:
            targets.append(str(pair.path_b))
        if len(targets) == n:
            break
    rows = []
    print(f"{'target head':<16} {'row':<8} {'eye shape %':>11} {'teeth shape %':>13} {'eye/lids':>8} {'eye/ties':>8} "
          f"{'nose %':>6} {'ears %':>6} {'top %':>6} {'verdict':>7} {'s':>5}")
    for i, path in enumerate(targets):
        v, f = load_triangles(path)
        v, f = np.asarray(v, np.float64), np.asarray(f, np.int64)
        kb = detect_keypoints(v, f)
        tv, tf, t_used, _ = cut_head(v, f, kb, 2.3)
        turn = Rotation.random(random_state=seed + i).as_matrix()
        tvr = tv @ turn.T
        tlm = _landmarks(v, f, kb, t_used)
        diag = float(np.linalg.norm(tv.max(0) - tv.min(0)))
        for row, kw in (("pieces", {}), ("as skin", {"skin": np.ones(len(hv), bool)})):
            corr, secs = _timed((hv, hf), (tvr, tf), **kw)
            fitted = np.asarray(corr.fitted_vertices, np.float64)
            eye_err = [_shape_error(hv[named[g]], fitted[named[g]]) for g in RIGID_GROUPS[:2]]
            teeth_err = [_shape_error(hv[named[g]], fitted[named[g]]) for g in RIGID_GROUPS[2:]]
            centre = [_eye_offset(hv, hf, skin, named[g], fitted) for g in RIGID_GROUPS[:2]]
            lids = [_lid_offset(hv, skin, named[g], fitted) for g in RIGID_GROUPS[:2]]
            errs = {k: float(np.linalg.norm(_mapped(corr, tvr, tf, lm[k]) - tvr[tlm[k]])) / diag for k in lm if k in tlm}
            ears = max(errs.get("left_ear", np.nan), errs.get("right_ear", np.nan))
            r = {"target": os.path.basename(path), "row": row, "eye_shape_pct": max(eye_err), "teeth_shape_pct": max(teeth_err),
                 "eye_centre_radii": max(centre), "eye_lids_radii": max(lids), "nose_pct": 100 * errs.get("nose", np.nan), "ears_pct": 100 * ears,
                 "top_pct": 100 * errs.get("head_top", np.nan), "verdict": (corr.meta.get("verdict") or {}).get("verdict", "-"),
                 "s": secs}
            rows.append(r)
            print(f"{r['target']:<16} {row:<8} {r['eye_shape_pct']:>11.1f} {r['teeth_shape_pct']:>13.1f} "
                  f"{r['eye_lids_radii']:>8.2f} {r['eye_centre_radii']:>8.2f} {r['nose_pct']:>6.1f} {r['ears_pct']:>6.1f} {r['top_pct']:>6.1f} "
                  f"{r['verdict']:>7} {secs:>5.1f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from .datasets import default_data_dir

    ap = argparse.ArgumentParser(prog="python -m engine.bench.pieces", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="benchmark data folder (default: ../shared/data)")
    ap.add_argument("--targets", nargs="*", default=None,
                    help="body targets (relative to --data or paths; default: the dev characters X Bot and the ogre)")
    ap.add_argument("--faust", type=int, default=0, metavar="N", help="also the first N FAUST bodies of the split as body targets")
    ap.add_argument("--heads", type=int, default=0, metavar="N", help="the head template onto the first N FAUST heads of the split")
    ap.add_argument("--split", default="val", choices=("dev", "val", "all"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the target heads' rotations (plus the head's number)")
    ap.add_argument("--no-bodies", action="store_true", help="heads only")
    args = ap.parse_args(argv)
    data = args.data or str(default_data_dir())
    if not os.path.exists(os.path.join(data, TEMPLATE)):
        print(f"error: {os.path.join(data, TEMPLATE)} not found (the MakeHuman base mesh of the shared data)", file=sys.stderr)
        return 2
    if not args.no_bodies:
        from .datasets import load_pairs

        targets = [t if os.path.isabs(t) or os.path.exists(t) else os.path.join(data, t) for t in (args.targets or BODY_TARGETS)]
        if args.faust:
            seen = []
            for pair in load_pairs(data, "faust5k", split=args.split):
                if str(pair.path_b) not in seen:
                    seen.append(str(pair.path_b))
            targets += seen[: args.faust]
        missing = [t for t in targets if not os.path.exists(t)]
        if missing:
            print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
            return 2
        bodies(data, targets)
    if args.heads:
        heads(data, args.heads, args.split, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
