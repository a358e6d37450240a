"""Laplace-Beltrami eigenbasis (robust Laplacian, generalised eigenproblem)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from ..mesh import Mesh


def laplacian_and_mass(mesh: Mesh):
    """Robust (intrinsic-Delaunay) cotan Laplacian L (n, n) PSD and lumped mass M (n, n) diagonal.

    Works on non-manifold meshes and point-like defects (robust_laplacian).
    """
    import robust_laplacian

    L, M = robust_laplacian.mesh_laplacian(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))
    return L.tocsc(), M.tocsc()


class SpectralBasis:
    """The first ``k`` Laplace-Beltrami eigenpairs of a mesh.

    Attributes
    ----------
    evals : (k,) float64 ascending
    evecs : (n, k) float64, M-orthonormal
    mass : (n,) float64 lumped vertex areas
    """

    def __init__(self, mesh: Mesh, k: int = 100) -> None:
        L, M = laplacian_and_mass(mesh)
        n = L.shape[0]
        k = int(min(k, n - 2))
        self.mass = np.asarray(M.diagonal(), np.float64)
        try:
            evals, evecs = eigsh(L, k=k, M=M, sigma=-1e-6, which="LM", tol=1e-8)
        except Exception:
            evals, evecs = eigsh(L + 1e-8 * sp.eye(n), k=k, M=M, sigma=0.0, which="LM")
        order = np.argsort(evals)
        self.evals = np.maximum(evals[order], 0.0)
        self.evecs = evecs[:, order]

    @property
    def k(self) -> int:
        return len(self.evals)

    def project(self, f: np.ndarray, k: int | None = None) -> np.ndarray:
        """Spectral coefficients (k, ...) of vertex functions f (n, ...)."""
        k = k or self.k
        return self.evecs[:, :k].T @ (self.mass.reshape(-1, *([1] * (f.ndim - 1))) * f)
