"""Shading rasterised meshes into images for 2D feature extraction.

- ``shade_lambert``: grey clay look (headlight diffuse + ambient) from the
  per-pixel normals: what feature backbones see when a mesh has no colour;
- ``shade_normals``: world normals mapped to RGB;
- ``shade_albedo``: the mesh's own colour (vertex colours or a UV texture),
  lit like the clay render.

Images are (K, 3, H, W) float32 in [0, 1] with a uniform background.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .cameras import Cameras
from .raster import Raster


@dataclass
class Appearance:
    """Optional colour of a mesh.

    vertex_colors : (n, 3) float in [0, 1], or None
    face_uv : (m, 3, 2) float corner UVs of every face, or None
    texture : (Ht, Wt, 3) float32 in [0, 1], or a path loaded on use, or None (with face_uv)
    """

    vertex_colors: np.ndarray | None = None
    face_uv: np.ndarray | None = None
    texture: np.ndarray | None = None

    @property
    def has_color(self) -> bool:
        return self.vertex_colors is not None or (self.face_uv is not None and self.texture is not None)

    def fingerprint(self) -> bytes:
        """Bytes that change whenever the colour does (for cache keys)."""
        parts = []
        for a in (self.vertex_colors, self.face_uv, self.texture):
            parts.append(b"-" if a is None else np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return b"|".join(parts)


def appearance_from_prepared(prepared, texture=None, vertex_colors=None) -> Appearance | None:
    """Colour of a :class:`~engine.mesh.PreparedMesh` for rendering.

    texture : an (H, W, 3) image array or a path (loaded when rendering; an
        unreadable file falls back to clay shading with a warning); used with the
        file's corner UVs (``prepared.uv``), ignored when the mesh has none
    vertex_colors : (n_clean, 3) colours of the clean vertices
    """
    if vertex_colors is not None:
        return Appearance(vertex_colors=np.asarray(vertex_colors, dtype=np.float32))
    if texture is None or prepared.uv is None:
        return None
    face_uv = np.asarray(prepared.uv, dtype=np.float32)[prepared.face_to_orig]
    return Appearance(face_uv=face_uv, texture=texture)


def load_texture(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) float32 in [0, 1].

    Raises InputError (one line) when the file is missing or not a readable image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: texture file not found")
    try:
        from PIL import Image

        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read texture image ({exc.__class__.__name__})") from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{os.path.basename(path)}: texture image is empty")
    return arr


def _compose(color: torch.Tensor, raster: Raster, background: float) -> torch.Tensor:
    m = raster.mask.unsqueeze(-1).to(color.dtype)
    img = color * m + background * (1 - m)
    return img.permute(0, 3, 1, 2).contiguous().clamp(0, 1)


def shade_lambert(raster: Raster, cameras: Cameras, vertices: torch.Tensor, faces: torch.Tensor, background: float = 1.0,
                  albedo: torch.Tensor | None = None, ambient: float = 0.35) -> torch.Tensor:
    """Clay (or albedo) shading with a headlight: (K, 3, H, W) float32.

    Lit on the covered pixels only (|cos| between the normal and the direction to the camera),
    the background filled in: the pixels' values are those of lighting whole images."""
    k, h, w = raster.mask.shape
    idx, pts = raster.interpolate_covered(vertices.to(torch.float32), faces)
    cams = cameras.to(vertices.device)
    to_cam = cams.positions[idx // (h * w)].to(pts.dtype) - pts
    to_cam = to_cam / to_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    light = ambient + (1.0 - ambient) * (raster.normal.reshape(-1, 3)[idx] * to_cam).sum(-1).abs()
    base = albedo.reshape(-1, albedo.shape[-1])[idx] if albedo is not None else torch.full_like(pts, 0.8)
    img = torch.full((k * h * w, 3), float(background), dtype=torch.float32, device=pts.device)
    img[idx] = (base * light.unsqueeze(-1)).to(torch.float32)
    return img.reshape(k, h, w, 3).permute(0, 3, 1, 2).contiguous().clamp(0, 1)


def shade_normals(raster: Raster, background: float = 1.0) -> torch.Tensor:
    """World normals as colours ``0.5 * n + 0.5``: (K, 3, H, W) float32."""
    return _compose(raster.normal * 0.5 + 0.5, raster, background)


def albedo_image(raster: Raster, faces: torch.Tensor, appearance: Appearance) -> torch.Tensor:
    """Per-pixel base colour (K, H, W, 3) from vertex colours or a UV texture."""
    dev = raster.bary.device
    if appearance.vertex_colors is not None:
        vc = torch.as_tensor(np.asarray(appearance.vertex_colors, dtype=np.float32), device=dev)
        return raster.interpolate(vc[:, :3], faces).clamp(0, 1)
    fuv = torch.as_tensor(np.asarray(appearance.face_uv, dtype=np.float32), device=dev)  # (m, 3, 2)
    tex = torch.as_tensor(np.asarray(appearance.texture, dtype=np.float32), device=dev)  # (Ht, Wt, 3)
    tid = raster.triangle_id.clamp_min(0)
    uv = (fuv[tid] * raster.bary.unsqueeze(-1)).sum(-2)  # (K, H, W, 2)
    uv = torch.remainder(uv, 1.0)  # wrap (repeat) like most DCC tools
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)  # v=0 is the bottom of the image
    k = grid.shape[0]
    t = tex.permute(2, 0, 1).unsqueeze(0).expand(k, -1, -1, -1)
    col = F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return col.permute(0, 2, 3, 1)


