"""The one energy that ranks candidate fits of a match (lower is better).

score = metric distortion of the fitted map (how much it changes geodesic
distances between 48 farthest-point samples, relative to their mean) + the
area-weighted mean mismatch of unit WKS descriptors between matched points
+ the share of the source's area whose mapped triangles are turned against the
target's surface.
A fit that puts a limb on the wrong limb, or turns a body round, distorts
geodesic distances and pairs points whose descriptors disagree. Both terms are
blind to a left/right mirror of a symmetric body, or of one limb onto its
counterpart (the mirror is an isometry that keeps every descriptor): what sees
it is orientation. A map that keeps the surface's orientation carries each
source triangle to a target triangle that faces the way the target does; a
mirror turns (nearly) all of them round (+1), a leg mapped onto the leg on the
other side turns that leg's share. All three terms are shares or relative
errors of the same order (race scores seen on faust5k, smal_r and tosca:
0.1-0.5), so they add with weight one. The turned share once counted only
beyond one half (a whole mirror); counted in full it changes no decision on the
faust5k and smal_r dev pairs (10 each) and picks the better fit on tosca cat0 ->
cat1 (7.75 -> 4.70) and cat1 -> cat4 (10.92 -> 2.72).
Body keypoints (engine.correspond.keypoint_pairs) also see left/right by name.
"""
from __future__ import annotations

import numpy as np

from ..arrays import triangle_cross
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
        turned = turned_share(self.source.mesh, self.target.mesh, s2t)
        return distortion + mismatch + turned, distortion

    def score_deformed(self, deformed: np.ndarray) -> float:
        """The score of a deformed source (ns, 3) through its nearest target vertices."""
        return self.score(self.nearest_vertices(deformed))[0]


def turned_share(source, target, s2t: np.ndarray) -> float:
    """Share of the source's area whose triangles a vertex map turns against the target's surface.

    source, target : engine.mesh.Mesh (consistently oriented faces); s2t : (ns,) int target vertex
    of every source vertex. A source triangle maps to the triangle of its corners' images; it is
    turned when that triangle's normal points against the target's vertex normals there.
    Triangles whose corners collapse onto fewer than three target vertices are left out.
    Returns a share in [0, 1] (0 when every mapped triangle collapsed).
    """
    corners = s2t[source.faces]  # (m, 3)
    normal = triangle_cross(target.vertices, corners)
    kept = (corners[:, 0] != corners[:, 1]) & (corners[:, 1] != corners[:, 2]) & (corners[:, 0] != corners[:, 2])
    facing = np.einsum("md,md->m", normal, target.vertex_normals[corners].sum(axis=1))
    area = source.face_areas
    total = float(area[kept].sum())
    return float(area[kept & (facing < 0)].sum()) / total if total > 0 else 0.0
