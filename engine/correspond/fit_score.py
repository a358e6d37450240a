"""The one energy that ranks candidate fits of a match (lower is better).

score = metric distortion of the fitted map (how much it changes geodesic
distances between 48 farthest-point samples, relative to their mean) + the
area-weighted mean mismatch of unit WKS descriptors between matched points
+ twice the share of the source's area beyond one half whose mapped triangles
are turned against the target's surface (a mirror).
A fit that puts a limb on the wrong limb, or turns a body round, distorts
geodesic distances and pairs points whose descriptors disagree. Both terms are
blind to a left/right mirror of a symmetric body (the mirror is an isometry
that keeps every descriptor): what sees it is orientation. A map that keeps
the surface's orientation carries each source triangle to a target triangle
that faces the way the target does; a mirror turns (nearly) all of them round.
Only a majority turned counts (the term is 0 up to one half), so fits that
keep the orientation score exactly as by the first two terms, and a full
mirror adds about 1 (race scores seen on faust5k, smal_r and tosca: 0.1-0.4).
Body keypoints (engine.correspond.keypoint_pairs) also see left/right by name.
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
        mirror = 2.0 * max(0.0, turned_share(self.source.mesh, self.target.mesh, s2t) - 0.5)
        return distortion + mismatch + mirror, distortion

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
    p = target.vertices[corners]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    kept = (corners[:, 0] != corners[:, 1]) & (corners[:, 1] != corners[:, 2]) & (corners[:, 0] != corners[:, 2])
    facing = np.einsum("md,md->m", normal, target.vertex_normals[corners].sum(axis=1))
    area = source.face_areas
    total = float(area[kept].sum())
    return float(area[kept & (facing < 0)].sum()) / total if total > 0 else 0.0
