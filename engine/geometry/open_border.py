"""The open border of a triangle mesh (boundary edges: used by one face), and whether a point's
closest surface point lies on it with the point off to the side: no surface under the point (a
hole in a scan, beyond a template's neck cut)."""
from __future__ import annotations

import numpy as np

from ..mesh import Mesh


class OpenBorder:
    """The open border of a triangle mesh: per face and corner k, whether the edge opposite k is
    a boundary edge (used by one face), and the boundary vertices."""

    def __init__(self, mesh: Mesh) -> None:
        faces = np.asarray(mesh.faces, np.int64)
        self.opposite = mesh.opposite_edge_counts == 1
        self.vertex = np.zeros(mesh.n_vertices, bool)
        face, corner = np.nonzero(self.opposite)
        self.vertex[faces[face, (corner + 1) % 3]] = True
        self.vertex[faces[face, (corner + 2) % 3]] = True
        self.faces = faces

    def off_to_the_side(self, face, bary, offset, normals, dist) -> np.ndarray:
        """(p,) bool: the closest point (``face`` (p,), ``bary`` (p, 3)) lies on the border and the
        query point is off to the side of it (``offset`` (p, 3) from the closest point, not along
        the face ``normals`` (p, 3); ``dist`` (p,) its length): no surface under the point."""
        on_rim = ((bary < 1e-9) & self.opposite[face]).any(axis=1)
        corner = np.argmax(bary, axis=1)
        at_vertex = bary[np.arange(len(face)), corner] > 1.0 - 1e-9
        on_rim |= at_vertex & self.vertex[self.faces[face, corner]]
        along = np.abs(np.einsum("ij,ij->i", offset, normals)) >= 0.9 * np.maximum(dist, 1e-300)
        return on_rim & ~along & (dist > 0)
