"""The one energy that ranks candidate fits of a match (lower is better).

score = metric distortion of the fitted map (how much it changes geodesic
distances between 48 farthest-point samples, relative to their mean) + the
area-weighted mean mismatch of unit WKS descriptors between matched points.
A fit that puts a limb on the wrong limb, or turns a body round, distorts
geodesic distances and pairs points whose descriptors disagree. Both terms are
blind to a left/right mirror of a symmetric body: body keypoints
(engine.correspond.keypoint_pairs) are what sees that.
"""
from __future__ import annotations

import numpy as np

from .selection import MapScorer


class FitScorer:
    """Scores deformed sources of one pair.

    source, target : engine.pair_context.MeshContext (their WKS, trees and geodesic solvers are reused)
    """

    def __init__(self, source, target, seed: int = 0) -> None:
        self.source, self.target = source, target
        self.map_scorer = MapScorer(source.mesh, target.mesh, seed=seed, source_geodesics=source.full_geodesics,
                                    target_geodesics=target.full_geodesics)
        areas = source.mesh.vertex_areas
        self.w_area = areas / max(areas.sum(), 1e-12)

    def nearest_vertices(self, deformed: np.ndarray) -> np.ndarray:
        """(ns,) int64: the nearest target vertex of every deformed source vertex (a quick map to score)."""
        return self.target.tree.query(deformed)[1]

    def score(self, s2t: np.ndarray) -> tuple[float, float]:
        """(score, distortion) of a source -> target vertex map (ns,) int."""
        distortion = self.map_scorer.distortion(s2t)
        mismatch = float((self.w_area * np.linalg.norm(self.source.wks - self.target.wks[s2t], axis=1)).sum())
        return distortion + mismatch, distortion

    def score_deformed(self, deformed: np.ndarray) -> float:
        """The score of a deformed source (ns, 3) through its nearest target vertices."""
        return self.score(self.nearest_vertices(deformed))[0]
