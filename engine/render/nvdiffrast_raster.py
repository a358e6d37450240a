"""nvdiffrast backend (CUDA only; the ``diffrp-nvdiffrast`` package provides ``nvdiffrast.torch``).

nvdiffrast returns, per pixel, ``(u, v, z/w, triangle_id + 1)`` where the
barycentrics weight vertices 0 and 1 (the third weight is ``1 - u - v``) and
row 0 is the bottom of the image (clip-space y = -1). We flip the rows so the
output follows :mod:`engine.render.cameras` (row 0 at the top).
"""
from __future__ import annotations

import threading

import torch

from .cameras import Cameras

_contexts: dict[int, object] = {}
_lock = threading.Lock()


def _context(device: torch.device):
    import nvdiffrast.torch as dr

    idx = device.index if device.index is not None else torch.cuda.current_device()
    with _lock:
        ctx = _contexts.get(idx)
        if ctx is None:
            ctx = dr.RasterizeCudaContext(device=torch.device("cuda", idx))
            _contexts[idx] = ctx
    return ctx


@torch.no_grad()
def rasterize_ids(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, resolution: tuple[int, int]):
    """Same contract as :func:`engine.render.torch_raster.rasterize_ids`."""
    import nvdiffrast.torch as dr

    h, w = resolution
    pos = cameras.clip(vertices.to(torch.float32)).contiguous()
    tri = faces.to(torch.int32).contiguous()
    rast, _ = dr.rasterize(_context(vertices.device), pos, tri, resolution=[h, w])
    rast = torch.flip(rast, dims=[1])
    tid = rast[..., 3].round().to(torch.int64) - 1
    u, v = rast[..., 0], rast[..., 1]
    bary = torch.stack([u, v, 1.0 - u - v], dim=-1).to(torch.float32)
    return tid, bary
