"""Pure-torch rasteriser (CPU, CUDA, MPS): vectorised over triangles, tiled by bounding boxes.

Every triangle is projected to pixel space and its pixel bounding box computed.
Triangles are grouped by the width and height of that box (rounded up to powers
of two), and each group
tests all (triangle, pixel-in-box) pairs at once with edge functions at pixel
centres. Covered pairs then compete in a z-buffer (``scatter_reduce`` amin on
depth, ties broken by the lowest triangle id). The work is proportional to the
summed bounding-box areas, which for meshes with many small triangles is a few
times the number of covered pixels.

Triangles with a vertex in front of the near plane or beyond the far plane are
skipped (orbit cameras place both planes well outside the object).
"""
from __future__ import annotations

import torch

from .cameras import Cameras

# (triangle, pixel) pairs evaluated per chunk; bounds peak memory (~40 bytes a pair)
CHUNK_PAIRS = 1 << 22


@torch.no_grad()
def rasterize_ids(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, resolution: tuple[int, int]):
    """Triangle id and perspective-correct barycentrics at every pixel centre.

    vertices : (n, 3) float torch; faces : (m, 3) int64 torch on the same device
    returns : triangle_id (K, H, W) int64 (-1 background), bary (K, H, W, 3) float32
    """
    h, w = resolution
    dev = vertices.device
    k = len(cameras)
    m = faces.shape[0]
    xy, wv = cameras.project(vertices.to(torch.float32), resolution)  # (K, n, 2), (K, n)
    fx = xy[..., 0][:, faces]  # (K, m, 3)
    fy = xy[..., 1][:, faces]
    fw = wv[:, faces]
    near = cameras.near

    x0, y0 = fx[..., 0], fy[..., 0]
    e1x, e1y = fx[..., 1] - x0, fy[..., 1] - y0
    e2x, e2y = fx[..., 2] - x0, fy[..., 2] - y0
    area = e1x * e2y - e2x * e1y
    jmin = torch.ceil(fx.min(-1).values - 0.5).clamp(0, w - 1)
    jmax = torch.floor(fx.max(-1).values - 0.5).clamp(-1, w - 1)
    imin = torch.ceil(fy.min(-1).values - 0.5).clamp(0, h - 1)
    imax = torch.floor(fy.max(-1).values - 0.5).clamp(-1, h - 1)
    # boxes entirely off-screen end up with max < min after clamping
    jmax = torch.where(fx.max(-1).values - 0.5 < 0, torch.full_like(jmax, -1), jmax)
    imax = torch.where(fy.max(-1).values - 0.5 < 0, torch.full_like(imax, -1), imax)
    jmin = torch.where(fx.min(-1).values - 0.5 > w - 1, torch.full_like(jmin, w), jmin)
    imin = torch.where(fy.min(-1).values - 0.5 > h - 1, torch.full_like(imin, h), imin)
    valid = (
        (fw.min(-1).values > near)
        & (fw.max(-1).values < cameras.far)
        & (area.abs() > 1e-12)
        & (jmax >= jmin)
        & (imax >= imin)
        & torch.isfinite(area)
    )
    bw = (jmax - jmin + 1).clamp_min(1)
    bh = (imax - imin + 1).clamp_min(1)

    # flatten views: global triangle index t = view * m + face
    sel = valid.reshape(-1).nonzero().squeeze(1)
    flat = lambda t: t.reshape(-1)[sel]  # noqa: E731
    X0, Y0, E1X, E1Y, E2X, E2Y = (flat(t) for t in (x0, y0, e1x, e1y, e2x, e2y))
    INV = 1.0 / flat(area)
    JMIN, JMAX, IMIN, IMAX = (flat(t).to(torch.int64) for t in (jmin, jmax, imin, imax))
    IW = (1.0 / flat(fw[..., 0]), 1.0 / flat(fw[..., 1]), 1.0 / flat(fw[..., 2]))
    VIEW = sel // m
    # bucket by the box's width and height rounded up to powers of two (slivers stay cheap)
    lw = torch.ceil(torch.log2(flat(bw).to(torch.float32))).to(torch.int64)
    lh = torch.ceil(torch.log2(flat(bh).to(torch.float32))).to(torch.int64)
    bucket = lh * 32 + lw

    pix_l, tri_l, dep_l, bary_l = [], [], [], []
    for b in torch.unique(bucket).tolist():
        sh, sw = 1 << (int(b) // 32), 1 << (int(b) % 32)
        ids = (bucket == b).nonzero().squeeze(1)
        dy, dx = torch.meshgrid(torch.arange(sh, device=dev), torch.arange(sw, device=dev), indexing="ij")
        dy, dx = dy.reshape(1, -1), dx.reshape(1, -1)
        per = max(1, CHUNK_PAIRS // (sh * sw))
        for c0 in range(0, len(ids), per):
            t = ids[c0 : c0 + per]
            px = JMIN[t, None] + dx
            py = IMIN[t, None] + dy
            ok = (px <= JMAX[t, None]) & (py <= IMAX[t, None])
            cx = px.to(torch.float32) + 0.5 - X0[t, None]
            cy = py.to(torch.float32) + 0.5 - Y0[t, None]
            b1 = (cx * E2Y[t, None] - E2X[t, None] * cy) * INV[t, None]
            b2 = (E1X[t, None] * cy - cx * E1Y[t, None]) * INV[t, None]
            b0 = 1.0 - b1 - b2
            ok &= (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
            flat_ok = ok.reshape(-1).nonzero().squeeze(1)
            if len(flat_ok) == 0:
                continue
            tt = t[flat_ok // (sh * sw)]
            q = torch.stack([b0.reshape(-1)[flat_ok] * IW[0][tt], b1.reshape(-1)[flat_ok] * IW[1][tt],
                             b2.reshape(-1)[flat_ok] * IW[2][tt]], dim=1)
            sq = q.sum(1)
            pix_l.append(VIEW[tt] * (h * w) + py.reshape(-1)[flat_ok] * w + px.reshape(-1)[flat_ok])
            tri_l.append(sel[tt])
            dep_l.append(1.0 / sq)
            bary_l.append(q / sq[:, None])

    tid = torch.full((k * h * w,), -1, dtype=torch.int64, device=dev)
    bary = torch.zeros(k * h * w, 3, dtype=torch.float32, device=dev)
    if pix_l:
        pix = torch.cat(pix_l)
        tri = torch.cat(tri_l)
        dep = torch.cat(dep_l)
        bar = torch.cat(bary_l)
        zbuf = torch.full((k * h * w,), float("inf"), device=dev).scatter_reduce(0, pix, dep, "amin")
        win = dep <= zbuf[pix]
        pix, tri, bar = pix[win], tri[win], bar[win]
        big = torch.iinfo(torch.int64).max
        tbuf = torch.full((k * h * w,), big, dtype=torch.int64, device=dev).scatter_reduce(0, pix, tri, "amin")
        fin = tri == tbuf[pix]
        tid[pix[fin]] = tri[fin] % m
        bary[pix[fin]] = bar[fin]
    return tid.reshape(k, h, w), bary.reshape(k, h, w, 3)
