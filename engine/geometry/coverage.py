"""How well a fitted template covers its target, both ways, as an artist would judge it.

Vertex distances pass on fits that leave a character's hands, feet or jaw uncovered (the
template's thin hand sits inside the target's thick one: every template vertex lies on target
surface, the target's fingers stay bare) or that span a web of triangles from an arm to the chest
(every vertex on the target, the triangles between them in the air). Both show on surface
samples, not vertices:

- *target uncovered*: the share of the target's outer surface (area) farther than ``tolerance``
  of its bounding-box diagonal from the fitted template;
- *fit off target*: the share of the fitted template's surface (area) farther than that from the
  target;
- *target beyond the border*: the share of the target's outer surface farther than that whose
  closest fitted point lies on the template's open border, off to the side: surface with no
  counterpart on the template (a scan's shoulders below a head template's neck cut). It is not
  counted as uncovered.

Outer surface: pieces inside the mesh (teeth in a head, a joint mesh inside a shell, the skin
under a closed garment) are left out by the winding number just outside each sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mesh import Mesh

# a sample farther than this from the other surface (of the target's bounding-box diagonal) is
# uncovered: 1 % is 2 cm on a body, a finger's thickness, far above the fit's own p95 (0.3-0.4 %)
COVER_TOLERANCE = 0.01
# samples per surface: the shares' standard error is below 0.2 percentage points at 20k
COVER_SAMPLES = 20000
# the winding number is read this far (of the diagonal) outside each sample, along its face
# normal: outside the sample's own sheet, well inside any piece it lies under
_OUTSIDE = 1e-3


@dataclass
class Coverage:
    """target_uncovered, fit_off, target_beyond : shares in [0, 1] (see the module docstring);
    target_points : (p, 3) float64 outer target samples; target_gap : (p,) float64 their distance
    to the fit; target_bare : (p,) bool those counted as uncovered (far, and not beyond the border);
    fit_points : (q, 3) float64 fit samples; fit_gap : (q,) float64 their distance to the target;
    tolerance : the distance used (target units)."""

    target_uncovered: float
    fit_off: float
    target_points: np.ndarray
    target_gap: np.ndarray
    fit_points: np.ndarray
    fit_gap: np.ndarray
    tolerance: float
    target_beyond: float
    target_bare: np.ndarray

    def meta(self) -> dict:
        return {"target_uncovered_pct": round(100.0 * self.target_uncovered, 2),
                "fit_off_target_pct": round(100.0 * self.fit_off, 2),
                "target_beyond_border_pct": round(100.0 * self.target_beyond, 2),
                "tolerance_of_diagonal": COVER_TOLERANCE}


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0):
    """Area-uniform samples: points (count, 3) float64 and their faces (count,) int64 (none where
    the mesh has no area)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    area = np.nan_to_num(Mesh(v, f).face_areas, nan=0.0, posinf=0.0)
    if len(f) == 0 or area.sum() <= 0:  # no surface to sample (a fit collapsed to a point)
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(f), size=count, p=area / area.sum())
    r = rng.random((count, 2))
    flip = r.sum(1) > 1.0
    r[flip] = 1.0 - r[flip]
    tri = v[f[face]]
    return tri[:, 0] + r[:, :1] * (tri[:, 1] - tri[:, 0]) + r[:, 1:] * (tri[:, 2] - tri[:, 0]), face


def outer_samples(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0, normals: bool = False):
    """Area-uniform samples (p, 3) float64 of the outer surface: of ``count`` samples, those whose
    outside (along their face normal) is inside the mesh by the winding number are dropped. With
    ``normals``, also their face normals (p, 3)."""
    import igl

    v = np.ascontiguousarray(vertices, np.float64)
    f = np.ascontiguousarray(faces, np.int64)
    pts, face = surface_samples(v, f, count, seed)
    if len(pts) == 0:
        return (pts, np.zeros((0, 3))) if normals else pts
    nrm = Mesh(v, f).face_normals[face]
    diag = float(np.linalg.norm(v.max(0) - v.min(0)))
    outer = np.abs(igl.fast_winding_number(v, f, np.ascontiguousarray(pts + _OUTSIDE * diag * nrm))) < 0.5
    return (pts[outer], nrm[outer]) if normals else pts[outer]


def coverage(fit_vertices: np.ndarray, fit_faces: np.ndarray, target_vertices: np.ndarray, target_faces: np.ndarray,
             fit_face_mask: np.ndarray | None = None, samples: int = COVER_SAMPLES, tolerance: float = COVER_TOLERANCE, seed: int = 0,
             target_points: np.ndarray | None = None, target_query=None) -> Coverage:
    """Both shares of :class:`Coverage` for a fitted template on its target.

    fit_vertices : (n, 3) float; fit_faces : (m, 3) int; target_vertices : (N, 3); target_faces : (M, 3)
    fit_face_mask : optional (m,) bool  the fit's faces that should lie on the target (excluded
        regions, hair or gear, left out)
    tolerance : fraction of the target's bounding-box diagonal
    target_points : optional (p, 3) outer target samples already drawn (:func:`outer_samples`)
    target_query : optional engine.geometry.closest.SurfaceQuery of the target already built (its
        tree costs seconds on a scan of millions of triangles)
    """
    from .closest import SurfaceQuery
    from .open_border import OpenBorder

    tv = np.ascontiguousarray(target_vertices, np.float64)
    tf = np.ascontiguousarray(target_faces, np.int64)
    fv = np.ascontiguousarray(fit_vertices, np.float64)
    ff = np.ascontiguousarray(fit_faces, np.int64)
    diag = float(np.linalg.norm(tv.max(0) - tv.min(0)))
    tol = tolerance * diag
    tpts = outer_samples(tv, tf, samples, seed) if target_points is None else target_points
    fpts = surface_samples(fv, ff if fit_face_mask is None else ff[fit_face_mask], samples, seed + 1)[0]
    fgap = (target_query or SurfaceQuery(tv, tf)).closest(fpts)[3] if len(fpts) else np.zeros(0)
    tgap, beyond = np.zeros(0), np.zeros(0, bool)
    if len(tpts):
        face, bary, point, tgap = SurfaceQuery(fv, ff).closest(tpts)
        fit = Mesh(fv, ff)
        beyond = OpenBorder(fit).off_to_the_side(face, bary, tpts - point, fit.face_normals[face], tgap) & (tgap > tol)
    share = (lambda hit: float(np.mean(hit)) if len(hit) else 0.0)
    bare = (tgap > tol) & ~beyond
    return Coverage(share(bare), share(fgap > tol), tpts, tgap, fpts, fgap, tol, share(beyond), bare)

