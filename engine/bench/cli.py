"""``python -m engine.bench``: run the matcher on a benchmark set and report.

Also available as ``python -m engine bench`` through :func:`add_subparser`.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from ..errors import InputError
from .datasets import SETS, default_data_dir, load_pairs

EPILOG = """\
rows:
  the baseline (engine.match(..., method="rigid"): rigid alignment + nearest
  surface point) is always run first unless --no-baseline; then one row per
  --features mode (engine.match(..., features=MODE)); then one row per
  --variant NAME=JSON, whose JSON object holds engine.match keyword options,
  e.g.  --variant fast='{"quality": "fast"}'; body keypoints beside the geometric path:
  --features '' --variant geometric='{"features": "geometric", "keypoints": "off"}'
                --variant keypoints='{"features": "geometric", "keypoints": "on"}'.
  The reserved key "_call": "package.module:function" benchmarks another
  function with engine.match's signature.

size sweep:
  --scale 5k,20k,80k,320k subdivides the first selected pair (--only N picks it)
  to each size (--scale-side target|source|both) and runs every row at every
  size: seconds, CPU seconds and peak memory per stage, the error on the
  original target, and the growth exponent; scale.md and scale.png in --out
  (default bench_out/SET_scale/).

outputs (in --out, default bench_out/SET/):
  results.md            the table, per-stage timings, failures
  pairs.csv             one line per (pair, row)
  cumulative_error.png  fraction of points under each error, one curve per row
  errors.npz            per-point errors of every successful run, key "ROW|A->B"

