"""Lifting per-view 2D feature maps onto mesh vertices.

Every vertex is projected into every view; where it is visible (its depth
matches the z-buffer at its pixel, within a tolerance) the feature map is
sampled bilinearly at its projection, with background cells masked out
(feature times mesh coverage, divided by the sampled coverage). Views are averaged with a weight that
favours views facing the surface (``0.1 + |cos|`` between the vertex normal and
the direction to the camera). Vertices seen by no view take the features of
the nearest seen vertex.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..render.cameras import Cameras
from ..render.raster import Raster, vertex_normals_torch


def visibility(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, raster: Raster, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which vertices each view sees, and where.

    vertices : (n, 3) float torch; raster : the mesh rasterised from ``cameras``
    tol : depth tolerance (world units)
    returns : visible (K, n) bool, xy (K, n, 2) pixel coordinates
    """
    h, w = raster.resolution
    xy, depth = cameras.project(vertices.to(torch.float32), (h, w))
    col = xy[..., 0].floor().long()
    row = xy[..., 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (depth > cameras.near) & (depth < cameras.far)
    zbuf = torch.where(raster.mask, raster.depth, torch.full_like(raster.depth, float("inf")))
    k = len(cameras)
    flat = zbuf.reshape(k, -1)
    idx = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    zpix = torch.gather(flat, 1, idx)
    vis = inside & (depth <= zpix + tol)
    return vis, xy


@torch.no_grad()
def lift_to_vertices(
    feature_maps: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    raster: Raster,
    tol: float,
    accum: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate visibility-weighted features of K views on the vertices.

    feature_maps : (K, C, h, w) float torch covering the whole rendered image
    returns : (sum (n, C) float32, weight (n,) float32); pass them back as
        ``accum`` to add more views, then call :func:`finish_lift`.
    """
    k, c = feature_maps.shape[:2]
    n = vertices.shape[0]
    dev = feature_maps.device
    vis, xy = visibility(vertices, faces, cameras, raster, tol)
    h, w = raster.resolution
    normals = vertex_normals_torch(vertices.to(torch.float32), faces)
    to_cam = cameras.view_directions(vertices.to(torch.float32))  # (K, n, 3)
    cos = (to_cam * normals[None]).sum(-1).abs()
    weight = (0.1 + cos) * vis  # (K, n)
    if accum is None:
        total = torch.zeros(n, c, dtype=torch.float32, device=dev)
        wsum = torch.zeros(n, dtype=torch.float32, device=dev)
    else:
        total, wsum = accum
    fh, fw = feature_maps.shape[2:]
    # coverage of every feature cell by the mesh: sampling feature * coverage / coverage keeps
    # background features out of the vertices near the silhouette
    cover = F.adaptive_avg_pool2d(raster.mask[:, None].float(), (fh, fw)).to(dev)  # (K, 1, fh, fw)
    for view in range(k):
        sel = vis[view].nonzero().squeeze(1)
        if len(sel) == 0:
            continue
        g = xy[view, sel].to(dev)
        grid = torch.stack([g[:, 0] / w * 2 - 1, g[:, 1] / h * 2 - 1], dim=-1).view(1, 1, -1, 2)
        cv = cover[view : view + 1]
        both = torch.cat([feature_maps[view : view + 1].float() * cv, cv], dim=1)
        samp = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0, :].T
        cov = samp[:, -1]
        good = cov > 0.05
        sel, cov = sel[good], cov[good]
        samp = samp[good, :-1] / cov[:, None]
        wv = weight[view, sel].to(dev) * cov.clamp(max=1.0)
        total.index_add_(0, sel.to(dev), samp * wv[:, None])
        wsum.index_add_(0, sel.to(dev), wv)
    return total, wsum


def finish_lift(total: torch.Tensor, wsum: torch.Tensor, vertices: np.ndarray, name: str = "mesh") -> tuple[torch.Tensor, np.ndarray]:
    """Average, and fill unseen vertices from the nearest seen one.

    returns : features (n, C) float32 torch, seen (n,) bool numpy
    Raises InputError when no view sees any vertex.
    """
    seen = (wsum > 0).cpu().numpy()
    if not seen.any():
        raise InputError(f"{name}: the mesh is not visible from any camera view; check that it is centred and not degenerate")
    feats = total / wsum.clamp_min(1e-12)[:, None]
    if not seen.all():
        from scipy.spatial import cKDTree

        v = np.asarray(vertices, dtype=np.float64)
        seen_idx = np.nonzero(seen)[0]
        _, nn = cKDTree(v[seen_idx]).query(v[~seen])
        src = torch.as_tensor(seen_idx[np.atleast_1d(nn)], device=feats.device)
        feats[torch.as_tensor(np.nonzero(~seen)[0], device=feats.device)] = feats[src]
    return feats, seen
