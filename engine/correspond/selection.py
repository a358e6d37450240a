"""Choosing between candidate correspondences without ground truth.

A map is scored by its metric distortion (how much it changes geodesic
distances between sample points: near zero for a good map between
near-isometric shapes, large when a limb lands on the wrong part) plus its
extrinsic displacement after rigid alignment (which separates a map from its
left-right mirror image, which has the same distortion).
"""
from __future__ import annotations

import numpy as np

from ..geometry.geodesic import GeodesicSolver
from ..mesh import Mesh


def farthest_point_sample(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices (n,) int64 of a farthest-point sample of ``points`` (p, 3)."""
    rng = np.random.default_rng(seed)
    n = min(n, len(points))
    idx = np.empty(n, np.int64)
    idx[0] = rng.integers(len(points))
    d = np.linalg.norm(points - points[idx[0]], axis=1)
    for i in range(1, n):
        idx[i] = int(np.argmax(d))
        d = np.minimum(d, np.linalg.norm(points - points[idx[i]], axis=1))
    return idx


class MapScorer:
    """Scores source -> target vertex maps (lower is better).

    Parameters
    ----------
    source, target : Mesh in the common frame (source rigidly aligned)
    n_samples : number of farthest-point samples on the source
    w_displacement : weight of the mean extrinsic displacement (in units of sqrt(area))
    """

    def __init__(self, source: Mesh, target: Mesh, n_samples: int = 48, w_displacement: float = 0.25, seed: int = 0,
                 source_geodesics: GeodesicSolver | None = None, target_geodesics: GeodesicSolver | None = None) -> None:
        """``source_geodesics`` / ``target_geodesics``: solvers of the same meshes already built (a pair context's)."""
        self.source, self.target = source, target
        self.samples = farthest_point_sample(source.vertices, n_samples, seed)
        geo_s = source_geodesics or GeodesicSolver(source)
        self.D_s = geo_s.distance_matrix(self.samples)[:, self.samples]
        self.geo_t = target_geodesics or GeodesicSolver(target)
        self.w_displacement = w_displacement
        self._area_s = source.vertex_areas / source.vertex_areas.sum()

    def distortion(self, s2t: np.ndarray) -> float:
        img = s2t[self.samples]
        D_t = self.geo_t.distance_matrix(img)[:, img]
        ok = np.isfinite(self.D_s) & np.isfinite(D_t)
        denom = np.abs(self.D_s[ok]).mean() + 1e-12
        return float(np.abs(self.D_s[ok] - D_t[ok]).mean() / denom)

    def displacement(self, s2t: np.ndarray, source_points: np.ndarray | None = None) -> float:
        x = self.source.vertices if source_points is None else source_points
        return float((self._area_s * np.linalg.norm(x - self.target.vertices[s2t], axis=1)).sum())

    def score(self, s2t: np.ndarray) -> float:
        return self.distortion(s2t) + self.w_displacement * self.displacement(s2t)
