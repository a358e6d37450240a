"""Benchmark tables, CSV and the cumulative error plot.

Rows aggregate the runs of one variant: errors of all ground-truth points of
all successful pairs (failed pairs are counted, not scored), median seconds
per pair and the largest per-pair peak RSS.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .metrics import CURVE_MAX, SWAP_THRESHOLD, THRESHOLDS, ErrorSummary, cumulative_curve, summarize
from .runner import MatchRun

STAGE_KEYS = ("stage_seconds", "timings", "stages", "seconds")


@dataclass
class Row:
    """One line of the table: a variant over all pairs."""

    name: str
    summary: ErrorSummary | None
    median_seconds: float
    peak_rss: float  # bytes, max over pairs
    n_ok: int
    n_failed: int
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stage_seconds: dict = field(default_factory=dict)  # stage -> median seconds over pairs
    peak_gpu: float = float("nan")  # bytes, max over pairs; NaN when no pair used CUDA
    # fitted source, mean over pairs: % flipped faces, % new folds; median over pairs of the p99
    # distance to the target (% of its diagonal)
    flipped_pct: float = float("nan")
    folds_pct: float = float("nan")
    dist_p99_pct: float = float("nan")
    # mean over pairs: % of the target's outer surface the fit leaves uncovered, % of the fit's
    # surface off the target (engine.geometry.coverage)
    uncovered_pct: float = float("nan")
    off_target_pct: float = float("nan")

    @property
    def swaps(self) -> int:
        return self.summary.swaps if self.summary is not None else 0


def stage_seconds(meta: dict) -> dict:
    """Per-stage seconds from a match's ``meta`` (the first dict of numbers under a known key)."""
    for key in STAGE_KEYS:
        d = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(d, dict) and d and all(isinstance(x, (int, float)) for x in d.values()):
            return {str(k): float(x) for k, x in d.items()}
    return {}


def _nanmedian(values: list[float]) -> float:
    v = [x for x in values if x == x]
    return float(np.median(v)) if v else float("nan")


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if x == x]
    return float(np.mean(v)) if v else float("nan")


def _nanmax(values: list[float]) -> float:
    v = [x for x in values if x == x]
    return float(max(v)) if v else float("nan")


def summarize_runs(runs: list[MatchRun], order: list[str] | None = None) -> list[Row]:
    """One :class:`Row` per variant, in ``order`` (default: first appearance)."""
    names = list(order) if order is not None else list(dict.fromkeys(r.variant for r in runs))
    rows = []
    for name in names:
        mine = [r for r in runs if r.variant == name]
        ok = [r for r in mine if r.ok and r.errors is not None]
        stages: dict[str, list[float]] = {}
        for r in ok:
            for k, s in stage_seconds(r.meta).items():
                stages.setdefault(k, []).append(s)
        rows.append(
            Row(
                name=name,
                summary=summarize([r.errors for r in ok]),
                median_seconds=_nanmedian([r.seconds for r in ok]),
                peak_rss=_nanmax([r.peak_rss for r in mine]),
                n_ok=len(ok),
                n_failed=len(mine) - len(ok),
                errors=np.concatenate([r.errors for r in ok]) if ok else np.zeros(0),
                stage_seconds={k: float(np.median(v)) for k, v in stages.items()},
                peak_gpu=_nanmax([r.peak_gpu for r in mine]),
                flipped_pct=_nanmean([r.quality.get("flipped_pct", float("nan")) for r in ok]),
                folds_pct=_nanmean([r.quality.get("folds_pct", float("nan")) for r in ok]),
                dist_p99_pct=_nanmedian([r.quality.get("dist_p99_pct", float("nan")) for r in ok]),
                uncovered_pct=_nanmean([r.quality.get("target_uncovered_pct", float("nan")) for r in ok]),
                off_target_pct=_nanmean([r.quality.get("fit_off_target_pct", float("nan")) for r in ok]),
            )
        )
    return rows


COLUMNS = (
    "method",
    "mean x100",
    "median x100",
    f"<{THRESHOLDS[0]:.2f}",
    f"<{THRESHOLDS[1]:.2f}",
    f"swaps (>{100 * SWAP_THRESHOLD:g})",
    "flipped %",
    "folds %",
    "dist p99 %",
    "target uncovered %",
    "fit off target %",
    "median s/pair",
    "peak RSS",
    "pairs ok/failed",
)
SHORT_COLUMNS = ("method", "mean", "median", "<.05", "<.10", "swaps", "flip%", "fold%", "d99%", "uncov%", "off%", "s/pair", "RSS", "ok/fail")