def validate_appearance(appearance: Appearance | None, n_vertices: int, n_faces: int, name: str = "mesh") -> Appearance | None:
    """Check shapes; returns None (normal shading) when there is no usable colour.

    Raises InputError for colour arrays of the wrong shape.
    """
    if appearance is None or not appearance.has_color:
        return None
    if appearance.vertex_colors is not None:
        vc = np.asarray(appearance.vertex_colors)
        if vc.ndim != 2 or vc.shape[0] != n_vertices or vc.shape[1] < 3:
            raise InputError(f"{name}: vertex colours must have shape ({n_vertices}, 3), got {vc.shape}")
        if not np.all(np.isfinite(vc[:, :3])):
            raise InputError(f"{name}: vertex colours contain NaN or infinite values")
    else:
        fuv = np.asarray(appearance.face_uv)
        if fuv.shape != (n_faces, 3, 2):
            raise InputError(f"{name}: face UVs must have shape ({n_faces}, 3, 2), got {fuv.shape}")
        tex = np.asarray(appearance.texture)
        if tex.ndim != 3 or tex.shape[2] < 3 or tex.shape[0] < 1 or tex.shape[1] < 1:
            raise InputError(f"{name}: texture must be an (H, W, 3) image, got shape {tex.shape}")
        if not np.all(np.isfinite(fuv)):
            raise InputError(f"{name}: face UVs contain NaN or infinite values")
    return appearance


def shade(raster: Raster, cameras: Cameras, vertices: torch.Tensor, faces: torch.Tensor,
          appearance: Appearance | None = None, mode: str = "lambert", background: float = 1.0) -> torch.Tensor:
    """Render images for feature extraction: (K, 3, H, W) float32 in [0, 1].

    mode : "lambert" (clay, or lit albedo when ``appearance`` has colour) or "normal"
    """
    if mode not in ("lambert", "normal"):
        raise InputError(f"shade: unknown shading mode {mode!r}; use 'lambert' or 'normal'")
    if appearance is not None and appearance.has_color:
        alb = albedo_image(raster, faces, appearance)
        return shade_lambert(raster, cameras, vertices, faces, background, albedo=alb)
    if mode == "normal":
        return shade_normals(raster, background)
    return shade_lambert(raster, cameras, vertices, faces, background)
