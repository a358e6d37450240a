"""Closest points on a triangle surface for batches of query points."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Closest point on triangles (a, b, c) to points p, all (..., 3) broadcastable.

    Returns
    -------
    point : (..., 3) float64
    bary : (..., 3) float64 barycentric coordinates of ``point`` w.r.t. (a, b, c)
    """
    ab, ac, ap = b - a, c - a, p - a
    d1 = np.einsum("...i,...i", ab, ap)
    d2 = np.einsum("...i,...i", ac, ap)
    bp = p - b
    d3 = np.einsum("...i,...i", ab, bp)
    d4 = np.einsum("...i,...i", ac, bp)
    cp = p - c
    d5 = np.einsum("...i,...i", ab, cp)
    d6 = np.einsum("...i,...i", ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    shape = np.broadcast(d1, d2).shape
    u = np.zeros(shape)  # weight of b
    w = np.zeros(shape)  # weight of c
    done = np.zeros(shape, bool)

    def put(mask, uu, ww):
        nonlocal done
        m = mask & ~done
        u[m] = np.broadcast_to(uu, shape)[m]
        w[m] = np.broadcast_to(ww, shape)[m]
        done |= m

    with np.errstate(divide="ignore", invalid="ignore"):
        put((d1 <= 0) & (d2 <= 0), 0.0, 0.0)  # vertex a
        put((d3 >= 0) & (d4 <= d3), 1.0, 0.0)  # vertex b
        put((d6 >= 0) & (d5 <= d6), 0.0, 1.0)  # vertex c
        t = d1 / (d1 - d3)
        put((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.nan_to_num(t), 0.0)  # edge ab
        t = d2 / (d2 - d6)
        put((vb <= 0) & (d2 >= 0) & (d6 <= 0), 0.0, np.nan_to_num(t))  # edge ac
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        t = np.nan_to_num(t)
        put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), 1.0 - t, t)  # edge bc
        denom = va + vb + vc
        denom = np.where(np.abs(denom) < 1e-300, 1.0, denom)
        put(np.ones(shape, bool), vb / denom, vc / denom)  # interior
    bary = np.stack([1.0 - u - w, u, w], axis=-1)
    point = a * bary[..., :1] + b * bary[..., 1:2] + c * bary[..., 2:3]
    return point, bary


class SurfaceQuery:
    """Closest-point queries against one triangle mesh (built once, queried many times).

    Candidates are the faces with the nearest centroids; a point whose candidates cannot
    rule out a closer face (a large face nearby) gets more of them, up to
    ``max_candidates``. Exact on meshes with even-sized faces; on meshes mixing tiny and
    huge faces a point may get a face slightly farther than the true closest one.

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, 3) int
    """

    max_candidates = 256  # beyond this many nearest faces (by centroid) a point keeps its best so far

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        tri = self.vertices[self.faces]
        self._centroids = tri.mean(axis=1)
        # radius of each face around its centroid bounds how far a closer face can hide
        self._radius = np.linalg.norm(tri - self._centroids[:, None], axis=2).max(axis=1)
        self._max_radius = float(self._radius.max()) if len(self._radius) else 0.0
        self._tree = cKDTree(self._centroids)

    def closest(self, points: np.ndarray, k: int = 16, chunk: int = 20000):
        """Closest surface point of every query point.

        Parameters
        ----------
        points : (p, 3) float

        Returns
        -------
        face : (p,) int64, bary : (p, 3) float64, point : (p, 3) float64, distance : (p,) float64
        """
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        n = len(pts)
        face = np.zeros(n, np.int64)
        bary = np.zeros((n, 3))
        point = np.zeros((n, 3))
        dist = np.zeros(n)
        k = min(k, len(self.faces))
        for s in range(0, n, chunk):
            q = pts[s : s + chunk]
            f_out, b_out, p_out, d_out = self._query(q, k)
            face[s : s + chunk], bary[s : s + chunk], point[s : s + chunk], dist[s : s + chunk] = f_out, b_out, p_out, d_out
        return face, bary, point, dist

    def _query(self, q: np.ndarray, k: int):
        _, cand = self._tree.query(q, k=k)
        cand = cand.reshape(len(q), k)
        f_out, b_out, p_out, d_out = self._best(q, cand)
        # exactness: a face whose centroid is farther than d + max radius cannot be closer.
        # Points whose k-th candidate does not rule that out get more candidates.
        todo = np.arange(len(q))
        kk = k
        while kk < min(self.max_candidates, len(self.faces)):
            dk = np.linalg.norm(self._centroids[cand[:, -1]] - q[todo], axis=1)
            todo = todo[dk < d_out[todo] + self._max_radius]
            if len(todo) == 0:
                break
            kk = min(kk * 4, self.max_candidates, len(self.faces))
            _, cand = self._tree.query(q[todo], k=kk)
            cand = cand.reshape(len(todo), kk)
            f1, b1, p1, d1 = self._best(q[todo], cand)
            better = d1 < d_out[todo]
            t = todo[better]
            f_out[t], b_out[t], p_out[t], d_out[t] = f1[better], b1[better], p1[better], d1[better]
        return f_out, b_out, p_out, d_out

    def _best(self, q: np.ndarray, cand: np.ndarray):
        tri = self.vertices[self.faces[cand]]  # (p, k, 3, 3)
        pt, bc = closest_point_on_triangles(q[:, None, :], tri[:, :, 0], tri[:, :, 1], tri[:, :, 2])
        d = np.linalg.norm(pt - q[:, None, :], axis=2)
        j = np.argmin(d, axis=1)
        r = np.arange(len(q))
        return cand[r, j], bc[r, j], pt[r, j], d[r, j]


def closest_points(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray):
    """One-shot :meth:`SurfaceQuery.closest`."""
    return SurfaceQuery(vertices, faces).closest(points)
