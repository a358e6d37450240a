"""Discrete differential operators on triangle meshes.

Layout convention: the gradient operator ``G`` is (3m, n) with row ``3*f + k``
holding d/dx_k on face ``f``; so ``(G @ X).reshape(m, 3, 3)[f, k, c]`` is the
derivative of coordinate ``c`` along axis ``k``. The per-face Jacobian of a
map ``X`` is the transpose of that, ``J[f, c, k]``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..arrays import triangle_cross


def face_areas_normals(vertices: np.ndarray, faces: np.ndarray, eps: float = 1e-20):
    """Face areas (m,) float64 and unit normals (m, 3) float64 (areas clamped to ``eps``)."""
    cr = triangle_cross(vertices, faces)
    dbl = np.linalg.norm(cr, axis=1)
    area = np.maximum(0.5 * dbl, eps)
    n = cr / np.maximum(dbl, eps)[:, None]
    return area, n


def gradient_operator(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Per-face gradient of piecewise-linear functions.

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, 3) int

    Returns
    -------
    G : (3m, n) scipy.sparse.csr_matrix, float64
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    m, n = len(faces), len(vertices)
    area, normal = face_areas_normals(vertices, faces)
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    # grad phi_i = (N x e_i) / (2A), e_i the edge opposite vertex i, oriented ccw
    e0, e1, e2 = v2 - v1, v0 - v2, v1 - v0
    grads = [np.cross(normal, e) / (2.0 * area[:, None]) for e in (e0, e1, e2)]  # each (m, 3)
    rows = (3 * np.arange(m)[:, None] + np.arange(3)[None, :])  # (m, 3)
    r = np.concatenate([rows.ravel()] * 3)
    c = np.concatenate([np.repeat(faces[:, i], 3) for i in range(3)])
    d = np.concatenate([g.ravel() for g in grads])
    return sp.csr_matrix((d, (r, c)), shape=(3 * m, n))


def face_mass(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(3m,) float64 face areas repeated per gradient row (the diagonal of M in G^T M G)."""
    area, _ = face_areas_normals(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    return np.repeat(area, 3)


def vertex_mass(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(n,) float64 lumped vertex areas (one third of the adjacent face areas)."""
    area, _ = face_areas_normals(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    out = np.zeros(len(vertices))
    for k in range(3):
        np.add.at(out, faces[:, k], area / 3.0)
    return out


def cotan_laplacian(vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """(n, n) positive semi-definite cotan Laplacian ``G^T M G`` (the stiffness matrix)."""
    G = gradient_operator(vertices, faces)
    M = sp.diags(face_mass(vertices, faces))
    return (G.T @ M @ G).tocsr()


def jacobians(vertices: np.ndarray, faces: np.ndarray, G: sp.csr_matrix | None = None) -> np.ndarray:
    """(m, 3, 3) float64 per-face Jacobians ``J[f, c, k] = d x_c / d x_k`` of the identity map restricted to faces
    (the projection onto each face's tangent plane) or of any vertex function given with another G."""
    if G is None:
        G = gradient_operator(vertices, faces)
    m = len(faces)
    return np.asarray(G @ np.asarray(vertices, np.float64)).reshape(m, 3, 3).transpose(0, 2, 1)
