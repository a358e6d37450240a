"""Benchmark: body-part labels carried from source to target through a match.

    python -m engine.bench.transfer_labels [--set faust5k] [--pairs 1] [--only 3 7] [--method full] [--quality fast]

For every pair (A -> B) of a benchmark set, ``engine.match`` maps A onto B;
the ground-truth body parts of A (:mod:`engine.bench.gt_parts`, defined from
the ground-truth correspondences) are transferred to B's vertices with
:func:`engine.transfer.attributes.transfer_vertex_labels` (through the
target -> source map); the score is the fraction of B's vertices that land in
their own ground-truth part (issue 4's bar: >= 95 % on FAUST).
``--match-dir DIR`` reuses (or stores) ``A__B.npz`` match files.
``--method ground-truth`` skips matching and maps every target vertex through
its nearest ground-truth point instead: the score of the transfer and of the
part definitions alone (an upper bound for any matcher), not a matcher result.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ..errors import StableWrapError


def label_accuracy(src_labels: np.ndarray, src_triangles: np.ndarray, tgt_labels: np.ndarray, corr) -> tuple[float, np.ndarray]:
    """Fraction of target vertices whose transferred label equals their own, and the transferred labels."""
    from ..transfer.attributes import transfer_vertex_labels

    pred = transfer_vertex_labels(src_labels, src_triangles, corr.tgt_to_src_face, corr.tgt_to_src_bary)
    return float((pred == tgt_labels).mean()), pred


def ground_truth_correspondence(pair):
    """A target -> source map from the ground truth: every target vertex takes the source vertex
    of its nearest ground-truth target vertex (a Correspondence with only the tgt_to_src maps filled)."""
    from scipy.spatial import cKDTree

    from .datasets import load_triangles
    from ..correspondence import Correspondence
    from ..transfer.synthetic import identity_map

    va, ta = load_triangles(pair.path_a)
    vb, _ = load_triangles(pair.path_b)
    gt_a, gt_b = pair.ground_truth()
    nearest = cKDTree(vb[gt_b]).query(vb)[1]
    face_id, bary_id = identity_map(ta, len(va))
    src_v = gt_a[nearest]
    return Correspondence(None, None, face_id[src_v], bary_id[src_v], None, None, {"method": "ground-truth"})


def main(argv=None) -> int:
    from .datasets import default_data_dir, load_pairs, load_triangles

    ap = argparse.ArgumentParser(prog="python -m engine.bench.transfer_labels", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="benchmark data folder (default ../shared/data)")
    ap.add_argument("--set", default="faust5k", dest="set_name")
    ap.add_argument("--pairs", type=int, default=1, help="first N pairs of pairs.txt (default 1)")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="1-based pair numbers instead")
    ap.add_argument("--method", default="full", help="engine.match method (full, rigid), or ground-truth (see above)")
    ap.add_argument("--quality", default="fast")
    ap.add_argument("--features", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--match-dir", default=None, help="folder to reuse / store match .npz files")
    args = ap.parse_args(argv)
    try:
        import engine
        from ..correspondence import Correspondence
        from .gt_parts import SetParts

        data = args.data or default_data_dir()
        pairs = load_pairs(data, args.set_name, limit=None if args.only else args.pairs, only=args.only)
        parts = SetParts.load(os.path.join(os.fspath(data), args.set_name), args.set_name)
        scores = []
        for p in pairs:
            t0 = time.perf_counter()
            cached = os.path.join(args.match_dir, f"{p.name_a}__{p.name_b}__{args.method}.npz") if args.match_dir else None
            if args.method == "ground-truth":
                corr = ground_truth_correspondence(p)
            elif cached and os.path.exists(cached):
                corr = Correspondence.load(cached)
            else:
                corr = engine.match(str(p.path_a), str(p.path_b), method=args.method, quality=args.quality,
                                    features=args.features, device=args.device)
                if cached:
                    os.makedirs(args.match_dir, exist_ok=True)
                    corr.save(cached)
            t_match = time.perf_counter() - t0
            _, tri_a = load_triangles(p.path_a)
            pm_a, lab_a = parts.mesh_and_labels(p.name_a)
            pm_b, lab_b = parts.mesh_and_labels(p.name_b)
            src_labels = lab_a[pm_a.orig_to_clean]  # caller (file) vertex order
            tgt_labels = lab_b[pm_b.orig_to_clean]
            acc, _ = label_accuracy(src_labels, tri_a, tgt_labels, corr)
            scores.append(acc)
            print(f"{p.label}: {acc * 100:.2f} % of target vertices in the right part "
                  f"(match {t_match:.1f} s, method {args.method}, {len(parts.names)} parts)")
        print(f"mean over {len(scores)} pair(s): {np.mean(scores) * 100:.2f} %  (bar: >= 95 %)")
        return 0
    except StableWrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
