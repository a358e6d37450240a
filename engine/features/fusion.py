"""Combining feature modalities: joint (co-)PCA over a pair, sqrt-weighted fusion.

- ``co_pca``: one PCA basis fitted on the rows of both shapes together, so the
  reduced SD blocks of the source and the target live in the same space.
- ``fuse``: every modality is L2-normalised per row, multiplied by
  ``sqrt(weight)`` (weights normalised to sum to 1) and concatenated, so the dot
  product of two fused rows is the weighted mean of the per-modality cosines.

Everything here is torch in, torch out (any device); rows are features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError


def co_pca(a: torch.Tensor, b: torch.Tensor, dim: int, max_fit_rows: int = 200_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Project two feature sets onto their joint top-``dim`` principal components.

    a : (na, C), b : (nb, C) float torch
    returns : (na, q), (nb, q) float32 with q = min(dim, C, na + nb)

    The basis comes from the eigen-decomposition of the joint covariance
    (fitted on at most ``max_fit_rows`` random rows); signs are fixed so that
    the largest-magnitude entry of each component is positive (deterministic).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"co_pca: feature sets must be (n, C) with the same C, got {tuple(a.shape)} and {tuple(b.shape)}")
    if dim < 1:
        raise InputError(f"co_pca: dim must be >= 1, got {dim}")
    x = torch.cat([a, b]).to(torch.float32)
    if len(x) > max_fit_rows:
        g = torch.Generator(device="cpu").manual_seed(seed)
        fit = x[torch.randperm(len(x), generator=g)[:max_fit_rows].to(x.device)]
    else:
        fit = x
    mean = fit.mean(0, keepdim=True)
    c = fit.shape[1]
    q = min(int(dim), c, len(fit))
    if q >= c:
        basis = torch.eye(c, device=x.device)
    else:
        xc = fit - mean
        cov = (xc.T @ xc).cpu().double() / max(1, len(fit) - 1)  # float64 eigh on CPU (MPS has no float64)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        basis = evecs[:, torch.argsort(evals, descending=True)[:q]]
        idx = basis.abs().argmax(0)
        sign = torch.sign(basis[idx, torch.arange(q)])
        basis = (basis * torch.where(sign == 0, torch.ones_like(sign), sign)).float().to(x.device)
    y = (x - mean) @ basis
    return y[: len(a)], y[len(a) :]


def l2_rows(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.to(torch.float32), dim=-1, eps=1e-12)


def fuse(blocks: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """Concatenate L2-normalised modalities with sqrt weights.

    blocks : [(features (n, C_i), weight_i)]; weights >= 0, normalised to sum to 1
    returns : (n, sum C_i) float32 with unit rows (wherever every block is non-zero)
    """
    used = [(x, float(w)) for x, w in blocks if float(w) > 0]
    if not used:
        raise InputError("fuse: at least one modality needs a positive weight")
    n = used[0][0].shape[0]
    if any(x.shape[0] != n for x, _ in used):
        raise InputError("fuse: every modality must have the same number of rows")
    total = sum(w for _, w in used)
    return torch.cat([l2_rows(x) * (w / total) ** 0.5 for x, w in used], dim=1)
