"""Points tied to a surface: each point keeps its closest face, its barycentrics there and its
offset from that point in the face's frame, so that the surface deformed carries the points
with it (exact for similarities, smooth for the rest). Working copies carry their full mesh so
(engine.geometry.working_copy), and a template's riding pieces their shells (ride_along)."""
from __future__ import annotations

import numpy as np

from ..mesh import Mesh


def face_frames(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face: (m, 3, 3) orthonormal rows (first edge, in-plane normal to it, normal) and (m,) size
    (the square root of its area)."""
    mesh = Mesh(vertices, faces)
    p = mesh.vertices[mesh.faces]
    e1 = p[:, 1] - p[:, 0]
    e1 = e1 / np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-300)
    n = mesh.face_normals
    return np.stack([e1, np.cross(n, e1), n], axis=1), np.sqrt(np.maximum(mesh.face_areas, 1e-300))


class SurfaceTies:
    """``points`` (p, 3) tied to the surface (vertices (n, 3), faces (m, 3)) at rest.

    face : (p,) int64 closest face; bary : (p, 3) its barycentrics; offset : (p, 3) the point's
    offset from there in the face's frame, in units of the face's size
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> None:
        from .closest import SurfaceQuery

        self.faces = np.asarray(faces, np.int64)
        points = np.asarray(points, np.float64)
        self.face, self.bary, on_surface, _ = SurfaceQuery(vertices, self.faces).closest(points)
        frames, size = face_frames(vertices, self.faces)
        self.offset = np.einsum("kij,kj->ki", frames[self.face], points - on_surface) / size[self.face, None]

    def carry(self, deformed: np.ndarray) -> np.ndarray:
        """(p, 3) float64: the points where the surface deformed to ``deformed`` (n, 3) takes them."""
        deformed = np.asarray(deformed, np.float64)
        frames, size = face_frames(deformed, self.faces)
        point = np.einsum("ij,ijk->ik", self.bary, deformed[self.faces[self.face]])
        return point + np.einsum("kji,kj->ki", frames[self.face], self.offset) * size[self.face, None]
