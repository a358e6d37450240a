"""Camera rigs for multi-view rendering.

Conventions (shared by every rasteriser backend):

- world -> view: a rigid transform; the camera looks along its -z axis, +y is up
  in the image (OpenGL style);
- view -> clip: a standard perspective projection; ``depth`` is the positive
  distance along the viewing axis (``-z_view``);
- pixels: ``x`` grows to the right, ``y`` grows downwards (row 0 is the top of
  the image); pixel ``(i, j)`` (row ``i``, column ``j``) has its centre at
  ``(j + 0.5, i + 0.5)`` in pixel units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError

_UP_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


@dataclass
class Cameras:
    """A batch of K pinhole cameras with a shared field of view.

    Attributes
    ----------
    world_to_view : (K, 4, 4) float32 torch
    projection : (K, 4, 4) float32 torch (view -> clip)
    positions : (K, 3) float32 torch camera centres in world coordinates
    fov : vertical field of view in degrees
    near, far : clip planes (view depth)
    """

    world_to_view: torch.Tensor
    projection: torch.Tensor
    positions: torch.Tensor
    fov: float
    near: float
    far: float

    def __len__(self) -> int:
        return int(self.world_to_view.shape[0])

    @property
    def device(self) -> torch.device:
        return self.world_to_view.device

    def to(self, device) -> "Cameras":
        return Cameras(
            self.world_to_view.to(device),
            self.projection.to(device),
            self.positions.to(device),
            self.fov,
            self.near,
            self.far,
        )

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(self.world_to_view[idx], self.projection[idx], self.positions[idx], self.fov, self.near, self.far)

    def clip(self, points: torch.Tensor) -> torch.Tensor:
        """Clip-space coordinates.

        points : (n, 3) or (K, n, 3) float torch
        returns : (K, n, 4) float32
        """
        p = points.to(self.world_to_view.dtype)
        if p.dim() == 2:
            p = p.unsqueeze(0).expand(len(self), -1, -1)
        ones = torch.ones_like(p[..., :1])
        ph = torch.cat([p, ones], dim=-1)
        full = self.projection @ self.world_to_view  # (K, 4, 4)
        return ph @ full.transpose(1, 2)

    def project(self, points: torch.Tensor, resolution: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates and view depth of points (differentiable).

        points : (n, 3) or (K, n, 3) float torch
        resolution : (H, W)
        returns : xy (K, n, 2) pixel units (x right, y down), depth (K, n)
        """
        h, w = resolution
        c = self.clip(points)
        wc = c[..., 3]
        safe = torch.where(wc.abs() < 1e-9, torch.full_like(wc, 1e-9), wc)
        ndc_x = c[..., 0] / safe
        ndc_y = c[..., 1] / safe
        x = (ndc_x + 1.0) * 0.5 * w
        y = (1.0 - ndc_y) * 0.5 * h
        return torch.stack([x, y], dim=-1), wc

    def view_directions(self, points: torch.Tensor) -> torch.Tensor:
        """Unit vectors from each point towards each camera: (K, n, 3)."""
        d = self.positions[:, None, :] - points.to(self.positions.dtype)[None]
        return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """World -> view matrices (K, 4, 4) for cameras at ``eye`` (K, 3) looking at ``target`` (3,)."""
    forward = target[None] - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.cross(forward, up.expand_as(forward), dim=-1)
    bad = right.norm(dim=-1) < 1e-6  # looking straight along the up axis
    if bool(bad.any()):
        alt = torch.roll(up, 1).expand_as(forward)
        right = torch.where(bad[:, None], torch.cross(forward, alt, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.cross(right, forward, dim=-1)
    k = eye.shape[0]
    m = torch.zeros(k, 4, 4, dtype=eye.dtype, device=eye.device)
    m[:, 0, :3] = right
    m[:, 1, :3] = true_up
    m[:, 2, :3] = -forward
    m[:, 0, 3] = -(right * eye).sum(-1)
    m[:, 1, 3] = -(true_up * eye).sum(-1)
    m[:, 2, 3] = (forward * eye).sum(-1)
    m[:, 3, 3] = 1.0
    return m


def perspective(fov_deg: float, near: float, far: float, k: int, device) -> torch.Tensor:
    """OpenGL perspective projections (K, 4, 4), square aspect."""
    f = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    p = torch.zeros(4, 4, dtype=torch.float32, device=device)
    p[0, 0] = f
    p[1, 1] = f
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -2.0 * far * near / (far - near)
    p[3, 2] = -1.0
    return p.expand(k, 4, 4).clone()


def orbit_cameras(
    k: int = 8,
    elevations: Sequence[float] = (20.0, -10.0),
    radius: float | None = None,
    fov: float = 40.0,
    device="cpu",
    center: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
    fit_radius: float = 1.0,
    up: str = "y",
    azimuth_offset: float = 0.0,
) -> Cameras:
    """K cameras on an orbit around ``center``.

    View ``i`` has azimuth ``azimuth_offset + 360 * i / k`` degrees and elevation
    ``elevations[i % len(elevations)]``, so consecutive views alternate between
    the elevations while going round the object.

    Parameters
    ----------
    k : number of views (>= 1)
    elevations : degrees above the horizontal plane, each in (-90, 90)
    radius : camera distance from ``center``; None -> chosen so that a sphere
        of radius ``fit_radius`` around ``center`` fills the view with a margin
    fov : vertical field of view in degrees, in (1, 170)
    up : world up axis, "x", "y" or "z"
    """
    if int(k) < 1:
        raise InputError(f"cameras: the number of views must be >= 1 (got {k})")
    if not (1.0 < float(fov) < 170.0):
        raise InputError(f"cameras: fov must be between 1 and 170 degrees (got {fov})")
    elevations = [float(e) for e in elevations] or [0.0]
    if any(not (-90.0 < e < 90.0) for e in elevations):
        raise InputError(f"cameras: elevations must lie strictly between -90 and 90 degrees (got {elevations})")
    if up not in _UP_AXES:
        raise InputError(f"cameras: up axis must be one of x, y, z (got {up!r})")
    if not (fit_radius > 0 and math.isfinite(fit_radius)):
        raise InputError(f"cameras: fit_radius must be a positive number (got {fit_radius})")
    if radius is None:
        radius = 1.1 * fit_radius / math.sin(math.radians(fov) / 2.0)
    if not (radius > 0 and math.isfinite(radius)):
        raise InputError(f"cameras: radius must be a positive number (got {radius})")
    k = int(k)
    up_v = torch.tensor(_UP_AXES[up], dtype=torch.float32)
    # two horizontal axes completing a right-handed frame with up
    a1 = torch.roll(up_v, 1)  # y-up -> x... (x,y,z)->(z,x,y)
    a2 = torch.cross(up_v, a1, dim=0)
    az = torch.tensor([math.radians(azimuth_offset + 360.0 * i / k) for i in range(k)])
    el = torch.tensor([math.radians(elevations[i % len(elevations)]) for i in range(k)])
    dirs = (
        torch.cos(el)[:, None] * (torch.sin(az)[:, None] * a1[None] + torch.cos(az)[:, None] * a2[None])
        + torch.sin(el)[:, None] * up_v[None]
    )
    c = torch.as_tensor(np.asarray(center, dtype=np.float32).reshape(3))
    eye = c[None] + float(radius) * dirs
    w2v = look_at(eye, c, up_v)
    near = max(1e-3, float(radius) - 2.0 * fit_radius) * 0.5
    far = float(radius) + 2.0 * fit_radius
    proj = perspective(float(fov), near, far, k, "cpu")
    return Cameras(w2v.to(device), proj.to(device), eye.to(device), float(fov), near, far)


def bounding_radius(*vertex_arrays: np.ndarray, center=(0.0, 0.0, 0.0)) -> float:
    """Largest distance from ``center`` over all given (n, 3) vertex arrays."""
    c = np.asarray(center, dtype=np.float64).reshape(1, 3)
    r = 0.0
    for v in vertex_arrays:
        v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
        if len(v):
            r = max(r, float(np.sqrt(((v - c) ** 2).sum(1)).max()))
    return r if r > 0 else 1.0


def aimed_cameras(center, front, up, fit_radius: float, azimuths=(0.0,), elevations=(0.0,), fov: float = 40.0,
                  device="cpu") -> Cameras:
    """Cameras looking at ``center`` from around the direction ``front``, upright along ``up``
    (any unit vectors, not only the world axes: a face seen from in front of it).

    One camera per (azimuth, elevation) in degrees, turned about ``up`` and then towards it from
    ``front``; each at the distance where a sphere of ``fit_radius`` round ``center`` fills the
    view with a margin (as ``orbit_cameras``).

    center, front, up : (3,) float (front and up need not be orthogonal; up is made so)
    """
    c = np.asarray(center, np.float64).reshape(3)
    f = np.asarray(front, np.float64).reshape(3)
    u = np.asarray(up, np.float64).reshape(3)
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(f)) and np.all(np.isfinite(u))):
        raise InputError("cameras: center, front and up must be finite")
    f = f / max(np.linalg.norm(f), 1e-30)
    u = u - f * float(u @ f)
    if np.linalg.norm(u) < 1e-9:
        raise InputError("cameras: up must not be parallel to front")
    u = u / np.linalg.norm(u)
    side = np.cross(u, f)
    if not (fit_radius > 0 and math.isfinite(fit_radius)):
        raise InputError(f"cameras: fit_radius must be a positive number (got {fit_radius})")
    radius = 1.1 * fit_radius / math.sin(math.radians(fov) / 2.0)
    dirs = []
    for el in elevations:
        for az in azimuths:
            a, e = math.radians(float(az)), math.radians(float(el))
            dirs.append(math.cos(e) * (math.cos(a) * f + math.sin(a) * side) + math.sin(e) * u)
    dirs_t = torch.as_tensor(np.array(dirs), dtype=torch.float32)
    ct = torch.as_tensor(c, dtype=torch.float32)
    eye = ct[None] + float(radius) * dirs_t
    w2v = look_at(eye, ct, torch.as_tensor(u, dtype=torch.float32))
    near = max(1e-3, float(radius) - 2.0 * fit_radius) * 0.5
    far = float(radius) + 2.0 * fit_radius
    proj = perspective(float(fov), near, far, len(dirs), "cpu")
    return Cameras(w2v.to(device), proj.to(device), eye.to(device), float(fov), near, far)


