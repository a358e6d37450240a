"""Geodesic distances: heat method (potpourri3d) with a graph-Dijkstra fallback."""
from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import dijkstra

from ..mesh import Mesh


class GeodesicSolver:
    """Precompute once per mesh, then distances from any vertex set.

    Uses potpourri3d's heat method (intrinsic Delaunay, robust on poor meshes);
    falls back to Dijkstra on the edge graph where that fails (non-manifold
    meshes). Distances between different components are ``inf``.
    """

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.method = "heat"
        self.fallback_reason: str | None = None  # why the graph distances are used, where they are
        self._solver = None
        try:
            import potpourri3d as pp3d

            if mesh.n_components != 1 or mesh.non_manifold_edge_count:
                raise ValueError("heat method needs one manifold component")
            self._solver = pp3d.MeshHeatMethodDistanceSolver(mesh.vertices, mesh.faces)
        except Exception as exc:
            self.method = "dijkstra"
            self.fallback_reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__

    def distances(self, sources) -> np.ndarray:
        """(n,) float64 distance from the nearest of ``sources`` (vertex index or list) to every vertex."""
        src = np.atleast_1d(np.asarray(sources, np.int64))
        if self._solver is not None:
            if len(src) == 1:
                return np.asarray(self._solver.compute_distance(int(src[0])), np.float64)
            return np.asarray(self._solver.compute_distance_multisource(src.tolist()), np.float64)
        d = dijkstra(self.mesh.adjacency, directed=False, indices=src, min_only=True)
        return np.asarray(d, np.float64)

    def distance_matrix(self, sources) -> np.ndarray:
        """(s, n) float64 distances from each source vertex separately."""
        src = np.atleast_1d(np.asarray(sources, np.int64))
        if self._solver is None:
            return np.asarray(dijkstra(self.mesh.adjacency, directed=False, indices=src), np.float64)
        return np.stack([self.distances(int(s)) for s in src])


def geodesic_distances(mesh: Mesh, sources) -> np.ndarray:
    """One-shot :meth:`GeodesicSolver.distances`."""
    return GeodesicSolver(mesh).distances(sources)


def farthest_extremities(solver: GeodesicSolver, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Extremities of a shape (hands, feet, head, tail tip) by farthest-point sampling on geodesics.

    The first is the vertex farthest from the one nearest the area centroid; each next one
    is the farthest from those picked. Stops early when no vertex is left at a positive
    finite distance. Returns picks (k,) int64 and their distance fields (k, n) float64
    (``inf`` across components).
    """
    mesh = solver.mesh
    centroid = (mesh.vertices * mesh.vertex_areas[:, None]).sum(0) / mesh.vertex_areas.sum()
    d0 = solver.distances(int(np.argmin(np.linalg.norm(mesh.vertices - centroid, axis=1))))
    picks = [int(np.argmax(np.where(np.isfinite(d0), d0, -1.0)))]
    fields = [solver.distances(picks[0])]
    dmin = fields[0].copy()
    while len(picks) < count:
        finite = np.where(np.isfinite(dmin), dmin, -1.0)
        nxt = int(np.argmax(finite))
        if nxt in picks or finite[nxt] <= 0:
            break
        picks.append(nxt)
        fields.append(solver.distances(nxt))
        dmin = np.minimum(dmin, fields[-1])
    return np.asarray(picks, np.int64), np.stack(fields)
