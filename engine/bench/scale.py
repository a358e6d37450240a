"""``python -m engine.bench --scale 5k,20k,80k,320k``: how time and memory grow with the mesh size.

One benchmark pair is subdivided (midpoint subdivision: every triangle into four, the surface
and the original vertices unchanged, so the ground truth still holds) to each requested size,
on the target, the source or both (``--scale-side``). Every row (the rigid baseline first, then
the feature / variant rows) runs at every size in its own process; the report gives per size
the wall seconds, CPU seconds and peak memory of every stage, the error against the ground
truth (measured on the original target: a subdivided target's point lies on the original
surface), and per row the growth exponent of time and memory in the vertex count.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from .datasets import BenchPair, load_triangles
from .runner import GeodesicStore, Variant, run_match_subprocess
from .metrics import map_errors

SIDES = ("target", "source", "both")


def parse_sizes(spec: str) -> list[int]:
    """``"5k,20k,80k,320k"`` -> [5000, 20000, 80000, 320000] (plain numbers and ``m`` too)."""
    sizes = []
    for item in (x.strip().lower() for x in spec.split(",")):
        if not item:
            continue
        mult = 1000 if item.endswith("k") else 1_000_000 if item.endswith("m") else 1
        try:
            n = float(item[:-1] if mult > 1 else item) * mult
        except ValueError:
            raise InputError(f"--scale: {item!r} is not a size (use e.g. 5k,20k,80k,320k)") from None
        if n < 1:
            raise InputError(f"--scale: {item!r} is not a positive size")
        sizes.append(int(n))
    if not sizes:
        raise InputError("--scale: no sizes given (use e.g. 5k,20k,80k,320k)")
    return sorted(set(sizes))


def subdivide_to(vertices: np.ndarray, faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint-subdivide (each triangle into four) until the mesh has at least about ``n`` vertices.

    Every subdivision multiplies the vertex count by about 4; a level is taken when it gets
    closer to ``n`` in ratio than the one before. The original vertices keep their indices.
    Returns (vertices (n', 3) float64, faces (m', 3) int64).
    """
    import trimesh

    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    while len(v) < n:
        v2, f2 = trimesh.remesh.subdivide(v, f)
        if abs(math.log(len(v2) / n)) >= abs(math.log(len(v) / n)):
            break
        v, f = v2, f2
    return v, f


@dataclass
class ScaleRun:
    """One row at one size."""

    size: int  # the requested size
    variant: str
    n_source: int
    n_target: int
    ok: bool
    error: str = ""
    seconds: float = float("nan")
    peak_rss: float = float("nan")  # bytes
    mean_error: float = float("nan")  # geodesic error x1 (fraction of sqrt(area)) against the ground truth
    meta: dict = field(default_factory=dict)


