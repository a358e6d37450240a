"""Feature distillation: an MLP on Fourier-encoded vertex positions reproducing 2D backbone features.

As in BSB / iSeg, the mesh is rendered from several views, each view is
encoded by a 2D backbone (DINOv2), and an MLP ``f(x)`` of the vertex position
is trained so that its per-vertex outputs, interpolated over the rendered
triangles exactly as the rasteriser interpolates attributes, reproduce the
per-pixel features (mean squared error). The result is one feature vector per
vertex that is consistent across views, defined on occluded vertices too, and
in the backbone's feature space (so it compares with the pixels of a photo).

Architecture (the paper's, narrower by default for CPUs): Fourier encoding of
the normalised position, ``layers`` linear layers of ``width`` units with ReLU
and LayerNorm, a final linear layer with tanh.

>>> samples = render_samples(mesh, dino, views=8, resolution=224)
>>> feats = distill_from_samples(mesh, *samples)          # (n, C) float32, unit rows
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from ..mesh import Mesh
from ..optim import Adam
from ..progress import Progress


@dataclass
class DistillSettings:
    layers: int = 6
    width: int = 256
    n_freqs: int = 8
    steps: int = 400
    lr: float = 1e-3
    batch: int = 8192
    seed: int = 0


def fourier_encode(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """(n, 3) positions in about [-1, 1] -> (n, 3 + 6 n_freqs): x, sin(2^k pi x), cos(2^k pi x)."""
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * np.pi
    ang = x[:, :, None] * freqs  # (n, 3, L)
    return torch.cat([x, torch.sin(ang).flatten(1), torch.cos(ang).flatten(1)], dim=1)


class FeatureMLP(nn.Module):
    """Fourier features -> (layers - 1) x [Linear, LayerNorm, ReLU] -> Linear -> tanh."""

    def __init__(self, out_dim: int, layers: int = 6, width: int = 256, n_freqs: int = 8) -> None:
        super().__init__()
        self.n_freqs = n_freqs
        dims = [3 + 6 * n_freqs] + [width] * (layers - 1)
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
        blocks.append(nn.Linear(dims[-1], out_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(fourier_encode(x, self.n_freqs)))


def normalised_positions(vertices: np.ndarray) -> np.ndarray:
    """Vertices scaled into [-1, 1] by their bounding box (keeps proportions)."""
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    return ((v - (lo + hi) / 2) / max(float((hi - lo).max()) / 2, 1e-12)).astype(np.float32)


def distill_from_samples(
    mesh: Mesh,
    face_ids: np.ndarray,
    bary: np.ndarray,
    features: np.ndarray,
    settings: DistillSettings | None = None,
    device="cpu",
    progress: Progress | None = None,
) -> np.ndarray:
    """Train the MLP on pixel samples and return per-vertex features.

    face_ids : (s,) int   triangle seen at each sample (pixel)
    bary : (s, 3) float   barycentrics of the pixel centre in that triangle
    features : (s, C) float   backbone feature of the pixel
    Returns (n, C) float32 unit-norm rows.
    """
    st = settings or DistillSettings()
    face_ids = np.asarray(face_ids, np.int64).reshape(-1)
    bary = np.asarray(bary, np.float32).reshape(-1, 3)
    feats = np.asarray(features, np.float32)
    if len(face_ids) == 0:
        raise InputError(f"{mesh.name}: no rendered pixels to distil features from (is the mesh in view?)")
    if len(bary) != len(face_ids) or feats.ndim != 2 or len(feats) != len(face_ids):
        raise InputError(f"distillation: samples disagree ({len(face_ids)} faces, {len(bary)} barycentrics, {feats.shape} features)")
    if face_ids.min() < 0 or face_ids.max() >= mesh.n_faces:
        raise InputError(f"{mesh.name}: sample face index out of range")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(st.seed)
    torch.manual_seed(st.seed)
    # targets in the tanh range: features are unit vectors, scale so entries use the range
    scale = float(np.quantile(np.abs(feats), 0.99)) or 1.0
    tgt = torch.as_tensor(np.clip(feats / scale, -0.99, 0.99), device=dev)
    pos = torch.as_tensor(normalised_positions(mesh.vertices), device=dev)
    corners = torch.as_tensor(mesh.faces[face_ids], device=dev)
    b = torch.as_tensor(bary, device=dev)
    model = FeatureMLP(feats.shape[1], st.layers, st.width, st.n_freqs).to(dev)
    opt = Adam(model.parameters(), lr=st.lr)
    s = len(face_ids)
    for step in range(st.steps):
        idx = torch.randint(0, s, (min(st.batch, s),), generator=gen).to(dev)
        used, inv = torch.unique(corners[idx], return_inverse=True)
        out = model(pos[used])  # only the vertices this batch touches
        pred = (out[inv] * b[idx].unsqueeze(-1)).sum(1)
        loss = F.mse_loss(pred, tgt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None and step % 20 == 0:
            progress.update(step / st.steps)
    with torch.no_grad():
        out = model(pos).float()
    return F.normalize(out, dim=1).cpu().numpy().astype(np.float32)


def render_samples(mesh: Mesh, backbone, views: int = 8, resolution: int = 224, elevations=(20.0, -15.0),
                   device="cpu", max_samples: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the mesh, encode every view with ``backbone`` and collect pixel samples.

    backbone : callable (K, 3, H, W) float in [0, 1] -> (K, C, h, w) feature maps
    Returns face_ids (s,) int64, bary (s, 3) float32, features (s, C) float32.
    """
    from ..render import orbit_cameras, rasterize
    from ..render.cameras import bounding_radius
    from ..render.shading import shade

    dev = torch.device(device)
    v = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=dev)
    f = torch.as_tensor(mesh.faces, dtype=torch.int64, device=dev)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    center = (lo + hi) / 2
    cams = orbit_cameras(views, elevations, device=dev, center=center, fit_radius=bounding_radius(mesh.vertices, center=center))
    raster = rasterize(v, f, cams, resolution)
    images = shade(raster, cams, v, f, None)
    with torch.no_grad():
        fmap = backbone(images)
        fmap = F.interpolate(fmap.float(), size=raster.resolution, mode="bilinear", align_corners=False)
    m = raster.mask
    faces = raster.triangle_id[m].cpu().numpy()
    bary = raster.bary[m].cpu().numpy()
    feats = fmap.permute(0, 2, 3, 1)[m].cpu().numpy()
    if len(faces) > max_samples:
        keep = np.random.default_rng(seed).choice(len(faces), max_samples, replace=False)
        faces, bary, feats = faces[keep], bary[keep], feats[keep]
    return faces.astype(np.int64), bary.astype(np.float32), feats.astype(np.float32)


def distilled_features(mesh: Mesh, backbone, backbone_label: str = "dino", views: int = 8, resolution: int = 224,
                       settings: DistillSettings | None = None, device="cpu", cache_dir=None,
                       progress: Progress | None = None) -> np.ndarray:
    """Per-vertex distilled backbone features of a mesh, cached on disk per mesh and settings.

    cache_dir : None for the default feature cache folder, False for no cache.
    Returns (n, C) float32 unit rows.
    """
    st = settings or DistillSettings()
    cache = key = None
    if cache_dir is not False:
        from ..features.cache import FeatureCache, mesh_key

        cache = FeatureCache(cache_dir or None)
        key = mesh_key(mesh.vertices, mesh.faces, {"kind": "bsb-distill", "backbone": backbone_label, "views": views,
                                                   "resolution": resolution, **asdict(st)})
        hit = cache.get(key)
        if hit is not None and "features" in hit:
            return np.asarray(hit["features"], np.float32)
    if progress is not None:
        progress.stage("distil features")
    samples = render_samples(mesh, backbone, views, resolution, device=device)
    feats = distill_from_samples(mesh, *samples, settings=st, device=device, progress=progress)
    if cache is not None:
        cache.put(key, {"features": feats.astype(np.float16)})
    return feats