Every match runs in its own process: seconds are those of the match call,
peak RSS is that process's peak. Geodesic distance matrices of the target
shapes are cached in ~/.cache/stablewrap/bench (or $STABLEWRAP_CACHE/bench).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help=f"benchmark data folder (default: {default_data_dir()})")
    p.add_argument("--set", dest="set_name", default="faust5k", help=f"data set: {', '.join(SETS)} (default faust5k)")
    p.add_argument("--pairs", type=int, default=None, metavar="N", help="use the first N pairs of pairs.txt (default: all)")
    p.add_argument("--split", default="all", choices=("all", "dev", "val"),
                   help="dev: the first 30 pairs of a set (tune settings on these), val: the rest (report these); "
                        "tosca_iso is all val (default all)")
    p.add_argument("--only", default=None, metavar="I,J,...", help="run only these pairs (1-based line numbers of pairs.txt), e.g. to re-run failures")
    p.add_argument(
        "--features",
        default="geometric",
        help="comma-separated feature modes, one row each: auto, geometric, dino, dino+sd; '' for none (default geometric)",
    )
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help="extra row: a name and engine.match options as JSON (repeatable)")
    p.add_argument("--no-baseline", action="store_true", help="skip the rigid baseline row")
    p.add_argument("--device", default="cpu", help="device passed to every match unless a variant sets its own (default cpu)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="seconds before one match is stopped and counted as failed (default 900)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch/OpenMP threads per match (default: library default)")
    p.add_argument("--out", default=None, help="output folder (default bench_out/SET)")
    p.add_argument("--cache", default=None, help="geodesic cache folder (default ~/.cache/stablewrap/bench; about 50 MB per 5k-vertex target; '' disables it)")
    p.add_argument("--scale", default=None, metavar="SIZES",
                   help="size sweep instead of the set: the first selected pair subdivided to each size, e.g. "
                        "5k,20k,80k,320k; per-stage seconds, CPU seconds, peak memory and the growth exponent")
    p.add_argument("--scale-side", default="target", choices=("target", "source", "both"),
                   help="which mesh the size sweep subdivides (default target)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-pair progress lines")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.bench",
        description="Benchmark dense correspondence on a data set with ground truth (mean geodesic error x100 and more).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``python -m engine`` command line."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark the matcher on a data set with ground truth",
        description="Benchmark dense correspondence on a data set with ground truth.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed arguments; return the exit code."""
    from .report import print_table, summarize_runs, write_outputs
    from .runner import build_variants, run_benchmark

    try:
        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads must be at least 1 (got {args.threads})")
        if not args.timeout > 0:
            raise InputError(f"--timeout must be positive (got {args.timeout})")
        data = Path(args.data) if args.data else default_data_dir()
        only = None
        if args.only:
            try:
                only = [int(x) for x in args.only.split(",") if x.strip()]
            except ValueError:
                raise InputError(f"--only {args.only!r}: expected comma-separated pair numbers, e.g. 3,17") from None
        pairs = load_pairs(data, args.set_name, args.pairs, only=only, split=args.split)
        modes = [m for m in args.features.split(",") if m.strip()] if args.features else []
        variants = build_variants(modes, args.variant, baseline=not args.no_baseline)
        out = Path(args.out) if args.out else Path("bench_out") / (args.set_name + ("_scale" if args.scale else ""))
        sizes = None
        if args.scale:
            from .scale import parse_sizes

            sizes = parse_sizes(args.scale)
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    log = None if args.quiet else _log
    if sizes is not None:
        return _run_scale(args, pairs[0], sizes, variants, out, log)
    if log:
        log(f"{args.set_name}: {len(pairs)} pairs x {len(variants)} rows ({', '.join(v.name for v in variants)})")
    t0 = time.perf_counter()
    runs = run_benchmark(
        pairs,
        variants,
        device=args.device,
        timeout=args.timeout,
        threads=args.threads,
        cache_dir=args.cache,
        log=log,
    )
    rows = summarize_runs(runs, [v.name for v in variants])
    header = {
        "set": args.set_name,
        "pairs": f"{len(pairs)} (" + (f"numbers {args.only}" if args.only else
                                      f"{args.split} split, {pairs[0].index + 1}..{pairs[-1].index + 1}" if args.split != "all"
                                      else f"first {len(pairs)}") + " of pairs.txt)",
        "rows": "; ".join(f"{v.name} = {v.options}" for v in variants),
        "device": args.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total seconds": f"{time.perf_counter() - t0:.0f}",
        "command": "python -m engine.bench " + shlex.join(list(getattr(args, "argv", []) or [])),
    }
    print_table(rows, title=f"{args.set_name}, {len(pairs)} pairs")
    try:
        paths = write_outputs(out, rows, runs, header)
    except OSError as exc:
        print(f"error: cannot write results to {out} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    if log:
        log("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if any(r.ok for r in runs) else 1


def _run_scale(args: argparse.Namespace, pair, sizes: list[int], variants: list, out: Path, log) -> int:
    """The size sweep (engine.bench.scale): table on stdout, scale.md and scale.png in ``out``."""
    from ..fileio import atomic_path
    from .scale import plot_png, report_markdown, run_scale

    if log:
        log(f"size sweep of {pair.label} ({args.scale_side} subdivided to {', '.join(map(str, sizes))}): "
            f"{len(variants)} rows ({', '.join(v.name for v in variants)})")
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        runs = run_scale(pair, sizes, variants, args.scale_side, out, device=args.device, timeout=args.timeout,
                         threads=args.threads, cache_dir=args.cache, log=log)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the subdivided meshes under {out} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    header = {
        "pair": f"{args.set_name} pair {pair.index + 1} ({pair.label}), {args.scale_side} subdivided",
        "rows": "; ".join(f"{v.name} = {v.options}" for v in variants),
        "device": args.device, "threads": args.threads or "library default",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "total seconds": f"{time.perf_counter() - t0:.0f}",
        "command": "python -m engine.bench " + shlex.join(list(getattr(args, "argv", []) or [])),
    }
    text = report_markdown(runs, args.scale_side, header)
    print(text)
    try:
        for name, data in (("scale.md", text.encode()), ("scale.png", plot_png(runs, args.scale_side, pair.label))):
            with atomic_path(out / name, Path(name).suffix) as tmp, open(tmp, "wb") as fh:
                fh.write(data)
    except OSError as exc:
        print(f"error: cannot write results to {out} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    if log:
        log(f"wrote {out / 'scale.md'}, {out / 'scale.png'}")
    return 0 if any(r.ok for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run(args)
