"""Part-matching benchmark: BSB success rate per ground-truth part, and "no match" on cut targets.

    python -m engine.bench.parts --set faust5k [--pairs 20] [--data DIR]
    python -m engine.bench.parts --set smal_r --cut tail

For every pair (A, B) of the set and every ground-truth part p of A (see
:mod:`engine.bench.gt_parts`), the vertex group of p on A is matched to B; the
query succeeds when the returned BSB vertex lies in part p of B. With
``--cut PART`` every target additionally loses that part (its faces removed)
and the query of that part must answer "no match"; the other parts are
queried on the cut target too, so false "no match" answers show. Meshes,
descriptors and alignments are computed once per shape / pair.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from ..errors import StableWrapError
from ..mesh import prepare_mesh
from ..parts.features import descriptors
from .gt_parts import SetParts
from ..parts.shape_match import PartMatcher


def cap_holes(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close every boundary loop with a fan around its centroid (consistent orientation).

    vertices : (n, 3) float; faces : (m, 3) int. Returns the new (n + loops, 3) vertices and faces.
    """
    f = np.asarray(faces, np.int64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = directed[:, 0] * (len(vertices) + 1) + directed[:, 1]
    rkey = directed[:, 1] * (len(vertices) + 1) + directed[:, 0]
    boundary = directed[~np.isin(key, rkey)]
    nxt = {int(u): int(v) for u, v in boundary}
    verts = [np.asarray(vertices, np.float64)]
    new_faces = [f]
    n = len(vertices)
    seen: set[int] = set()
    for start in list(nxt):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        while nxt.get(loop[-1]) is not None and nxt[loop[-1]] != start and nxt[loop[-1]] not in seen:
            loop.append(nxt[loop[-1]])
            seen.add(loop[-1])
        if len(loop) < 3:
            continue
        c = n + sum(len(v) for v in verts[1:])
        verts.append(np.asarray(vertices, np.float64)[loop].mean(0, keepdims=True))
        ring = np.asarray(loop)
        new_faces.append(np.stack([np.roll(ring, -1), ring, np.full(len(ring), c)], 1))
    return np.concatenate(verts), np.concatenate(new_faces)


def cut_part(prepared, labels: np.ndarray, part: int, cap: bool = True):
    """The prepared mesh without the faces touching ``part`` (the hole capped, as on a
    shape that never had the part), and its per-vertex labels (cap centres: torso, 0).

    Returns (PreparedMesh, labels (n',) int64) or (None, None) when nothing is left.
    """
    mesh = prepared.mesh
    keep = ~np.any(labels[mesh.faces] == part, axis=1)
    if keep.sum() < 4:
        return None, None
    faces = mesh.faces[keep]
    # keep the main piece: cutting can leave small islands, which would change the spectrum
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    n = mesh.n_vertices
    _, comp = connected_components(sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)), directed=False)
    main = np.bincount(comp[faces[:, 0]]).argmax()
    faces = faces[comp[faces[:, 0]] == main]
    ref = np.unique(faces)  # drop the cut vertices ourselves, so no vertex is left unreferenced
    remap = np.full(mesh.n_vertices, -1, np.int64)
    remap[ref] = np.arange(len(ref))
    v, f = mesh.vertices[ref], remap[faces]
    lab = labels[ref]
    if cap:
        v, f = cap_holes(v, f)
        lab = np.r_[lab, np.zeros(len(v) - len(lab), np.int64)]
    pm = prepare_mesh(v, f, name=mesh.name + f"-cut{part}")
    return pm, lab[pm.clean_to_orig]


