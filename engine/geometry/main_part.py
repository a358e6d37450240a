"""The main connected part of a mesh, where spectral quantities are computed."""
from __future__ import annotations

import numpy as np


class SpectralPart:
    """The part of a mesh that spectral quantities are computed on: its largest connected component.

    Loose small parts (eyes, teeth, buttons) would each add a zero eigenvalue and
    indicator-like eigenfunctions that wreck functional maps between meshes with
    different numbers of parts. Per-vertex spectral features are computed on the
    main part and extended to the other vertices from the nearest main-part vertex.
    """

    def __init__(self, mesh) -> None:
        from scipy.spatial import cKDTree

        from ..mesh import Mesh

        main = mesh.components == 0
        if main.all():
            self.mesh, self.index, self._extend = mesh, np.arange(mesh.n_vertices), None
            return
        self.index = np.nonzero(main)[0]
        remap = np.full(mesh.n_vertices, -1, np.int64)
        remap[self.index] = np.arange(len(self.index))
        faces = remap[mesh.faces[main[mesh.faces].all(axis=1)]]
        self.mesh = Mesh(mesh.vertices[self.index], faces, mesh.name)
        _, nn = cKDTree(self.mesh.vertices).query(mesh.vertices)
        nn[self.index] = np.arange(len(self.index))
        self._extend = nn

    def extend(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex values on the main part (n_main, ...) -> every vertex (n, ...)."""
        return values if self._extend is None else values[self._extend]

    def restrict(self, values: np.ndarray) -> np.ndarray:
        return values[self.index]

    def to_main(self, vertices: np.ndarray) -> np.ndarray:
        """Vertex indices of the whole mesh -> the nearest vertex of the main part (its own indices)."""
        vertices = np.asarray(vertices, np.int64)
        return vertices if self._extend is None else self._extend[vertices]
