"""Intrinsic geometric descriptors: Wave Kernel Signature (WKS) and Heat Kernel Signature (HKS).

Both are isometry-invariant, so they cannot tell left from right; the
correspondence sources combine them with extrinsic positions after rigid
alignment.
"""
from __future__ import annotations

import numpy as np

from ..arrays import unit_rows
from ..geometry.spectral import SpectralBasis
from ..mesh import Mesh


def wks(basis: SpectralBasis, n_energies: int = 64, k: int | None = None, variance: float = 6.0) -> np.ndarray:
    """Wave Kernel Signature (n, n_energies) float64, each column normalised to unit (area-weighted) norm."""
    k = k or basis.k
    ev = basis.evals[1:k]
    phi = basis.evecs[:, 1:k]
    log_e = np.log(np.maximum(ev, 1e-12))
    e = np.linspace(log_e[0], log_e[-1] / 1.02, n_energies)
    sigma = (e[1] - e[0]) * variance
    coef = np.exp(-((e[:, None] - log_e[None, :]) ** 2) / (2 * sigma**2))  # (E, k)
    desc = (phi**2) @ coef.T  # (n, E)
    desc /= coef.sum(1)[None, :]
    norm = np.sqrt((basis.mass[:, None] * desc**2).sum(0))
    return desc / np.maximum(norm, 1e-12)


def hks(basis: SpectralBasis, n_times: int = 16, k: int | None = None) -> np.ndarray:
    """Heat Kernel Signature (n, n_times) float64 at log-spaced times, column-normalised."""
    k = k or basis.k
    ev = basis.evals[1:k]
    phi = basis.evecs[:, 1:k]
    t = np.geomspace(4 * np.log(10) / max(ev[-1], 1e-9), 4 * np.log(10) / max(ev[0], 1e-9), n_times)
    desc = (phi**2) @ np.exp(-np.outer(ev, t))
    norm = np.sqrt((basis.mass[:, None] * desc**2).sum(0))
    return desc / np.maximum(norm, 1e-12)


def geometric_descriptors(mesh: Mesh, basis: SpectralBasis | None = None, n_wks: int = 64, n_hks: int = 16,
                          k: int = 100) -> np.ndarray:
    """Per-vertex intrinsic descriptor (n, n_wks + n_hks) float32, rows L2-normalised, from the
    first ``k`` eigenpairs (of ``basis`` when given, which must hold the mesh's vertices)."""
    basis = basis or SpectralBasis(mesh, k=k)
    k = min(k, basis.k)
    d = np.concatenate([wks(basis, n_wks, k=k), hks(basis, n_hks, k=k)], axis=1)
    return unit_rows(d).astype(np.float32)
