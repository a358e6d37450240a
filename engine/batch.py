"""Studio batches: one template (or many) matched onto many characters, on a local process pool.

``python -m engine batch PAIRS.csv -o OUTDIR [--workers N] [--threads N] [--retries K]
[--timeout S] [--force] [--cluster local|ray|ray://HOST:PORT] [--gpus-per-job X]`` reads one
pair per CSV row (columns below), runs every match in its own fresh process
(``engine.isolated``: a crash or a timeout fails that pair only; it is retried up to
``retries`` times), ``workers`` at once with ``threads`` each (by default workers x threads
fits the cores) or as Ray tasks on a cluster (engine.batch_ray), and writes
``OUTDIR/<name>.npz`` (atomically: a stopped batch leaves no partial file) and
``OUTDIR/batch_results.csv`` (one row per pair: status,
seconds, peak memory, fit score, verdict, one-line error), rewritten as pairs finish.

A rerun skips pairs whose output exists and is newer than their inputs (``--force`` redoes
them), so after a failure or a Ctrl-C the same command does only what is left. Ctrl-C stops
scheduling, ends the running matches and prints what is done.

CSV columns: ``source``, ``target`` (required: mesh files, relative to the CSV's folder);
optional ``name`` (output name; default ``<source>__<target>`` stems), ``quality``,
``features``, ``keypoints``, ``landmarks`` and ``exclude`` (files), ``config`` (a JSON object
or a JSON / TOML file), and transfers run through the match in the same process:
``uv`` (yes), ``texture`` (the source's image), ``weights`` (an .npz of per-vertex arrays),
``morph`` (a frame count), written as ``NAME.uv.obj``, ``NAME.texture.png``,
``NAME.weights.npz``, ``NAME.morph.npz`` (engine.batch_transfers).

Python: ``engine.batch.run(read_rows("pairs.csv"), "out/")`` returns the result table.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .batch_transfers import TRANSFER_COLUMNS, outputs, parse_transfers
from .errors import InputError

COLUMNS = ("source", "target", "name", "quality", "features", "keypoints", "landmarks", "exclude", "config") + TRANSFER_COLUMNS
RESULTS_FILE = "batch_results.csv"
# failures worth another try on a fresh process: the process died or hung; an exception (bad
# input, a bug) would fail the same way again
RETRIED = ("worker exited", "worker killed", "timed out", "worker did not exit", "worker did not start")


@dataclass
class BatchRow:
    """One pair of a batch: input files, the output name and engine.match options."""

    line: int  # the CSV line (for messages)
    source: str
    target: str
    name: str
    options: dict = field(default_factory=dict)
    inputs: tuple = ()  # every file the result depends on (for the skip check)
    transfers: dict = field(default_factory=dict)  # engine.batch_transfers: column -> value


@dataclass
class RowResult:
    """One line of the result table."""

    name: str
    source: str
    target: str
    status: str  # done | skipped (done earlier) | failed | stopped
    seconds: float = float("nan")
    peak_rss_mb: float = float("nan")
    fit_score: float | None = None
    verdict: str = ""
    attempts: int = 0
    error: str = ""


def read_rows(path: str | os.PathLike) -> list[BatchRow]:
    """The rows of a batch CSV (see the module docstring), checked: missing or unknown columns,
    missing files, duplicate output names and bad options are one-line InputErrors naming the row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: batch file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read ({exc.__class__.__name__})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("source", "target") if c not in header]
    if missing:
        raise InputError(f"{path.name}: missing column(s) {', '.join(missing)} (the first line names the columns: "
                         f"{', '.join(COLUMNS)})")
    unknown = [c for c in header if c and c not in COLUMNS]
    if unknown:
        raise InputError(f"{path.name}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    base = path.parent
    rows, names = [], {}
    for line, raw in enumerate(reader, 2):
        rec = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        if not any(rec.values()):
            continue
        rows.append(_row(rec, line, base, path.name))
        other = names.setdefault(rows[-1].name, line)
        if other != line:
            raise InputError(f"{path.name}:{line}: output name {rows[-1].name!r} is also line {other}'s; "
                             "give one of them a 'name'")
    if not rows:
        raise InputError(f"{path.name}: no pairs listed")
    return rows


def _row(rec: dict, line: int, base: Path, fname: str) -> BatchRow:
    where = f"{fname}:{line}"

    def file(col: str) -> str:
        p = base / rec[col]
        if not p.is_file():
            raise InputError(f"{where}: {col} file {rec[col]!r} not found")
        return os.fspath(p)

    for col in ("source", "target"):
        if not rec.get(col):
            raise InputError(f"{where}: no {col}")
    source, target = file("source"), file("target")
    options: dict = {k: rec[k] for k in ("quality", "features", "keypoints") if rec.get(k)}
    inputs = [source, target]
    for col in ("landmarks", "exclude"):
        if rec.get(col):
            options[col] = file(col)
            inputs.append(options[col])
    if rec.get("config"):
        cfg = rec["config"]
        if cfg.lstrip().startswith("{"):
            try:
                options["config"] = json.loads(cfg)
            except ValueError as exc:
                raise InputError(f"{where}: config is not a JSON object ({exc.msg})") from None
        else:
            options["config"] = file("config")
            inputs.append(options["config"])
    from .config import load_config

    try:  # bad settings fail here, for the row, before any work
        load_config(options.get("config"), options.get("quality", "balanced"))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    transfers, transfer_inputs = parse_transfers(rec, where, file)
    name = rec.get("name") or f"{Path(source).stem}__{Path(target).stem}"
    if os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise InputError(f"{where}: name {name!r} must be a plain file name")
    return BatchRow(line, source, target, name, options, tuple(inputs + transfer_inputs), transfers)


def match_row(call: str, source: str, target: str, output: str, options: dict, transfers: dict | None = None) -> dict:
    """(In the per-pair process) match, run the row's transfers, then write the match to ``output``
    (atomically, last: a row that failed half way leaves none of its files); returns the meta the
    table shows."""
    import tempfile

    from .batch_transfers import run_transfers
    from .isolated import resolve

    corr = resolve(call)(source, target, **options)
    if transfers:
        out = Path(output)
        name = out.name[: -len(".npz")]
        written = outputs(out.parent, name, transfers)[:-1]
        try:
            with tempfile.TemporaryDirectory(prefix="stablewrap-batch-") as tmp:
                corr.save(os.path.join(tmp, "match.npz"))
                run_transfers(source, target, os.path.join(tmp, "match.npz"), out.parent, name, transfers)
        except BaseException:
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
            raise
    corr.save(output)
    meta = getattr(corr, "meta", {}) or {}
    verdict = meta.get("verdict")
    return {"fit_score": meta.get("fit_score"),
            "verdict": verdict.get("verdict", "") if isinstance(verdict, dict) else str(verdict or "")}


def _up_to_date(row: BatchRow, out: Path) -> bool:
    """Every file of the row exists and is newer than every input."""
    try:
        made = min(p.stat().st_mtime for p in outputs(out, row.name, row.transfers))
        return all(os.stat(p).st_mtime <= made for p in row.inputs)
    except OSError:
        return False


def default_workers(n_rows: int) -> int:
    """Half the cores, at least 1, at most the rows: room for the multi-threaded full-resolution stages
    and the memory of large meshes (5k-vertex pairs get 1.97x the throughput with one worker per core:
    python -m engine.bench.throughput)."""
    return max(1, min(n_rows, (os.cpu_count() or 2) // 2))


def run(rows: list[BatchRow], out_dir: str | os.PathLike, *, workers: int | None = None, threads: int | None = None,
        retries: int = 1, timeout: float = 1800.0, force: bool = False, call: str = "engine:match",
        cluster: str = "local", gpus_per_job: float = 0.0, log: Callable[[str], None] | None = None,
        stop: threading.Event | None = None) -> list[RowResult]:
    """Run a batch (see the module docstring); returns one RowResult per row, in row order.

    cluster : "local" (a process pool here), "ray" or "ray://HOST:PORT" (engine.batch_ray: each
        pair a Ray task with ``threads`` CPUs and ``gpus_per_job`` GPUs; ``workers`` pairs in flight)
    stop : an event that ends the batch early (what Ctrl-C sets); rows not finished are "stopped".
    """
    from .isolated import run_isolated

    out = Path(out_dir)
    if workers is not None and workers < 1 or retries < 0 or not timeout > 0 or gpus_per_job < 0:
        raise InputError(f"batch: workers must be >= 1, retries >= 0, timeout > 0 and gpus per job >= 0 (got {workers}, "
                         f"{retries}, {timeout}, {gpus_per_job})")
    if cluster != "local":
        from . import batch_ray

        batch_ray.connect(cluster)  # an unreachable cluster fails here, before any file is written
        threads = threads or 2  # room for the full-resolution stages of large meshes (see default_workers)
        workers = workers or max(1, min(len(rows), int(batch_ray.cluster_cpus() // threads)))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    workers = workers or default_workers(len(rows))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    stop = stop or threading.Event()
    results = {r.name: RowResult(r.name, r.source, r.target, "pending") for r in rows}

    def one(row: BatchRow) -> None:
        res = results[row.name]
        for attempt in range(1, retries + 2):
            if stop.is_set():
                res.status = "stopped"
                return
            if cluster == "local":
                got = run_isolated("engine.batch:match_row", (call, row.source, row.target, os.fspath(out / f"{row.name}.npz"),
                                                              row.options, row.transfers), timeout=timeout, threads=threads,
                                   stop=stop, preload=(call,))
            else:
                got = batch_ray.run_pair(row, out, call=call, timeout=timeout, threads=threads, gpus=gpus_per_job, stop=stop)
            res.attempts, res.seconds = attempt, float(got.get("seconds", float("nan")))
            res.peak_rss_mb = float(got.get("peak_rss", float("nan"))) / 2**20
            if got.get("ok"):
                value = got.get("value") or {}
                res.status, res.error = "done", ""
                res.fit_score, res.verdict = value.get("fit_score"), value.get("verdict", "")
                return
            res.status, res.error = ("stopped" if stop.is_set() else "failed"), str(got.get("error", ""))
            if not res.error.startswith(RETRIED):
                return

    todo = []
    for row in rows:
        if not force and _up_to_date(row, out):
            results[row.name].status = "skipped"
        else:
            todo.append(row)
    if log:
        log(f"batch: {len(todo)} pair(s) to run, {len(rows) - len(todo)} already done; {workers} worker(s) x "
            f"{threads} thread(s)" + ("" if cluster == "local" else f" on the Ray cluster ({cluster})"))
    _write_table(out, rows, results)
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stablewrap-batch")
    futures = {pool.submit(one, row): row for row in todo}
    pending, n_finished = set(futures), 0
    try:
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                f.result()
                row, n_finished = futures[f], n_finished + 1
                _write_table(out, rows, results)
                if log:
                    r = results[row.name]
                    eta = (time.perf_counter() - t0) / n_finished * (len(todo) - n_finished)
                    n_failed = sum(results[futures[g].name].status == "failed" for g in futures if g.done())
                    log(f"[{n_finished}/{len(todo)}] {row.name}: " + (
                        f"done in {r.seconds:.1f} s" if r.status == "done" else f"{r.status}: {r.error}")
                        + (f"; {n_failed} failed so far" if n_failed else "")
                        + (f"; {len(pending)} running or queued, ETA {eta:.0f} s" if pending else ""))
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        stop_now = stop.is_set()
        pool.shutdown(wait=True, cancel_futures=stop_now)
        for r in results.values():
            if r.status == "pending":
                r.status = "stopped"
        _write_table(out, rows, results)
    return [results[r.name] for r in rows]


def _write_table(out: Path, rows: list[BatchRow], results: dict) -> None:
    from .fileio import atomic_path

    buf = io.StringIO()
    fields = list(asdict(RowResult("", "", "", "")).keys())
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for row in rows:
        d = asdict(results[row.name])
        d["seconds"] = "" if d["seconds"] != d["seconds"] else f"{d['seconds']:.2f}"
        d["peak_rss_mb"] = "" if d["peak_rss_mb"] != d["peak_rss_mb"] else f"{d['peak_rss_mb']:.0f}"
        w.writerow(d)
    with atomic_path(out / RESULTS_FILE, ".csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())


def summary(results: list[RowResult]) -> str:
    """One line: how many pairs are done, skipped, failed, stopped."""
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "stopped")}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to do"


def add_subparser(subparsers):
    """Register ``batch`` on the ``python -m engine`` command line."""
    p = subparsers.add_parser("batch", help="match many pairs listed in a CSV file on a local process pool",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", help="CSV file: source,target[,name,quality,features,keypoints,landmarks,exclude,config,"
                                 "uv,texture,weights,morph]")
    p.add_argument("-o", "--out", required=True, help="output folder (one NAME.npz per pair, batch_results.csv)")
    p.add_argument("--workers", type=int, default=None, help="matches at once (default: half the cores)")
    p.add_argument("--threads", type=int, default=None, help="threads per match (default: cores / workers)")
    p.add_argument("--retries", type=int, default=1, help="new tries of a pair whose process crashed or timed out (default 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before one match is stopped (default 1800)")
    p.add_argument("--force", action="store_true", help="redo pairs whose output is already up to date")
    p.add_argument("--cluster", default="local", metavar="local|ray|ray://HOST:PORT",
                   help="where the pairs run: a process pool here (default), the Ray cluster this machine belongs to, "
                        "or a remote Ray head")
    p.add_argument("--gpus-per-job", type=float, default=0.0, help="GPUs each pair asks Ray for (default 0)")
    p.set_defaults(func=_cli)
    return p


def _cli(args) -> int:
    rows = read_rows(args.pairs)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        results = run(rows, args.out, workers=args.workers, threads=args.threads, retries=args.retries,
                      timeout=args.timeout, force=args.force, cluster=args.cluster, gpus_per_job=args.gpus_per_job,
                      log=log)
    except KeyboardInterrupt:
        table = Path(args.out) / RESULTS_FILE
        print(f"batch stopped; what is done is in {table} (run the same command to go on)", file=sys.stderr)
        raise
    print(f"batch: {summary(results)}; table: {Path(args.out) / RESULTS_FILE}", file=sys.stderr)
    for r in results:
        if r.status == "failed":
            print(f"  {r.name}: {r.error}", file=sys.stderr)
    return 0 if all(r.status in ("done", "skipped") for r in results) else 1