def run(set_name: str, data_dir, n_pairs: int | None, cut: str | None, options: dict, log=print,
        cut_pairs: int | None = None, cache: bool = True) -> dict:
    from .datasets import load_pairs, set_dir

    root = set_dir(data_dir, set_name)
    pairs = load_pairs(data_dir, set_name, limit=n_pairs)
    parts = SetParts.load(str(root), set_name)
    names = parts.names
    cut_id = None
    if cut is not None:
        if cut not in names:
            raise StableWrapError(f"--cut {cut!r}: not a part of {set_name}; parts: {', '.join(names)}")
        cut_id = names.index(cut)
    desc_cache: dict[str, np.ndarray] = {}

    store = None
    if cache:
        from ..features.cache import FeatureCache, mesh_key

        store = FeatureCache()

    def desc(shape: str, pm) -> np.ndarray:
        """Descriptors per shape, kept on disk in the feature cache between runs."""
        if shape not in desc_cache:
            key = mesh_key(pm.mesh.vertices, pm.mesh.faces, {"kind": "parts-bench-descriptors"}) if store else None
            hit = store.get(key) if store else None
            if hit is not None and "desc" in hit:
                desc_cache[shape] = hit["desc"].astype(np.float32)
            else:
                desc_cache[shape] = descriptors(pm.mesh)
                if store:
                    store.put(key, {"desc": desc_cache[shape]})
        return desc_cache[shape]

    ok = defaultdict(int)
    total = defaultdict(int)
    cut_ok = cut_total = 0
    cut_false_nomatch = cut_other = 0
    query_times: list[float] = []
    t_start = time.time()
    for pi, pair in enumerate(pairs):
        pa, la = parts.mesh_and_labels(pair.name_a)
        pb, lb = parts.mesh_and_labels(pair.name_b)
        matcher = PartMatcher(pa, pb, desc(pair.name_a, pa), desc(pair.name_b, pb), **options)
        row = []
        for p, nm in enumerate(names):
            src_part = np.nonzero(la == p)[0]
            if len(src_part) == 0:
                continue
            t0 = time.perf_counter()
            res, _ = matcher.match_clean(src_part)
            query_times.append(time.perf_counter() - t0)
            good = bool(res.matched and lb[res.vertex] == p)
            ok[nm] += good
            total[nm] += 1
            row.append(f"{nm}={'ok' if good else ('none' if not res.matched else names[lb[res.vertex]])}")
        line = f"{pair.name_a} -> {pair.name_b} ({matcher.features.side_method} side): " + " ".join(row)
        if cut_id is not None and (cut_pairs is None or pi < cut_pairs):
            pc, lc = cut_part(pb, lb, cut_id)
            if pc is not None:
                cm = PartMatcher(pa, pc, desc(pair.name_a, pa), None, **options)
                crow = []
                for p, nm in enumerate(names):
                    src_part = np.nonzero(la == p)[0]
                    res, _ = cm.match_clean(src_part)
                    if p == cut_id:
                        cut_total += 1
                        cut_ok += not res.matched
                        crow.append(f"{nm}:{'none' if not res.matched else 'MATCHED'}")
                    else:
                        cut_other += 1
                        cut_false_nomatch += not res.matched
                line += " | cut: " + " ".join(crow) + f" (other parts unmatched: {cut_false_nomatch}/{cut_other})"
        log(line)
    per_part = {nm: ok[nm] / total[nm] for nm in names if total[nm]}
    overall = sum(ok.values()) / max(1, sum(total.values()))
    out = {
        "set": set_name,
        "pairs": len(pairs),
        "per_part": per_part,
        "overall": overall,
        "query_seconds_mean": float(np.mean(query_times)) if query_times else 0.0,
        "query_seconds_max": float(np.max(query_times)) if query_times else 0.0,
        "seconds": time.time() - t_start,
    }
    if cut_id is not None:
        out["cut_part"] = cut
        out["cut_pairs"] = cut_total
        out["no_match_rate"] = cut_ok / max(1, cut_total)
        out["false_no_match_rate"] = cut_false_nomatch / max(1, cut_other)
    return out


def main(argv=None) -> int:
    from .datasets import SETS, default_data_dir

    ap = argparse.ArgumentParser(prog="python -m engine.bench.parts", description="BSB part-matching benchmark")
    ap.add_argument("--set", required=True, choices=[s for s in SETS])
    ap.add_argument("--data", default=None, help="benchmark data folder (default: ../shared/data)")
    ap.add_argument("--pairs", type=int, default=None, help="only the first N pairs")
    ap.add_argument("--cut", default=None, help="also cut this part off every target and expect 'no match' (e.g. tail, arm_left)")
    ap.add_argument("--cut-pairs", type=int, default=None, help="run the --cut check on the first N pairs only")
    ap.add_argument("--side-weight", type=float, default=0.2, help="share of the left/right side block")
    ap.add_argument("--position-weight", default="auto", help="share of the aligned 3D position block, or 'auto'")
    ap.add_argument("--sigma", type=float, default=0.35, help="width of the position kernel")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--side", default="auto", choices=["auto", "plane", "geodesic"], help="how left is told from right")
    args = ap.parse_args(argv)
    pw = args.position_weight if args.position_weight == "auto" else float(args.position_weight)
    options = {"side_weight": args.side_weight, "position_weight": pw, "sigma": args.sigma, "k": args.k, "side": args.side}
    try:
        out = run(args.set, args.data or default_data_dir(), args.pairs, args.cut, options,
                  log=lambda m: print(m, flush=True), cut_pairs=args.cut_pairs)
    except StableWrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{out['set']}: {out['pairs']} pairs ({options}), success rate per part (BSB vertex inside the right part):")
    for nm, r in out["per_part"].items():
        print(f"  {nm:18s} {r:.3f}")
    print(f"  {'overall':18s} {out['overall']:.3f}")
    if "no_match_rate" in out:
        print(f"cut {out['cut_part']}: 'no match' returned for the missing part in {out['no_match_rate']:.3f} of {out['cut_pairs']} pairs; "
              f"other parts wrongly unmatched {out['false_no_match_rate']:.3f}")
    print(f"query time: mean {out['query_seconds_mean']:.3f} s, max {out['query_seconds_max']:.3f} s (after per-pair preparation); total {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
