"""``python -m engine demo``: match a generated sample pair and picture the result.

Writes into ``--out`` (default ``out/``): ``source.obj``, ``target.obj`` (a
procedural creature and a remeshed, re-posed, rotated copy of it; see
:mod:`engine.samples`), ``match.npz`` (the ``python -m engine match`` output)
and ``correspondence.png`` (source coloured by position, the target coloured
through the map, and the fitted source). Prints a short summary with the error
against the known ground truth. Needs no downloads.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .arrays import unit_rows
from .errors import InputError


def position_colors(vertices: np.ndarray) -> np.ndarray:
    """(n, 3) float64 RGB in [0, 1]: a smooth function of each vertex position (bands along every axis)."""
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    c = (v - lo) / np.maximum((hi - lo).max(), 1e-12)  # same scale on every axis
    return 0.1 + 0.85 * (0.5 + 0.5 * np.sin(2.0 * np.pi * 1.3 * c + np.array([0.0, 2.1, 4.2])))


def colors_through_map(src_colors: np.ndarray, src_faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(nt, 3) colours of target vertices: the source colour at their mapped point (face + barycentric)."""
    return np.einsum("nk,nkc->nc", np.asarray(bary, np.float64), src_colors[np.asarray(src_faces)[face]])


def _view_rotation(fitted: np.ndarray, source: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking target coordinates into the source's frame (Kabsch on fitted vs source vertices)."""
    a = fitted - fitted.mean(0)
    b = source - source.mean(0)
    U, _, Vt = np.linalg.svd(a.T @ b)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt  # row vectors: x_target @ R ~ x_source


def _draw(ax, vertices: np.ndarray, faces: np.ndarray, vcolors: np.ndarray, title: str,
          rotation: np.ndarray | None = None, wireframe: bool = False) -> None:
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    v = np.asarray(vertices, np.float64)
    p = v - v.mean(0)
    if rotation is not None:  # show every panel in the source's frame, so they compare at a glance
        p = p @ rotation
    fcol = vcolors[faces].mean(axis=1)
    # simple shading from a fixed light in view space
    tri = p[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = unit_rows(n)
    light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    shade = 0.55 + 0.45 * np.abs(n @ light)
    edges = dict(edgecolors=(0.1, 0.1, 0.1, 0.35), linewidths=0.2) if wireframe else dict(edgecolors="none", linewidths=0)
    coll = Poly3DCollection(tri, facecolors=np.clip(fcol * shade[:, None], 0, 1), **edges)
    ax.add_collection3d(coll)
    lo, hi = p.min(0), p.max(0)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(tuple(np.maximum(hi - lo, 1e-9)), zoom=0.95)
    ax.view_init(elev=20, azim=-60)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)


UNCOVERED_RED = np.array([0.9, 0.12, 0.08])


def uncovered_colors(tgt_v, tgt_f, fitted, src_f) -> tuple[np.ndarray, float]:
    """Per target vertex: grey, or red where the target's surface lies farther than 1 % of its
    diagonal from the fitted source (engine.geometry.coverage); and that share of the target's
    outer surface."""
    from .geometry.closest import SurfaceQuery
    from .geometry.coverage import COVER_TOLERANCE, coverage

    tv = np.asarray(tgt_v, np.float64)
    gap = SurfaceQuery(np.asarray(fitted, np.float64), np.asarray(src_f)).closest(tv)[3]
    far = gap > COVER_TOLERANCE * float(np.linalg.norm(tv.max(0) - tv.min(0)))
    colors = np.where(far[:, None], UNCOVERED_RED, 0.78)
    return colors, coverage(fitted, src_f, tv, tgt_f).target_uncovered


def save_correspondence_png(path: str, src_v, src_f, tgt_v, tgt_f, result) -> None:
    """Four panels: source coloured by position, target coloured through the map, fitted source
    (with its wireframe: flipped or folded triangles show), target with what the fit leaves
    uncovered in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = position_colors(src_v)
    tcol = colors_through_map(colors, src_f, result.tgt_to_src_face, result.tgt_to_src_bary)
    fitted = np.asarray(result.fitted_vertices, np.float64)
    R = _view_rotation(fitted, np.asarray(src_v, np.float64))
    ucol, share = uncovered_colors(tgt_v, tgt_f, fitted, src_f)
    fig = plt.figure(figsize=(20, 5.2), dpi=100)
    panels = (
        (src_v, src_f, colors, f"source ({len(src_v)} vertices), coloured by position", None, False),
        (tgt_v, tgt_f, tcol, f"target ({len(tgt_v)} vertices), colours through the map", R, False),
        (fitted, src_f, colors, "source topology fitted onto the target", R, True),
        (tgt_v, tgt_f, ucol, f"target: {100 * share:.1f} % not covered by the fit (red)", R, False),
    )
    for i, (v, f, c, title, rot, wire) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1, projection="3d")
        _draw(ax, v, np.asarray(f), c, title, rot, wire)
    fig.tight_layout()
    from .fileio import atomic_path

    try:
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def run_demo(out_dir: str = "out", quality: str = "balanced", features: str = "auto", device: str = "auto",
             progress=None, echo=print) -> dict:
    """Generate the sample pair, match it, write files into ``out_dir``; returns the summary numbers."""
    from .pipeline import match
    from .samples import make_pair, write_obj

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"{out_dir}: exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    pair = make_pair()
    src_path, tgt_path = os.path.join(out_dir, "source.obj"), os.path.join(out_dir, "target.obj")
    write_obj(src_path, pair.source_vertices, pair.source_faces)
    write_obj(tgt_path, pair.target_vertices, pair.target_faces)
    echo(f"sample pair: {src_path} ({len(pair.source_vertices)} vertices), {tgt_path} ({len(pair.target_vertices)} vertices)")

    t0 = time.perf_counter()
    result = match(src_path, tgt_path, quality=quality, features=features, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    npz_path = os.path.join(out_dir, "match.npz")
    result.save(npz_path)
    png_path = os.path.join(out_dir, "correspondence.png")
    save_correspondence_png(png_path, pair.source_vertices, pair.source_faces, pair.target_vertices, pair.target_faces, result)

    diag = float(np.linalg.norm(pair.target_vertices.max(0) - pair.target_vertices.min(0)))
    err = np.linalg.norm(result.fitted_vertices.astype(np.float64) - pair.gt_src_to_tgt, axis=1) / diag
    summary = {
        "source_vertices": len(pair.source_vertices),
        "target_vertices": len(pair.target_vertices),
        "seconds": seconds,
        "features": result.meta.get("features"),
        "device": result.meta.get("device"),
        "mean_error": float(err.mean()),
        "median_error": float(np.median(err)),
        "within_5pct": float((err < 0.05).mean()),
        "mean_confidence": float(result.confidence.mean()),
        "surface_fit": result.meta.get("surface_fit"),
    }
    echo(f"matched in {seconds:.1f} s on {summary['device']} with {summary['features']} features "
         f"(quality {quality}; stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.meta.get("seconds", {}).items()) + ")")
    echo(f"error against the ground truth (Euclidean, % of the target's bounding-box diagonal): "
         f"mean {100 * summary['mean_error']:.2f}, median {100 * summary['median_error']:.2f}, "
         f"{100 * summary['within_5pct']:.1f}% of source vertices within 5%")
    fq = summary["surface_fit"]
    if fq:
        echo(f"fitted source: {fq['flipped']} flipped and {fq['folds']} folded triangles "
             f"({fq['flipped_pct']:.2f} % / {fq['folds_pct']:.2f} %), {fq['unsupported_pct']:.1f} % of it kept off the target")
        echo(f"coverage: {fq['target_uncovered_pct']:.1f} % of the target's surface not covered by the fit, "
             f"{fq['fit_off_target_pct']:.1f} % of the fit's surface off the target (beyond 1 % of the diagonal)")
    echo(f"wrote {npz_path} and {png_path}")
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    show = sys.stderr.isatty()
    if show:
        from .cli import _ProgressBar

        with _ProgressBar() as bar:
            run_demo(args.out, args.quality, args.features, args.device, progress=bar)
    else:
        run_demo(args.out, args.quality, args.features, args.device)
    return 0


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``python -m engine`` command line."""
    p = subparsers.add_parser("demo", help="match a generated sample pair; writes OBJs, match.npz and a PNG into out/",
                              description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out", help="output folder (default: out/)")
    p.add_argument("--quality", choices=("fast", "balanced", "best"), default="balanced")
    p.add_argument("--features", choices=("auto", "geometric", "dino", "dino+sd"), default="auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.set_defaults(func=cmd_demo)
    return p
