"""Batch throughput: the same pairs through ``engine.batch`` with different worker counts, one run.

``python -m engine.bench.throughput --set faust5k --pairs 12 --workers 1,2`` runs the first
pairs of a benchmark set as a batch once per worker count (threads per worker: the cores divided
by the workers, at least 1), each into a fresh output folder, and prints a table: wall seconds,
pairs per minute, throughput against the first row, the median and largest peak memory of one
worker's match, failures. ``--cluster ray`` runs the same batches on a Ray cluster.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def run(data: str, set_name: str, n_pairs: int, worker_counts: list[int], cluster: str = "local",
        out: str | None = None) -> list[dict]:
    """One batch per worker count; returns one table row (dict) each."""
    from .. import batch
    from .datasets import load_pairs

    pairs = load_pairs(data, set_name, limit=n_pairs)
    rows = [batch.BatchRow(i + 2, os.fspath(p.path_a), os.fspath(p.path_b), f"{i + 1:03d}_{p.label.replace('->', '__')}",
                           {}, (os.fspath(p.path_a), os.fspath(p.path_b))) for i, p in enumerate(pairs)]
    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="stablewrap-throughput-"))
    table = []
    for workers in worker_counts:
        threads = max(1, (os.cpu_count() or 1) // workers)
        t0 = time.perf_counter()
        res = batch.run(rows, root / f"workers_{workers}", workers=workers, threads=threads, force=True, cluster=cluster,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
        wall = time.perf_counter() - t0
        done = [r for r in res if r.status == "done"]
        peaks = [r.peak_rss_mb for r in done if r.peak_rss_mb == r.peak_rss_mb]
        table.append({"workers": workers, "threads": threads, "pairs": len(rows), "done": len(done),
                      "wall_s": wall, "pairs_per_min": 60.0 * len(done) / wall if wall > 0 else float("nan"),
                      "median_pair_s": statistics.median([r.seconds for r in done]) if done else float("nan"),
                      "median_peak_mb": statistics.median(peaks) if peaks else float("nan"),
                      "max_peak_mb": max(peaks) if peaks else float("nan")})
    base = table[0]["pairs_per_min"] if table else float("nan")
    for row in table:
        row["throughput_x"] = row["pairs_per_min"] / base if base and base == base else float("nan")
    return table


def markdown(table: list[dict]) -> str:
    lines = ["| workers x threads | pairs done | wall s | pairs / min | throughput | median s / pair | "
             "peak MB per worker (median / max) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['workers']} x {r['threads']} | {r['done']}/{r['pairs']} | {r['wall_s']:.0f} | "
                     f"{r['pairs_per_min']:.2f} | {r['throughput_x']:.2f}x | {r['median_pair_s']:.1f} | "
                     f"{r['median_peak_mb']:.0f} / {r['max_peak_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from .datasets import default_data_dir

    p = argparse.ArgumentParser(prog="python -m engine.bench.throughput", description=__doc__.split("\n\n")[1])
    p.add_argument("--data", default=os.fspath(default_data_dir()), help="benchmark data folder")
    p.add_argument("--set", dest="set_name", default="faust5k", help="data set (default faust5k)")
    p.add_argument("--pairs", type=int, default=12, help="the first N pairs (default 12)")
    p.add_argument("--workers", default="1,2", help="worker counts, one batch each (default 1,2)")
    p.add_argument("--cluster", default="local", help="local (default), ray or ray://HOST:PORT")
    p.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = p.parse_args(argv)
    from ..errors import InputError

    try:
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise InputError(f"--workers: expected worker counts like 1,2, got {args.workers!r}")
    table = run(args.data, args.set_name, args.pairs, counts, args.cluster, args.out)
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