def _fmt(x: float, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _fmt_bytes(b: float) -> str:
    if b != b:
        return "-"
    return f"{b / 2**30:.2f} GB" if b >= 2**30 else f"{b / 2**20:.0f} MB"


def _has_gpu(rows: list[Row]) -> bool:
    return any(r.peak_gpu == r.peak_gpu for r in rows)


def columns(rows: list[Row], short: bool = False) -> list[str]:
    """Column headers; a "peak GPU" column appears when some row used CUDA."""
    cols = list(SHORT_COLUMNS if short else COLUMNS)
    if _has_gpu(rows):
        cols.insert(-1, "GPU" if short else "peak GPU")
    return cols


def row_cells(row: Row, gpu: bool = False) -> list[str]:
    s = row.summary
    cells = [
        row.name,
        _fmt(s.mean * 100, ".2f") if s else "-",
        _fmt(s.median * 100, ".2f") if s else "-",
        _fmt(s.frac_under[THRESHOLDS[0]], ".3f") if s else "-",
        _fmt(s.frac_under[THRESHOLDS[1]], ".3f") if s else "-",
        str(row.swaps) if s else "-",
        _fmt(row.flipped_pct, ".2f"),
        _fmt(row.folds_pct, ".2f"),
        _fmt(row.dist_p99_pct, ".2f"),
        _fmt(row.uncovered_pct, ".2f"),
        _fmt(row.off_target_pct, ".2f"),
        _fmt(row.median_seconds, ".1f"),
        _fmt_bytes(row.peak_rss),
        f"{row.n_ok}/{row.n_failed}",
    ]
    if gpu:
        cells.insert(-1, _fmt_bytes(row.peak_gpu))
    return cells


def markdown_table(rows: list[Row]) -> str:
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(row_cells(r, _has_gpu(rows))) + " |")
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row], title: str = "", file=None) -> None:
    """A rich table on a terminal, the markdown table otherwise."""
    import sys

    out = file or sys.stdout
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        caption = ("mean / median: geodesic error x100; s/pair: median seconds; swaps: pairs with mean > 10; "
                   "flip% / fold%: flipped faces / new folds of the fitted source; d99%: its p99 distance to the "
                   "target, % of the diagonal; uncov% / off%: target surface the fit leaves uncovered / fit surface "
                   "off the target, farther than 1 % of the diagonal")
        from rich import box

        table = Table(title=title or None, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
        for i, c in enumerate(columns(rows, short=True)):
            if i == 0:
                table.add_column(c, justify="left", no_wrap=True, min_width=max([len(r.name) for r in rows] + [6]))
            else:
                table.add_column(c, justify="right")
        for r in rows:
            table.add_row(*row_cells(r, _has_gpu(rows)))
        Console(file=out).print(table)
    else:
        if title:
            print(title, file=out)
        print(markdown_table(rows), file=out, end="")


def results_markdown(rows: list[Row], runs: list[MatchRun], header: dict) -> str:
    """The whole ``results.md``: what was run, the table, timings by stage, failures."""
    buf = io.StringIO()
    buf.write(f"# Benchmark: {header.get('set', '?')}\n\n")
    for k, v in header.items():
        buf.write(f"- {k}: {v}\n")
    buf.write("\n")
    buf.write(markdown_table(rows))
    buf.write(
        "\nErrors: geodesic distance on the target between the image of each ground-truth point and its"
        " true match, divided by sqrt(target area) (heat method), over all points of all successful pairs."
        f" Swaps: pairs with mean error > {100 * SWAP_THRESHOLD:g}. Seconds: the match call only."
        " Peak RSS: the largest per-pair process peak. Failed pairs are not scored.\n"
    )
    backends: dict[str, dict[str, int]] = {}
    notices: dict[str, dict[str, int]] = {}
    for r in runs:
        if not r.ok:
            continue
        feat = r.meta.get("features") if isinstance(r.meta, dict) else None
        if feat is not None:
            backends.setdefault(r.variant, {}).setdefault(str(feat), 0)
            backends[r.variant][str(feat)] += 1
        for n in (r.meta.get("notices") or []) if isinstance(r.meta, dict) else []:
            notices.setdefault(r.variant, {}).setdefault(str(n), 0)
            notices[r.variant][str(n)] += 1
    if backends or notices:
        buf.write("\n## What ran\n\n")
        for name in [r.name for r in rows]:
            parts = []
            if name in backends:
                parts.append("features " + ", ".join(f"{k} ({v} pairs)" for k, v in backends[name].items()))
            if name in notices:
                parts.append("notices: " + "; ".join(f"{k} ({v}x)" for k, v in notices[name].items()))
            if parts:
                buf.write(f"- {name}: {'; '.join(parts)}\n")
    staged = [r for r in rows if r.stage_seconds]
    if staged:
        buf.write("\n## Median seconds per stage\n\n")
        for r in staged:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r.stage_seconds.items())
            buf.write(f"- {r.name}: {parts}\n")
    failed = [r for r in runs if not r.ok]
    if failed:
        buf.write("\n## Failures\n\n")
        for r in failed:
            buf.write(f"- {r.variant} on {r.pair.label}: {r.error}\n")
    gross = [r for r in runs if r.ok and r.mean > SWAP_THRESHOLD]
    if gross:
        buf.write("\n## Pairs with mean error > 10\n\n")
        for r in gross:
            sym = f", mirrored ground truth {100 * r.sym_mean:.2f}" if r.sym_errors is not None else ""
            buf.write(f"- {r.variant} on {r.pair.label}: {100 * r.mean:.2f}{sym}\n")
    return buf.getvalue()


