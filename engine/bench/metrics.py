"""Correspondence error metrics (the protocol of ../shared/data/README.md).

A map A -> B gives every vertex of A a point on B (a triangle and barycentric
weights). The error of a ground-truth pair (a, b) is the geodesic distance on
B between the image of a and b, divided by sqrt(area of B). With a per-shape
distance matrix ``D`` (:func:`engine.bench.geodesics.geodesic_matrix`) the
distance from b to a point inside triangle (i, j, k) is interpolated from
``D[b, i]``, ``D[b, j]``, ``D[b, k]`` with the point's barycentric weights.

All values here are fractions of sqrt(area); reports multiply by 100.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

THRESHOLDS = (0.05, 0.10)
SWAP_THRESHOLD = 0.10  # a pair whose mean error exceeds this is a gross failure (left-right swap...)
CURVE_MAX = 0.25


def validate_map(face: np.ndarray, bary: np.ndarray, n_src: int, n_tgt_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Check a map's arrays; return them as (n_src,) int64 and (n_src, 3) float64.

    Raises :class:`InputError` naming the problem (wrong length, index out of
    range, NaN weights) so that a broken map fails its pair with a clear line.
    """
    face = np.asarray(face)
    bary = np.asarray(bary)
    if face.shape != (n_src,):
        raise InputError(f"map: src_to_tgt_face has shape {face.shape}, expected ({n_src},) (one per source vertex)")
    if bary.shape != (n_src, 3):
        raise InputError(f"map: src_to_tgt_bary has shape {bary.shape}, expected ({n_src}, 3)")
    if not np.issubdtype(face.dtype, np.integer):
        raise InputError(f"map: src_to_tgt_face must be integers, got {face.dtype}")
    if n_src and (face.min() < 0 or face.max() >= n_tgt_faces):
        raise InputError(f"map: target face index out of range (target has {n_tgt_faces} faces, map uses {face.min()}..{face.max()})")
    bary = bary.astype(np.float64)
    if not np.all(np.isfinite(bary)):
        raise InputError(f"map: {int((~np.isfinite(bary)).any(axis=1).sum())} barycentric rows are NaN or infinite")
    return face.astype(np.int64), bary


def map_errors(
    geodesics_b: np.ndarray,
    triangles_b: np.ndarray,
    face: np.ndarray,
    bary: np.ndarray,
    gt_a: np.ndarray,
    gt_b: np.ndarray,
) -> np.ndarray:
    """Per ground-truth-pair geodesic error of a map A -> B.

    Parameters
    ----------
    geodesics_b : (nb, nb) float array (float16 memmap is fine): distances on B / sqrt(area B)
    triangles_b : (mb, 3) int   faces of B the map refers to
    face : (na,) int            target triangle of every vertex of A
    bary : (na, 3) float        barycentric weights in that triangle
    gt_a, gt_b : (k,) int       ground truth: vertex gt_a[i] of A corresponds to gt_b[i] of B

    Returns
    -------
    errors : (k,) float64, >= 0. A point that lands on another connected
        component than its ground truth gets the largest finite distance of B.
    """
    gt_a = np.asarray(gt_a, dtype=np.int64)
    gt_b = np.asarray(gt_b, dtype=np.int64)
    nb = geodesics_b.shape[0]
    if gt_a.shape != gt_b.shape or gt_a.ndim != 1:
        raise InputError(f"ground truth: gt_a and gt_b must be 1-d arrays of the same length, got {gt_a.shape} and {gt_b.shape}")
    na = len(face)
    if len(gt_a) and (gt_a.min() < 0 or gt_a.max() >= na):
        raise InputError(f"ground truth: source vertex index out of range (A has {na} vertices)")
    if len(gt_b) and (gt_b.min() < 0 or gt_b.max() >= nb):
        raise InputError(f"ground truth: target vertex index out of range (B has {nb} vertices)")
    tri_b = np.asarray(triangles_b, dtype=np.int64)
    face, bary = validate_map(face, bary, na, len(tri_b))
    corners = tri_b[face[gt_a]]  # (k, 3) vertices of B around each image point
    # clip tiny negative weights from projection round-off; renormalise
    w = np.clip(bary[gt_a], 0.0, None)
    s = w.sum(axis=1, keepdims=True)
    w = np.divide(w, s, out=np.full_like(w, 1.0 / 3.0), where=s > 0)
    d = np.asarray(geodesics_b[gt_b[:, None], corners], dtype=np.float64)  # (k, 3)
    bad = ~np.isfinite(d)
    if bad.any():
        finite = np.asarray(geodesics_b, dtype=np.float32)
        cap = float(finite[np.isfinite(finite)].max()) if np.isfinite(finite).any() else 0.0
        d[bad] = cap
    return np.einsum("kj,kj->k", w, d)


