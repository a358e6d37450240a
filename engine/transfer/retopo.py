"""The retopology result: the source topology on the target shape.

``fitted_vertices`` from ``engine.match`` already put the source's topology on
the target. :func:`fit_retopology` finishes it for use as a shape key or a new
mesh:

* *hug*: every vertex moves onto its closest point of the target surface,
  except where that would fold a triangle (flip it against its fitted
  orientation, or squash it flat); those vertices move only part of the way,
  halving the step until nothing folds.
* *rigid regions*: vertices in ``keep_rigid_mask`` (eyes, the mouth bag,
  teeth: parts that must keep their shape and are often absent on scans) are
  not snapped; each connected region follows its surroundings with the best
  similarity transform (rotation, uniform scale, translation) of the
  neighbouring vertices, from the source pose to the result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..arrays import triangle_cross
from ..errors import InputError
from .maps import check_faces, check_vertices


@dataclass
class RetopoResult:
    """Result of :func:`fit_retopology`.

    Attributes
    ----------
    vertices : (ns, 3) float32  the source topology on the target shape
    flipped_faces : (k,) int64  source triangles facing against the target surface under them
        (triangles touching rigid regions are not checked)
    on_surface : (ns,) bool  vertices that reached their closest target point
    distance : (ns,) float32  distance of every vertex to the target surface
    """

    vertices: np.ndarray
    flipped_faces: np.ndarray
    on_surface: np.ndarray
    distance: np.ndarray


def similarity_transform(X: np.ndarray, Y: np.ndarray, allow_scale: bool = True):
    """Best s, R, t with s R x + t ~ y (least squares) for point sets X, Y (k, 3).

    Fewer than 3 points, or collinear ones, give a pure translation.
    """
    cx, cy = X.mean(0), Y.mean(0)
    Xc, Yc = X - cx, Y - cy
    if len(X) < 3 or np.linalg.matrix_rank(Xc, tol=1e-9 * max(np.abs(Xc).max(), 1e-300)) < 2:
        return 1.0, np.eye(3), cy - cx
    U, sig, Vt = np.linalg.svd(Xc.T @ Yc)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    D = np.diag([1.0, 1.0, d])
    R = Vt.T @ D @ U.T
    s = float((sig * np.diag(D)).sum() / max((Xc ** 2).sum(), 1e-300)) if allow_scale else 1.0
    if not np.isfinite(s) or s <= 0:
        s = 1.0
    return s, R, cy - s * (R @ cx)


def fit_retopology(src_vertices, src_faces, tgt_vertices, tgt_faces, fitted_vertices, hug: bool = True,
                   keep_rigid_mask=None, iterations: int = 10, allow_scale: bool = True, n_anchors: int = 12,
                   query=None) -> RetopoResult:
    """Finish the fitted source: hug the target surface without folding, keep rigid parts rigid.

    Parameters
    ----------
    src_vertices : (ns, 3) float  the source in its own pose (for the rigid regions' shapes)
    src_faces : (ms, 3) int
    tgt_vertices : (nt, 3) float, tgt_faces : (mt, 3) int  the target surface
    fitted_vertices : (ns, 3) float  ``Correspondence.fitted_vertices``
    hug : bool  project onto the target surface (without folding)
    keep_rigid_mask : optional (ns,) bool  source vertices to carry rigidly with their surroundings
    iterations : int  step-halving rounds against folds
    allow_scale : bool  rigid regions may scale uniformly with their surroundings
    n_anchors : int  for a rigid region with no edge to the rest (a separate eyeball), the
        surrounding vertices used are the nearest ``n_anchors`` per region vertex
    query : optional ``engine.geometry.closest.SurfaceQuery`` already built on the target

    Returns
    -------
    RetopoResult
    """
    from ..geometry.closest import SurfaceQuery

    v0 = check_vertices(src_vertices, "source")
    f = check_faces(src_faces, "source", len(v0))
    tv = check_vertices(tgt_vertices, "target")
    tf = check_faces(tgt_faces, "target", len(tv))
    x_fit = check_vertices(fitted_vertices, "fitted shape")
    if len(x_fit) != len(v0):
        raise InputError(f"fitted shape: has {len(x_fit)} vertices but the source has {len(v0)}")
    ns = len(v0)
    if keep_rigid_mask is None:
        rigid = np.zeros(ns, bool)
    else:
        rigid = np.asarray(keep_rigid_mask)
        if rigid.shape != (ns,):
            raise InputError(f"keep_rigid_mask: expected one entry per source vertex ({ns},), got {rigid.shape}")
        rigid = rigid.astype(bool)
        if rigid.all():
            raise InputError("keep_rigid_mask: every vertex is masked; nothing left to attach the rigid parts to")
    q = query if query is not None else SurfaceQuery(tv, tf)
    x = x_fit.copy()
    free = ~rigid
    on_surface = np.zeros(ns, bool)

    if hug:
        _, _, P, _ = q.closest(x_fit[free])
        target = x_fit.copy()
        target[free] = P
        ref = triangle_cross(x_fit, f)
        ref_len = np.linalg.norm(ref, axis=1)
        check = ref_len > 1e-12 * max(ref_len.max(), 1e-300)
        ref_n = ref / np.maximum(ref_len, 1e-300)[:, None]
        alpha = free.astype(np.float64)

        def folded_faces(a):
            xx = x_fit + a[:, None] * (target - x_fit)
            signed = (triangle_cross(xx, f) * ref_n).sum(axis=1)
            return xx, check & (signed <= 0.01 * ref_len)

        x, folded = folded_faces(alpha)
        for _ in range(iterations):  # halve the step of the vertices of folded triangles
            if not folded.any():
                break
            bad = np.unique(f[folded])
            alpha[bad] *= 0.5
            x, folded = folded_faces(alpha)
        while folded.any():  # last resort: those vertices stay where the fit put them (never folded)
            bad = np.unique(f[folded])
            bad = bad[alpha[bad] > 0]
            if len(bad) == 0:
                break
            alpha[bad] = 0.0
            x, folded = folded_faces(alpha)
        on_surface = free & (alpha == 1.0)

    if rigid.any():
        x = _attach_rigid(v0, f, x, rigid, allow_scale, n_anchors)

    _, _, P, dist = q.closest(x)
    tri_f, _, _, _ = q.closest(x[f].mean(axis=1))
    tn = triangle_cross(tv, tf)[tri_f]
    cur = triangle_cross(x, f)
    dots = (cur * tn).sum(axis=1)
    area = np.linalg.norm(cur, axis=1)
    checked = ~rigid[f].any(axis=1) & (area > 0)
    # the two files may wind their triangles oppositely: orient by the area-weighted majority
    sign = 1.0 if (np.sign(dots[checked]) * area[checked]).sum() >= 0 else -1.0
    flipped = np.nonzero(checked & (sign * dots < 0))[0].astype(np.int64)
    return RetopoResult(vertices=x.astype(np.float32), flipped_faces=flipped, on_surface=on_surface,
                        distance=dist.astype(np.float32))


def _attach_rigid(v0: np.ndarray, f: np.ndarray, x: np.ndarray, rigid: np.ndarray, allow_scale: bool, n_anchors: int) -> np.ndarray:
    """Move every connected region of ``rigid`` vertices with the similarity transform of its surroundings."""
    from scipy.spatial import cKDTree

    ns = len(v0)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    both = rigid[e[:, 0]] & rigid[e[:, 1]]
    adj = sp.coo_matrix((np.ones(int(both.sum())), (e[both, 0], e[both, 1])), shape=(ns, ns))
    _, comp = connected_components(adj, directed=False)
    border_edges = rigid[e[:, 0]] ^ rigid[e[:, 1]]
    be = e[border_edges]
    inner = np.where(rigid[be[:, 0]], be[:, 0], be[:, 1])
    outer = np.where(rigid[be[:, 0]], be[:, 1], be[:, 0])
    free_idx = np.nonzero(~rigid)[0]
    tree = None
    out = x.copy()
    for c in np.unique(comp[rigid]):
        members = np.nonzero(rigid & (comp == c))[0]
        anchors = np.unique(outer[comp[inner] == c])
        if len(anchors) < 3:
            if tree is None:
                tree = cKDTree(v0[free_idx])
            k = min(n_anchors, len(free_idx))
            _, nn = tree.query(v0[members], k=k)
            anchors = np.unique(np.r_[anchors, free_idx[np.asarray(nn).reshape(-1)]])
        s, R, t = similarity_transform(v0[anchors], x[anchors], allow_scale)
        out[members] = s * v0[members] @ R.T + t
    return out