CSV_FIELDS = (
    "set",
    "pair",
    "name_a",
    "name_b",
    "method",
    "ok",
    "mean_x100",
    "median_x100",
    "frac_005",
    "frac_010",
    "sym_mean_x100",
    "seconds",
    "peak_rss_mb",
    "peak_gpu_mb",
    "error",
    "stage_seconds",
    "fit",
    "fit_quality",
)

# what the matcher chose for a pair (meta keys of engine.match): which guidance schedule, which alignment
FIT_KEYS = ("guidance", "fit_score", "schedule_scores", "alignment_fits", "alignment_used", "verdict")


def csv_text(runs: list[MatchRun]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in runs:
        e = r.errors if r.ok and r.errors is not None else None
        w.writerow(
            [
                r.pair.set_name,
                r.pair.index + 1,
                r.pair.name_a,
                r.pair.name_b,
                r.variant,
                int(r.ok),
                f"{100 * r.mean:.4f}" if e is not None else "",
                f"{100 * r.median:.4f}" if e is not None else "",
                f"{(e < THRESHOLDS[0]).mean():.4f}" if e is not None else "",
                f"{(e < THRESHOLDS[1]).mean():.4f}" if e is not None else "",
                f"{100 * r.sym_mean:.4f}" if e is not None and r.sym_errors is not None else "",
                f"{r.seconds:.3f}" if r.seconds == r.seconds else "",
                f"{r.peak_rss / 2**20:.1f}" if r.peak_rss == r.peak_rss else "",
                f"{r.peak_gpu / 2**20:.1f}" if r.peak_gpu == r.peak_gpu else "",
                r.error,
                json.dumps(stage_seconds(r.meta)) if r.ok else "",
                json.dumps({k: r.meta[k] for k in FIT_KEYS if r.meta.get(k) is not None}) if r.ok else "",
                json.dumps(r.quality) if r.ok and r.quality else "",
            ]
        )
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path, path.suffix) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def plot_png(rows: list[Row], title: str = "") -> bytes:
    """PNG bytes: cumulative error curves (fraction of points with error <= x) of all rows."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for r in rows:
        if r.summary is None:
            continue
        t, frac = cumulative_curve(r.errors)
        ax.plot(100 * t, frac, label=f"{r.name} (mean {100 * r.summary.mean:.2f})")
    ax.set_xlabel("geodesic error x100 (% of sqrt(area))")
    ax.set_ylabel("fraction of points")
    ax.set_xlim(0, 100 * CURVE_MAX)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if any(r.summary is not None for r in rows):
        ax.legend(loc="lower right", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_outputs(out_dir: str | os.PathLike, rows: list[Row], runs: list[MatchRun], header: dict) -> dict:
    """Write ``results.md``, ``pairs.csv``, ``cumulative_error.png`` and ``errors.npz`` into ``out_dir``.

    ``errors.npz`` holds the per-point errors (float32, (k,), the order of the
    ground-truth rows) of every successful run under the key ``"ROW|A->B"``.
    Each file is written atomically.
    """
    from ..correspondence import save_npz_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out / "results.md",
        "csv": out / "pairs.csv",
        "plot": out / "cumulative_error.png",
        "errors": out / "errors.npz",
    }
    _write_atomic(paths["markdown"], results_markdown(rows, runs, header).encode())
    _write_atomic(paths["csv"], csv_text(runs).encode())
    _write_atomic(paths["plot"], plot_png(rows, title=str(header.get("set", ""))))
    save_npz_atomic(paths["errors"], {f"{r.variant}|{r.pair.label}": r.errors.astype(np.float32) for r in runs if r.ok and r.errors is not None})
    return paths
