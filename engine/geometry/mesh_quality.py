"""How clean a fitted mesh is against the mesh it was fitted from (same topology).

A triangle is *flipped* when its normal points against the rest triangle's normal carried by
the local rotation (the best rotation of the surrounding two vertex rings, rest -> fitted): a
bent arm is not a flip, a triangle turned over on the arm is. A *new fold* is a pair of
edge-adjacent triangles whose normals make more than ``FOLD_ANGLE_DEG`` in the fitted mesh but
not in the rest mesh: the two triangles lie (almost) on top of each other.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ..arrays import triangle_cross
from ..mesh import Mesh
from .rotations import best_rotations_flat

# two adjacent triangles fold onto each other beyond this dihedral turn (120 deg: a crease sharper
# than any a smooth body surface has at the template's resolution)
FOLD_ANGLE_DEG = 120.0


def vertex_adjacency(edges: np.ndarray, n: int) -> sp.csr_matrix:
    """(n, n) 0/1 adjacency of unique edges (e, 2) (``Mesh.edges``): symmetric, no diagonal."""
    e = edges[edges[:, 0] != edges[:, 1]]
    ones = np.ones(len(e))
    return sp.coo_matrix((np.r_[ones, ones], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)).tocsr()


def adjacent_face_pairs(faces: np.ndarray) -> np.ndarray:
    """(p, 2) int64: pairs of faces sharing an edge (manifold or not: every pair on an edge)."""
    m = len(faces)
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    fid = np.tile(np.arange(m), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, fid = e[order], fid[order]
    same = np.all(e[1:] == e[:-1], axis=1)
    pairs = np.stack([fid[:-1][same], fid[1:][same]], axis=1)
    return pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64)


class OrientationCheck:
    """Flips and folds of many shapes of one rest mesh (the neighbourhoods computed once).

    rest : (n, 3) float; faces : (m, 3) int; rings : vertex rings of a triangle's local rotation
    """

    def __init__(self, rest: np.ndarray, faces: np.ndarray, rings: int = 2) -> None:
        self.rest = np.asarray(rest, np.float64)
        self.faces = np.asarray(faces, np.int64)
        n = len(self.rest)
        A = vertex_adjacency(Mesh(self.rest, self.faces).edges, n) + sp.identity(n, format="csr")
        N = A
        for _ in range(rings - 1):
            N = N @ A
        N = (N > 0).astype(np.float64)
        self._ring = (sp.diags(1.0 / np.asarray(N.sum(axis=1)).ravel()) @ N).tocsr()
        self.ref = triangle_cross(self.rest, self.faces)
        ref_area = np.linalg.norm(self.ref, axis=1)
        # degenerate rest triangles have no orientation to keep
        self.oriented = ref_area > 1e-10 * max(float(ref_area.max(initial=0.0)), 1e-300)
        self.pairs = adjacent_face_pairs(self.faces)
        self._rest_folded = self._folded(self.rest)

    # incidences for the checks after a few vertices moved (made on first use)
    @cached_property
    def _vertex_faces(self) -> sp.csr_matrix:
        """(n, m) vertex -> faces."""
        m = len(self.faces)
        return sp.csr_matrix((np.ones(3 * m), (self.faces.ravel(), np.repeat(np.arange(m), 3))), shape=(len(self.rest), m))

    @cached_property
    def _face_pairs(self) -> sp.csr_matrix:
        """(m, p) face -> fold pairs (rows of ``pairs``)."""
        p = len(self.pairs)
        return sp.csr_matrix((np.ones(2 * p), (self.pairs.ravel(), np.repeat(np.arange(p), 2))), shape=(len(self.faces), p))

    @cached_property
    def _ring_rest(self) -> np.ndarray:
        """(n, 3) the rest mesh's ring means."""
        return self._ring @ self.rest

    @cached_property
    def _face_sum(self) -> sp.csr_matrix:
        """(m, n) face -> its three corners (a face's covariance is its corners' sum)."""
        m = len(self.faces)
        return sp.csr_matrix((np.ones(3 * m), (np.repeat(np.arange(m), 3), self.faces.ravel())), shape=(m, len(self.rest)))

    def _rotation_rows(self, fitted: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
        """(9, k): per face (or per face of the index array ``faces``), the row-major entries of the
        best rotation of the rings around it, rest -> fitted."""
        rest, rm = self.rest, self._ring_rest
        if faces is None:
            ring = self._ring
        else:  # only the rows of the faces' vertices, and the columns of their rings
            verts, tri = np.unique(self.faces[faces], return_inverse=True)
            ring, rm = self._ring[verts], rm[verts]
            cols = np.unique(ring.indices)
            ring, rest, fitted = ring[:, cols], rest[cols], fitted[cols]
        xm = ring @ fitted
        outer = (rest[:, :, None] * fitted[:, None, :]).reshape(len(rest), 9)
        C = (ring @ outer) - (rm[:, :, None] * xm[:, None, :]).reshape(-1, 9)  # (vertices, 9)
        Cf = self._face_sum @ C if faces is None else C[tri.reshape(-1, 3)].sum(axis=1)
        return best_rotations_flat(Cf.T)

    def flipped(self, fitted: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
        """(m,) bool: triangles facing against the rest triangle under the local rotation
        (collapsed ones included; degenerate rest triangles never); with ``faces`` (k,) int, only
        those triangles, (k,) bool."""
        sel = slice(None) if faces is None else faces
        R = self._rotation_rows(fitted, faces)
        ref = self.ref[sel]
        cross = triangle_cross(fitted, self.faces[sel])
        dot = sum(cross[:, r] * (R[3 * r] * ref[:, 0] + R[3 * r + 1] * ref[:, 1] + R[3 * r + 2] * ref[:, 2])
                  for r in range(3))  # the current normal against the carried rest one
        return self.oriented[sel] & (dot <= 0)

    def flipped_after_moving(self, flipped: np.ndarray, fitted: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """:meth:`flipped` of ``fitted`` (n, 3), given its answer ``flipped`` (m,) bool for a shape
        that differs from ``fitted`` only at the ``moved`` (n,) bool vertices: only the triangles
        with a corner within the rings of a moved vertex are tested again."""
        # the rings are symmetric: the vertices whose rings hold a moved vertex are the moved ones' rings
        near = self.faces_of(np.unique(self._ring[np.nonzero(moved)[0]].indices))
        out = flipped.copy()
        if len(near):
            out[near] = self.flipped(fitted, near)
        return out

    def faces_of(self, vertices: np.ndarray) -> np.ndarray:
        """(k,) int64 sorted: the faces with a corner among ``vertices`` (indices)."""
        return np.unique(self._vertex_faces[np.asarray(vertices, np.int64)].indices).astype(np.int64)

    def pairs_of(self, faces: np.ndarray) -> np.ndarray:
        """(k,) int64 sorted: rows of ``pairs`` with a face among ``faces`` (indices)."""
        return np.unique(self._face_pairs[np.asarray(faces, np.int64)].indices).astype(np.int64)

    def _folded(self, v: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
        pr = self.pairs if pairs is None else self.pairs[pairs]
        if pairs is None:
            nrm = triangle_cross(v, self.faces)
        else:  # the normals of the pairs' faces only
            used, pr = np.unique(pr, return_inverse=True)
            pr = pr.reshape(-1, 2)
            nrm = triangle_cross(v, self.faces[used])
        nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)
        return (nrm[pr[:, 0]] * nrm[pr[:, 1]]).sum(axis=1) < np.cos(np.radians(FOLD_ANGLE_DEG))

    def new_fold_mask(self, fitted: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
        """(p,) bool: per row of ``pairs``, folded onto each other in ``fitted`` but not in the rest
        mesh; with ``pairs`` (k,) int (rows), only those, (k,) bool."""
        rest = self._rest_folded if pairs is None else self._rest_folded[pairs]
        return self._folded(fitted, pairs) & ~rest

    def new_folds(self, fitted: np.ndarray) -> np.ndarray:
        """(k, 2) int64: adjacent face pairs folded onto each other in ``fitted`` but not in the rest mesh."""
        return self.pairs[self.new_fold_mask(fitted)]


def flipped_faces(rest: np.ndarray, fitted: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One-shot :meth:`OrientationCheck.flipped`."""
    return OrientationCheck(rest, faces).flipped(np.asarray(fitted, np.float64))


def new_folds(rest: np.ndarray, fitted: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One-shot :meth:`OrientationCheck.new_folds`."""
    return OrientationCheck(rest, faces).new_folds(np.asarray(fitted, np.float64))


def edge_stretch(rest: np.ndarray, fitted: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(e,) float: each edge's length ratio fitted / rest over the global ratio (1 = unchanged
    apart from the overall scale); degenerate rest edges left out."""
    mesh = Mesh(rest, faces)
    e = mesh.edges
    lr = np.linalg.norm(rest[e[:, 0]] - rest[e[:, 1]], axis=1)
    lf = np.linalg.norm(fitted[e[:, 0]] - fitted[e[:, 1]], axis=1)
    ok = lr > 1e-12 * max(float(lr.max(initial=0.0)), 1e-300)
    scale = np.sqrt(Mesh(fitted, faces).area / max(mesh.area, 1e-300))  # the overall (area) scale
    return lf[ok] / (lr[ok] * max(scale, 1e-300))


def fit_quality(rest: np.ndarray, fitted: np.ndarray, faces: np.ndarray, distance: np.ndarray, diagonal: float,
                supported: np.ndarray | None = None) -> dict:
    """Summary of a fitted mesh: flipped faces and new folds (count and % of faces), edge stretch
    (p1 / p99 of the length ratio) and the distance to the target (median / p99, % of ``diagonal``;
    also over the ``supported`` vertices, where the target has the surface to lie on).

    rest, fitted : (n, 3) float; faces : (m, 3) int; distance : (n,) float to the target surface
    """
    rest, fitted = np.asarray(rest, np.float64), np.asarray(fitted, np.float64)
    faces = np.asarray(faces, np.int64)
    m = len(faces)
    check = OrientationCheck(rest, faces)
    flips = int(check.flipped(fitted).sum())
    folds = len(check.new_folds(fitted))
    st = edge_stretch(rest, fitted, faces)
    d = 100.0 * np.asarray(distance, np.float64) / diagonal
    out = {
        "faces": m, "flipped": flips, "flipped_pct": round(100.0 * flips / max(m, 1), 3),
        "folds": folds, "folds_pct": round(100.0 * folds / max(m, 1), 3),
        "stretch_p1": round(float(np.percentile(st, 1)), 3) if len(st) else None,
        "stretch_p99": round(float(np.percentile(st, 99)), 3) if len(st) else None,
        "dist_median_pct": round(float(np.median(d)), 4), "dist_p99_pct": round(float(np.percentile(d, 99)), 4),
    }
    if supported is not None and np.any(supported):
        ds = d[np.asarray(supported, bool)]
        out["supported_pct"] = round(100.0 * float(np.mean(supported)), 2)
        out["dist_p99_supported_pct"] = round(float(np.percentile(ds, 99)), 4)
    return out