def _write_ply(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    """Write once (a later sweep reuses the file), atomically: a stopped sweep leaves no half file."""
    import trimesh

    from ..fileio import atomic_path

    if not path.is_file():
        with atomic_path(path, ".ply") as tmp:
            trimesh.Trimesh(v, f, process=False).export(tmp)


def build_meshes(pair: BenchPair, sizes: list[int], side: str, folder: Path) -> list[tuple[int, str, str]]:
    """Subdivided copies of the pair under ``folder``: (size, source path, target path) per size."""
    if side not in SIDES:
        raise InputError(f"--scale-side: unknown side {side!r}; use one of {', '.join(SIDES)}")
    folder.mkdir(parents=True, exist_ok=True)
    va, fa = load_triangles(pair.path_a)
    vb, fb = load_triangles(pair.path_b)
    out = []
    for n in sizes:
        paths = []
        for name, v, f, scaled in ((pair.name_a, va, fa, side in ("source", "both")),
                                   (pair.name_b, vb, fb, side in ("target", "both"))):
            original = os.fspath(pair.path_a if name == pair.name_a else pair.path_b)
            sv, sf = subdivide_to(v, f, n) if scaled else (v, f)
            if len(sv) == len(v):  # not subdivided: the set's own file
                paths.append(original)
                continue
            p = folder / f"{name}_{len(sv)}.ply"
            _write_ply(p, sv, sf)
            paths.append(os.fspath(p))
        out.append((n, paths[0], paths[1]))
    return out


def errors_on_original(pair: BenchPair, target_path: str, face: np.ndarray, bary: np.ndarray,
                       store: GeodesicStore) -> np.ndarray:
    """Geodesic errors of a map onto a (possibly subdivided) target, on the original target.

    The mapped points of the ground-truth source vertices are found on the original target's
    surface (the subdivided surface is the same) and measured with its distance matrix.
    """
    from ..geometry.closest import SurfaceQuery

    gt_a, gt_b = pair.ground_truth()
    vt, ft = load_triangles(target_path)
    vb, fb = load_triangles(pair.path_b)
    pts = np.einsum("kj,kjd->kd", np.asarray(bary, np.float64)[gt_a], vt[ft[np.asarray(face)[gt_a]]])
    f0, b0, _, _ = SurfaceQuery(vb, fb).closest(pts)
    # row i of (f0, b0) is the image of gt_a[i]
    return map_errors(store.get(pair.path_b), fb, np.asarray(f0), np.asarray(b0), np.arange(len(gt_a)), gt_b)


def run_scale(pair: BenchPair, sizes: list[int], variants: list[Variant], side: str, folder: Path, *,
              device: str | None = "cpu", timeout: float = 900.0, threads: int | None = None, cache_dir=None,
              log: Callable[[str], None] | None = None, runner: Callable[..., dict] = run_match_subprocess) -> list[ScaleRun]:
    """Run every variant on the pair at every size (see the module docstring)."""
    store = GeodesicStore(cache_dir, log)
    runs = []
    meshes = build_meshes(pair, sizes, side, folder / "meshes")
    total, k = len(meshes) * len(variants), 0
    for n, pa, pb in meshes:
        ns, nt = len(load_triangles(pa)[0]), len(load_triangles(pb)[0])
        for variant in variants:
            k += 1
            res = runner(pa, pb, variant.match_options(device), call=variant.call_target(), timeout=timeout,
                         threads=threads)
            run = ScaleRun(n, variant.name, ns, nt, bool(res.get("ok")), str(res.get("error", "")),
                           float(res.get("seconds", float("nan"))), float(res.get("peak_rss", float("nan"))),
                           meta=res.get("meta") or {})
            if run.ok:
                try:
                    run.mean_error = float(errors_on_original(pair, pb, res["face"], res["bary"], store).mean())
                except InputError as exc:
                    run.ok, run.error = False, f"evaluation: {exc}"
            runs.append(run)
            if log is not None:
                log(f"[{k}/{total}] {ns} -> {nt} {variant.name}: " + (
                    f"error {100 * run.mean_error:.2f}, {run.seconds:.1f} s, {run.peak_rss / 2**20:.0f} MiB"
                    if run.ok else f"FAILED {run.error}"))
    return runs


def growth_exponent(sizes: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(size): time ~ size^exponent (NaN with < 2 points)."""
    pts = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if s > 0 and v == v and v > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _size_of(run: ScaleRun, side: str) -> int:
    return run.n_source if side == "source" else run.n_target if side == "target" else run.n_source + run.n_target


def report_markdown(runs: list[ScaleRun], side: str, header: dict) -> str:
    """The sweep's tables: one line per (size, row), then per row the stages at every size, then
    the growth exponents."""
    out = io.StringIO()
    out.write(f"# Size sweep: {header.get('pair', '')}\n\n")
    for k, v in header.items():
        out.write(f"- {k}: {v}\n")
    out.write("\n| source | target | row | error x100 | seconds | CPU s | peak RSS MiB | vs baseline |\n")
    out.write("|---:|---:|---|---:|---:|---:|---:|---:|\n")
    base = {r.size: r for r in runs if r.ok and r.variant == runs[0].variant}
    for r in runs:
        cpu = sum((r.meta.get("cpu_seconds") or {}).values()) if r.ok else float("nan")
        b = base.get(r.size)
        ratio = r.seconds / b.seconds if b is not None and r.ok and b.seconds > 0 else float("nan")
        out.write(f"| {r.n_source} | {r.n_target} | {r.variant} | "
                  + (f"{100 * r.mean_error:.2f} | {r.seconds:.1f} | {cpu:.1f} | {r.peak_rss / 2**20:.0f} | {ratio:.2f}x |\n"
                     if r.ok else f"failed: {r.error} | | | | |\n"))
    for name in dict.fromkeys(r.variant for r in runs):
        rr = [r for r in runs if r.variant == name and r.ok]
        if not rr:
            continue
        stages = list(dict.fromkeys(s for r in rr for s in (r.meta.get("seconds") or {})))
        out.write(f"\n## {name}: per stage, seconds / CPU seconds / peak MiB at the stage's end\n\n")
        out.write("| stage | " + " | ".join(f"{_size_of(r, side)} v" for r in rr) + " |\n")
        out.write("|---|" + "---:|" * len(rr) + "\n")
        for s in stages:
            cells = []
            for r in rr:
                w = (r.meta.get("seconds") or {}).get(s)
                c = (r.meta.get("cpu_seconds") or {}).get(s)
                m = (r.meta.get("stage_peak_rss_mb") or {}).get(s)
                cells.append("" if w is None else f"{w:.1f} / {c if c is not None else float('nan'):.1f} / "
                             f"{m if m is not None else float('nan'):.0f}")
            out.write(f"| {s} | " + " | ".join(cells) + " |\n")
    out.write(f"\n## Growth in the {side} size (exponent of a least-squares fit, time ~ n^e)\n\n")
    out.write("| row | seconds | peak RSS |\n|---|---:|---:|\n")
    for name in dict.fromkeys(r.variant for r in runs):
        rr = [r for r in runs if r.variant == name and r.ok]
        n = [_size_of(r, side) for r in rr]
        out.write(f"| {name} | {growth_exponent(n, [r.seconds for r in rr]):.2f} | "
                  f"{growth_exponent(n, [r.peak_rss for r in rr]):.2f} |\n")
    return out.getvalue()


def plot_png(runs: list[ScaleRun], side: str, title: str = "") -> bytes:
    """PNG bytes: seconds and peak memory against the vertex count (log-log), one line per row."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.0), dpi=110)
    ax_t, ax_m = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name in dict.fromkeys(r.variant for r in runs):
        rr = [r for r in runs if r.variant == name and r.ok]
        n = [_size_of(r, side) for r in rr]
        ax_t.plot(n, [r.seconds for r in rr], "o-", label=name)
        ax_m.plot(n, [r.peak_rss / 2**20 for r in rr], "o-", label=name)
    for ax, label in ((ax_t, "seconds"), (ax_m, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{side} vertices")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if runs:
        ax_t.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