@dataclass
class ErrorSummary:
    """Aggregate of the errors of several pairs (fractions of sqrt(area))."""

    mean: float
    median: float
    frac_under: dict  # threshold -> fraction of points with error < threshold
    pair_means: list[float] = field(default_factory=list)
    n_points: int = 0

    @property
    def swaps(self) -> int:
        """Pairs whose mean error exceeds :data:`SWAP_THRESHOLD` (x100: 10)."""
        return int(sum(m > SWAP_THRESHOLD for m in self.pair_means))


def summarize(errors_per_pair: list[np.ndarray]) -> ErrorSummary | None:
    """Mean over all ground-truth points of all pairs, median, fractions under thresholds.

    Returns None when there is no pair to summarise.
    """
    arrays = [np.asarray(e, dtype=np.float64).ravel() for e in errors_per_pair]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return None
    allerr = np.concatenate(arrays)
    return ErrorSummary(
        mean=float(allerr.mean()),
        median=float(np.median(allerr)),
        frac_under={t: float((allerr < t).mean()) for t in THRESHOLDS},
        pair_means=[float(a.mean()) for a in arrays],
        n_points=int(allerr.size),
    )


def cumulative_curve(errors: np.ndarray, max_error: float = CURVE_MAX, steps: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of points with error <= t for t in [0, max_error].

    Returns
    -------
    thresholds : (steps,) float64
    fractions : (steps,) float64, non-decreasing, in [0, 1]
    """
    e = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    t = np.linspace(0.0, max_error, steps)
    if e.size == 0:
        return t, np.zeros_like(t)
    return t, np.searchsorted(e, t, side="right") / e.size


def fitted_quality(path_a: str, path_b: str, corr) -> dict:
    """Quality of a match's fitted source (engine.geometry.mesh_quality.fit_quality): flipped faces
    and new folds against the source file's own shape, edge stretch, and the distance to the
    target (% of the target's bounding-box diagonal; also over the vertices with confidence above
    0.5, where the target has surface under them), and both shares of engine.geometry.coverage on the
    whole target file (its outer surface left uncovered, the fit's surface off the target)."""
    from ..geometry.coverage import coverage
    from ..geometry.closest import SurfaceQuery
    from ..geometry.mesh_quality import fit_quality
    from ..mesh import as_prepared

    src, tgt = as_prepared(path_a, "source"), as_prepared(path_b, "target")
    fitted = np.asarray(corr.fitted_vertices, np.float64)
    tv = tgt.orig_vertices
    _, _, _, dist = SurfaceQuery(tv, tgt.orig_triangles).closest(fitted)
    diag = float(np.linalg.norm(tv.max(0) - tv.min(0)))
    out = fit_quality(src.orig_vertices, fitted, src.orig_triangles, dist, diag, np.asarray(corr.confidence) > 0.5)
    cover = coverage(fitted, src.orig_triangles, tv, tgt.orig_triangles)
    out.update(target_uncovered_pct=round(100.0 * cover.target_uncovered, 2), fit_off_target_pct=round(100.0 * cover.fit_off, 2))
    return out