def sphere_cameras(center, directions: np.ndarray, fit_radius: float, fov: float = 40.0, device="cpu") -> Cameras:
    """Cameras looking at ``center`` from each of ``directions`` (d, 3) (unit vectors from the
    centre to the camera), at the distance where a sphere of ``fit_radius`` fills the view with a
    margin; each upright along the world axis least aligned with its direction."""
    d = np.asarray(directions, np.float64).reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    if not (fit_radius > 0 and math.isfinite(fit_radius)):
        raise InputError(f"cameras: fit_radius must be a positive number (got {fit_radius})")
    radius = 1.1 * fit_radius / math.sin(math.radians(fov) / 2.0)
    c = torch.as_tensor(np.asarray(center, np.float64).reshape(3), dtype=torch.float32)
    eye = c[None] + float(radius) * torch.as_tensor(d, dtype=torch.float32)
    mats = []
    for i, di in enumerate(d):
        up = np.eye(3)[int(np.argmin(np.abs(di)))]
        mats.append(look_at(eye[i:i + 1], c, torch.as_tensor(up, dtype=torch.float32)))
    w2v = torch.cat(mats)
    near = max(1e-3, float(radius) - 2.0 * fit_radius) * 0.5
    far = float(radius) + 2.0 * fit_radius
    proj = perspective(float(fov), near, far, len(d), "cpu")
    return Cameras(w2v.to(device), proj.to(device), eye.to(device), float(fov), near, far)
