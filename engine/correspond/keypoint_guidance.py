"""Named body keypoints as correspondence: pose-invariant descriptors and a soft guidance term.

Keypoints (``engine.keypoints.detect``) are joint estimates: a few centimetres
off the surface point an artist would click. They are used softly:

- ``keypoint_distance_features``: geodesic distance from every vertex to each
  keypoint. Intrinsic (a pose change keeps them) and, unlike spectral
  descriptors, they tell left from right and front from back, since the
  keypoints have sides. Functional maps and the vertex guidance take them as
  extra descriptor columns.
- ``KeypointGuidance``: the centroid of the surface around each source joint
  should land on the centroid around the matching target joint (a ring round a
  limb averages to its axis, so the joint-to-surface offset cancels), weighted
  by confidence, full strength early and released before the end so that the
  surface fit is not pinned to joint approximations.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..geometry.geodesic import GeodesicSolver
from ..mesh import Mesh
from .guidance_source import GuidanceSource


def keypoint_distance_features(mesh: Mesh, keypoint_vertices: np.ndarray, solver: GeodesicSolver | None = None) -> np.ndarray:
    """(n, k) float64 geodesic distance of every vertex to each keypoint vertex (mesh units).

    mesh : the (unit-area, normalised) mesh; keypoint_vertices : (k,) int vertex indices
    """
    solver = solver or GeodesicSolver(mesh)
    return solver.distance_matrix(np.asarray(keypoint_vertices, np.int64)).T


def joint_regions(mesh: Mesh, points: np.ndarray, vertices: np.ndarray, spread: float = 1.5) -> sp.csr_matrix:
    """(k, n) row-stochastic matrix: row i averages (area-weighted) the vertices around joint i.

    points : (k, 3) joint estimates; vertices : (k,) their nearest surface vertices
    spread : a vertex belongs to joint i when it lies within ``spread`` times the joint's
        distance to the surface (a ring round the limb at the joint); 1.5 takes the ring
        without reaching the next limb at a crotch or an armpit
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(mesh.vertices)
    areas = mesh.vertex_areas
    rows, cols, vals = [], [], []
    for i, (p, v) in enumerate(zip(points, vertices)):
        depth = float(np.linalg.norm(mesh.vertices[v] - p))
        near = np.asarray(tree.query_ball_point(p, spread * depth + 1e-9), np.int64) if depth > 0 else np.array([], np.int64)
        if len(near) == 0:
            near = np.array([v], np.int64)
        w = areas[near] / max(areas[near].sum(), 1e-20)
        rows += [i] * len(near)
        cols += near.tolist()
        vals += w.tolist()
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(points), mesh.n_vertices))


class KeypointGuidance(GuidanceSource):
    """Soft joint-to-joint pairs.

    Parameters
    ----------
    source_regions : (k, ns) sparse averaging matrix (``joint_regions`` of the source)
    target_centres : (k, 3) float the matching target joint-region centroids
    weights : (k,) float >= 0 (pair confidences)
    release : (start, end) fractions of the registration over which the weight falls
        linearly from 1 to 0
    """

    name = "keypoints"

    def __init__(self, source_regions: sp.csr_matrix, target_centres: np.ndarray, weights: np.ndarray,
                 release=(0.8, 1.0)) -> None:
        self.regions = source_regions.tocoo()
        self.centres = np.asarray(target_centres, np.float64)
        w = np.asarray(weights, np.float64)
        self.weights = w / max(w.sum(), 1e-12)
        self.release = tuple(float(r) for r in release)
        self.strength = 1.0
        self._torch = None

    @classmethod
    def from_keypoints(cls, source: Mesh, target: Mesh, src_points, src_vertices, tgt_points, tgt_vertices, weights,
                       release=(0.8, 1.0)) -> "KeypointGuidance":
        """Pairs of joints (points (k, 3) and nearest vertices (k,) on each mesh, in the registration's frame)."""
        rs = joint_regions(source, np.asarray(src_points), np.asarray(src_vertices))
        rt = joint_regions(target, np.asarray(tgt_points), np.asarray(tgt_vertices))
        return cls(rs, rt @ target.vertices, weights, release)

    def prepare(self, source: Mesh, target: Mesh, progress=None) -> None:
        pass

    def update(self, deformed: np.ndarray, step: int, fraction: float) -> None:
        a, b = self.release
        self.strength = float(np.clip((b - fraction) / max(b - a, 1e-9), 0.0, 1.0))

    def loss(self, deformed: torch.Tensor) -> torch.Tensor:
        if self.strength <= 0 or len(self.centres) == 0:
            return deformed.sum() * 0.0
        if self._torch is None or self._torch[0].device != deformed.device:
            idx = torch.as_tensor(np.stack([self.regions.row, self.regions.col]), device=deformed.device)
            m = torch.sparse_coo_tensor(idx, torch.as_tensor(self.regions.data, dtype=deformed.dtype, device=deformed.device),
                                        self.regions.shape, check_invariants=False).coalesce()
            self._torch = (m, torch.as_tensor(self.centres, dtype=deformed.dtype, device=deformed.device),
                           torch.as_tensor(self.weights, dtype=deformed.dtype, device=deformed.device))
        m, c, w = self._torch
        d = ((torch.sparse.mm(m, deformed) - c) ** 2).sum(1)
        return self.strength * (w * d).sum()
