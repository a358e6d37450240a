"""The rasteriser interface: per-pixel triangle id, barycentrics, depth, normal, mask.

Both backends (``torch_raster`` on any device, ``nvdiffrast_raster`` on CUDA)
produce the triangle id and perspective-correct barycentrics of the nearest
triangle at every pixel centre; depth and normals are then derived from those
here, identically for every backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BackendUnavailable, InputError
from .cameras import Cameras

BACKENDS = ("auto", "torch", "nvdiffrast")


@dataclass
class Raster:
    """Rasterisation of one mesh seen from K cameras at resolution (H, W).

    Attributes
    ----------
    triangle_id : (K, H, W) int64 torch, -1 on background
    bary : (K, H, W, 3) float32 perspective-correct barycentrics (0 on background)
    depth : (K, H, W) float32 view depth (0 on background)
    normal : (K, H, W, 3) float32 unit world-space normal, interpolated from
        area-weighted vertex normals (0 on background)
    mask : (K, H, W) bool, True where a triangle covers the pixel centre
    backend : which backend produced it
    """

    triangle_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    mask: torch.Tensor
    backend: str = "torch"

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.mask.shape[1]), int(self.mask.shape[2])

    def interpolate(self, attributes: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Interpolate per-vertex attributes at every pixel.

        attributes : (n, C) torch (any float dtype)
        faces : (m, 3) int64 torch
        returns : (K, H, W, C), zero on background
        """
        k, h, w = self.mask.shape
        idx, vals = self.interpolate_covered(attributes, faces)
        out = torch.zeros(k * h * w, attributes.shape[1], dtype=vals.dtype, device=vals.device)
        out[idx] = vals
        return out.reshape(k, h, w, -1)

    def interpolate_covered(self, attributes: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`interpolate` on the covered pixels only: their flat indices (P,) into K * H * W and
        values (P, C)."""
        idx = self.mask.reshape(-1).nonzero().squeeze(1)
        corners = faces[self.triangle_id.reshape(-1)[idx]]  # (P, 3)
        b = self.bary.reshape(-1, 3)[idx].to(attributes.dtype)
        return idx, (attributes[corners] * b.unsqueeze(-1)).sum(1)


def vertex_normals_torch(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(n, 3) area-weighted unit vertex normals (zero for isolated vertices); differentiable
    (the registration's normal loss goes through it)."""
    v = vertices[faces]
    fn = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    n = torch.zeros_like(vertices)
    for k in range(3):
        n = n.index_add(0, faces[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def finish_raster(
    vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, triangle_id: torch.Tensor, bary: torch.Tensor, backend: str
) -> Raster:
    """Build a :class:`Raster` from triangle ids and barycentrics (shared by every backend)."""
    mask = triangle_id >= 0
    k, h, w = mask.shape
    bary = bary * mask.unsqueeze(-1).to(bary.dtype)
    # derived quantities only on covered pixels
    idx = mask.reshape(-1).nonzero().squeeze(1)
    corners = faces[triangle_id.reshape(-1)[idx]]  # (P, 3)
    b = bary.reshape(-1, 3)[idx].to(torch.float32)
    view = idx // (h * w)
    v = vertices.to(torch.float32)
    vh = torch.cat([v, torch.ones_like(v[:, :1])], dim=1)
    zview = -(vh @ cameras.world_to_view[:, 2, :].T.to(v.dtype)).T  # (K, n) view depth of every vertex
    dep = (zview[view[:, None], corners] * b).sum(-1)
    vn = vertex_normals_torch(v, faces)
    nrm = (vn[corners] * b.unsqueeze(-1)).sum(1)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    depth = torch.zeros(k * h * w, dtype=torch.float32, device=v.device)
    depth[idx] = dep
    normal = torch.zeros(k * h * w, 3, dtype=torch.float32, device=v.device)
    normal[idx] = nrm
    return Raster(triangle_id, bary.to(torch.float32), depth.reshape(k, h, w), normal.reshape(k, h, w, 3), mask, backend)


def _check_inputs(vertices, faces, cameras, resolution) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    if not isinstance(cameras, Cameras):
        raise InputError(f"rasterize: cameras must be engine.render.cameras.Cameras, got {type(cameras).__name__}")
    vertices = torch.as_tensor(vertices)
    faces = torch.as_tensor(faces)
    if vertices.dim() != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise InputError(f"rasterize: vertices must have shape (n, 3) with n > 0, got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise InputError(f"rasterize: faces must have shape (m, 3) with m > 0, got {tuple(faces.shape)}")
    if faces.dtype.is_floating_point:
        raise InputError("rasterize: faces must be an integer tensor")
    faces = faces.to(torch.int64)
    if int(faces.min()) < 0 or int(faces.max()) >= len(vertices):
        raise InputError(f"rasterize: face index out of range for {len(vertices)} vertices")
    if not bool(torch.isfinite(vertices).all()):
        raise InputError("rasterize: vertices contain NaN or infinite coordinates")
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    try:
        h, w = (int(resolution[0]), int(resolution[1]))
    except (TypeError, ValueError, IndexError):
        raise InputError(f"rasterize: resolution must be an int or (H, W), got {resolution!r}") from None
    if h < 1 or w < 1 or h > 8192 or w > 8192:
        raise InputError(f"rasterize: resolution must be between 1 and 8192 pixels per side, got {(h, w)}")
    return vertices, faces, (h, w)


def nvdiffrast_status(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether the nvdiffrast backend can run (and why not)."""
    if not torch.cuda.is_available():
        return False, "nvdiffrast needs CUDA, and CUDA is not available on this machine"
    if device is not None and torch.device(device).type != "cuda":
        return False, f"nvdiffrast rasterises on CUDA tensors only (got device {torch.device(device)})"
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA extension build
        return False, f"nvdiffrast is not installed or failed to load ({exc.__class__.__name__}); install it with: pip install diffrp-nvdiffrast"
    return True, "ok"


def rasterize(vertices, faces, cameras: Cameras, resolution, backend: str = "auto") -> Raster:
    """Rasterise a triangle mesh from K cameras.

    Parameters
    ----------
    vertices : (n, 3) float torch (on the device to render on)
    faces : (m, 3) int torch
    cameras : Cameras (K views), moved to the vertices' device
    resolution : int or (H, W)
    backend : "auto" (nvdiffrast on CUDA when installed, else torch), "torch" or "nvdiffrast"

    Raises
    ------
    InputError : malformed inputs
    BackendUnavailable : "nvdiffrast" requested without CUDA or without the package
    """
    if backend not in BACKENDS:
        raise InputError(f"rasterize: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    vertices, faces, res = _check_inputs(vertices, faces, cameras, resolution)
    cams = cameras.to(vertices.device)
    faces = faces.to(vertices.device)
    if backend == "auto":
        ok, _ = nvdiffrast_status(vertices.device)
        backend = "nvdiffrast" if ok else "torch"
    if backend == "nvdiffrast":
        ok, why = nvdiffrast_status(vertices.device)
        if not ok:
            raise BackendUnavailable(f"rasterize: {why}")
        from .nvdiffrast_raster import rasterize_ids

        tid, bary = rasterize_ids(vertices, faces, cams, res)
    else:
        from .torch_raster import rasterize_ids

        tid, bary = rasterize_ids(vertices, faces, cams, res)
    return finish_raster(vertices, faces, cams, tid, bary, backend)
