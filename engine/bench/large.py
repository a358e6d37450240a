"""A template onto a large target against a small pair, one run.

``python -m engine.bench.large --template realworld/mh_body.obj --target realworld/ogre.obj --size 248k``
midpoint-subdivides the target to about ``--size`` vertices (the same surface, written once as
PLY under the cache folder) and matches, every match in a fresh process (engine.bench.runner):
the small pair (faust5k pair ``--only``) by default and by the rigid baseline, then the template
onto the large target. Keypoints are detected in every match (a fresh cache folder each),
imports are not timed (as in engine.bench). Prints per row the median seconds over ``--runs``,
the peak memory, the seconds per stage and the time against the small pair's default match.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

from ..errors import InputError
from .geodesics import CACHE_ENV

STAGE_ORDER = ("prepare", "keypoints", "align", "features+initial map", "register", "project", "fit surface")


def large_target(path: str, size: int, folder: Path) -> tuple[str, int]:
    """``path`` subdivided to about ``size`` vertices as a PLY under ``folder`` (made once);
    returns (its path, its vertex count)."""
    from .datasets import load_triangles
    from .scale import _write_ply, subdivide_to

    v, f = load_triangles(path)
    sv, sf = subdivide_to(v, f, size)
    out = folder / f"{Path(path).stem}_{len(sv)}.ply"
    folder.mkdir(parents=True, exist_ok=True)
    _write_ply(out, sv, sf)
    return os.fspath(out), len(sv)


@contextlib.contextmanager
def _fresh_cache():
    """An empty cache folder for the children started in the block: every match detects its
    keypoints instead of reading them back."""
    saved = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="stablewrap-large-") as cache:
        os.environ[CACHE_ENV] = cache
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = saved


def measure(rows: list[tuple[str, str, str, dict]], runs: int, threads: int | None = None,
            log=None) -> list[dict]:
    """Each row (label, source path, target path, engine.match options) ``runs`` times, each in a
    fresh process; per row the median seconds, the largest peak RSS (bytes) and the median
    seconds per stage."""
    from .runner import run_match_subprocess

    table = []
    for label, a, b, options in rows:
        seconds, peaks, stages = [], [], []
        for k in range(runs):
            with _fresh_cache():
                res = run_match_subprocess(a, b, options, threads=threads)
            if not res.get("ok"):
                raise RuntimeError(f"{label}: match failed: {res.get('error')}")
            seconds.append(float(res["seconds"]))
            peaks.append(float(res["peak_rss"]))
            stages.append(res.get("meta", {}).get("seconds", {}))
            if log is not None:
                log(f"  {label} run {k + 1}/{runs}: {seconds[-1]:.1f} s, {peaks[-1] / 2**30:.2f} GB")
        names = [s for s in STAGE_ORDER if any(s in st for st in stages)]
        table.append({"label": label, "source": a, "target": b, "seconds": statistics.median(seconds),
                      "runs": seconds, "peak_rss": max(peaks),
                      "stages": {s: statistics.median([st.get(s, 0.0) for st in stages]) for s in names}})
    return table


def markdown(table: list[dict], reference: str) -> str:
    ref = next(r["seconds"] for r in table if r["label"] == reference)
    lines = ["| match | seconds (median) | runs | peak RSS | vs the small pair | per stage (s) |",
             "|---|---:|---|---:|---:|---|"]
    for r in table:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        lines.append(f"| {r['label']} | {r['seconds']:.2f} | {', '.join(f'{s:.2f}' for s in r['runs'])} | "
                     f"{r['peak_rss'] / 2**30:.2f} GB | {r['seconds'] / ref:.2f}x | {stages} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .datasets import default_data_dir, load_pairs
    from .geodesics import default_cache_dir
    from .scale import parse_sizes

    ap = argparse.ArgumentParser(prog="python -m engine.bench.large", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.fspath(default_data_dir()), help="benchmark data folder")
    ap.add_argument("--template", default="realworld/mh_body.obj", help="source mesh (relative to --data or a path)")
    ap.add_argument("--target", default="realworld/ogre.obj", help="target mesh to subdivide (relative to --data or a path)")
    ap.add_argument("--size", default="248k", help="the target's size after subdivision (default 248k)")
    ap.add_argument("--set", dest="set_name", default="faust5k", help="set of the small pair (default faust5k)")
    ap.add_argument("--only", type=int, default=1, help="the small pair (1-based line of pairs.txt; default 1)")
    ap.add_argument("--runs", type=int, default=1, help="matches per row (median; default 1)")
    ap.add_argument("--features", default="geometric")
    ap.add_argument("--threads", type=int, default=None, help="torch/BLAS threads per match (default: the engine's)")
    args = ap.parse_args(argv)
    try:
        if args.runs < 1:
            raise InputError("--runs: must be at least 1")
        sizes = parse_sizes(args.size)
        if len(sizes) != 1:
            raise InputError("--size: one size, e.g. 248k")
        size = sizes[0]
        paths = []
        for name, p in (("--template", args.template), ("--target", args.target)):
            full = p if os.path.isfile(p) else os.path.join(args.data, p)
            if not os.path.isfile(full):
                raise InputError(f"{name}: no mesh file at {p} (nor under {args.data})")
            paths.append(full)
        pair = load_pairs(args.data, args.set_name, only=[args.only])[0]
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    big, n_big = large_target(paths[1], size, default_cache_dir() / "large")
    options = {"features": args.features}
    small = f"{args.set_name} {pair.label}"
    big_label = f"{Path(paths[0]).stem} -> {Path(paths[1]).stem} subdivided to {n_big}"
    rows = [(small, os.fspath(pair.path_a), os.fspath(pair.path_b), options),
            (f"{small} rigid (baseline)", os.fspath(pair.path_a), os.fspath(pair.path_b), {"method": "rigid"}),
            (big_label, paths[0], big, options)]
    try:
        table = measure(rows, args.runs, args.threads, log)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(table, small))
    return 0


if __name__ == "__main__":
    sys.exit(main())
