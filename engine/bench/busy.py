"""A match on a busy machine: the same pair quiet and with CPU-bound processes beside it, one run.

``python -m engine.bench.busy --set faust5k --only 1 --runs 3 --busy 2`` matches one benchmark
pair ``--runs`` times on the otherwise idle machine, then as often again with ``--busy``
processes spinning on the CPU beside it (each one core's worth: a desktop with Blender and a
render open), every match in a fresh process (engine.bench.runner), and prints the median
seconds of each, their ratio and the fair share the cores allow: with ``c`` cores, ``b`` busy
processes and a match that keeps one core busy, ``max(1, (b + 1) / c)``. The rigid baseline
(``--method rigid``) or another quality can be measured the same way.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time


def spin(stop) -> None:
    """(In a busy process) keep one core busy until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def measure(path_a: str, path_b: str, options: dict, runs: int, busy: int, threads: int | None = None) -> dict:
    """Median seconds of ``runs`` matches quiet and with ``busy`` spinning processes beside them."""
    from .runner import run_match_subprocess

    def times() -> list[float]:
        out = []
        for _ in range(runs):
            res = run_match_subprocess(path_a, path_b, options, threads=threads)
            if not res.get("ok"):
                raise RuntimeError(f"match failed: {res.get('error')}")
            out.append(float(res["seconds"]))
        return out

    quiet = times()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    spinners = [ctx.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(1.0)  # the spinners are running before the first busy match starts
        loaded = times()
    finally:
        stop.set()
        for p in spinners:
            p.join(5)
            if p.is_alive():
                p.terminate()
    cores = os.cpu_count() or 1
    q, b = statistics.median(quiet), statistics.median(loaded)
    return {"quiet": quiet, "busy": loaded, "quiet_median": q, "busy_median": b, "ratio": b / q,
            "fair_share": max(1.0, (busy + 1) / cores), "cores": cores, "busy_processes": busy}


def markdown(label: str, r: dict) -> str:
    return "\n".join([
        f"| {label} | quiet s (median) | with {r['busy_processes']} busy processes | ratio | fair share ({r['cores']} cores) |",
        "|---|---:|---:|---:|---:|",
        f"| runs | {', '.join(f'{t:.1f}' for t in r['quiet'])} | {', '.join(f'{t:.1f}' for t in r['busy'])} | | |",
        f"| median | {r['quiet_median']:.1f} | {r['busy_median']:.1f} | {r['ratio']:.2f}x | {r['fair_share']:.2f}x |",
    ])


def main(argv: list[str] | None = None) -> int:
    from .datasets import default_data_dir, load_pairs

    ap = argparse.ArgumentParser(prog="python -m engine.bench.busy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.fspath(default_data_dir()), help="benchmark data folder")
    ap.add_argument("--set", dest="set_name", default="faust5k", help="data set (default faust5k)")
    ap.add_argument("--only", type=int, default=1, help="pair number (1-based line of pairs.txt; default 1)")
    ap.add_argument("--runs", type=int, default=3, help="matches quiet and as many busy (default 3)")
    ap.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the busy runs (default 2)")
    ap.add_argument("--method", default="full", choices=("full", "rigid"))
    ap.add_argument("--features", default="geometric")
    ap.add_argument("--threads", type=int, default=None, help="torch/BLAS threads per match (default: the engine's)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.busy < 0:
        ap.error("--runs must be at least 1 and --busy at least 0")
    pair = load_pairs(args.data, args.set_name, only=[args.only])[0]
    options = {"method": args.method, "features": args.features}
    print(f"{pair.label}: {args.runs} runs quiet, then {args.runs} with {args.busy} busy processes", file=sys.stderr)
    r = measure(os.fspath(pair.path_a), os.fspath(pair.path_b), options, args.runs, args.busy, args.threads)
    print(markdown(f"{args.set_name} {pair.label} ({args.method})", r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
