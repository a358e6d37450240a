"""Rendered semantic flow (Stable-SCore): 2D nearest neighbours between renders guide the deformation.

Both meshes are seen by the same K cameras (they share the normalised,
pre-aligned frame). Every ``update``:

1. the current deformed source is rasterised (triangle id + barycentrics per
   pixel, kept as the *cached source rasterisation*);
2. per-pixel features of both renders are the fused per-vertex semantic
   features interpolated through the rasters (the target raster never changes);
3. per view, every source pixel inside the mask takes its nearest target pixel
   in feature space (cosine), and a cycle check keeps it only if the target
   pixel's own nearest source pixel lands within ``cycle_radius`` pixels
   (mutual nearest neighbours when 0): the confidence mask;
4. optionally, a match filter (e.g. bicyclic geodesic consistency) removes more.

``loss(deformed)`` projects the deformed vertices to 2D, interpolates their
2D positions with the cached source rasterisation (so every confident pixel
knows where its surface point is now) and takes the L1 distance to the
matched target pixel, i.e. the L1 between the rendered displacement and the
semantic flow, in units of the image side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..mesh import Mesh
from ..progress import Progress
from .guidance_source import GuidanceSource
from ..render import orbit_cameras, rasterize
from ..render.cameras import bounding_radius


@dataclass
class FlowMatches:
    """Confident pixel matches of all views (torch, on the guidance device).

    view : (P,) int64; tri : (P,) int64 source triangle under the pixel;
    bary : (P, 3) float32 its barycentrics; target_xy : (P, 2) float32 matched
    target pixel centre; source_xy : (P, 2) float32 source pixel centre;
    target_point : (P, 3) float32 the target surface point seen there;
    target_tri : (P,) int64; similarity : (P,) float32 cosine of the match
    """

    view: torch.Tensor
    tri: torch.Tensor
    bary: torch.Tensor
    source_xy: torch.Tensor
    target_xy: torch.Tensor
    target_point: torch.Tensor
    target_tri: torch.Tensor
    similarity: torch.Tensor

    def __len__(self) -> int:
        return int(self.view.shape[0])

    def subset(self, keep: torch.Tensor) -> "FlowMatches":
        return FlowMatches(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


# MatchFilter(source Mesh, target Mesh, source_vertex (k,) int64, target_point (k, 3), target_face (k,)) -> keep (k,) bool
MatchFilter = Callable[[Mesh, Mesh, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class BicyclicFlowFilter:
    """Bicyclic consistency (3D-SC) of flow matches, through vertex nearest neighbours in feature space.

    A flow match (source vertex s, target point on face f) is kept when, with t the
    nearest corner of f, ``t2s[t]`` lies within ``tau_s`` of s on the source and
    ``s2t[t2s[t]]`` within ``tau_t`` of t on the target, where ``s2t`` / ``t2s`` are
    the feature nearest-neighbour maps between the vertices. This is
    :func:`engine.correspond.filters.bicyclic_consistent` applied to matches that come
    from the renders instead of from ``s2t`` itself. Distances are Euclidean on the
    rest shapes (they agree with geodesics at these radii); meshes are unit area, so
    ``tau`` is a fraction of sqrt(area).

    fs : (ns, d), ft : (nt, d) float per-vertex features (rows comparable)
    """

    def __init__(self, fs: np.ndarray, ft: np.ndarray, tau: float = 0.05, tau_t: float | None = None):
        from .functional_map import nearest_rows

        fs = np.asarray(fs, np.float32)
        ft = np.asarray(ft, np.float32)
        self.s2t = nearest_rows(fs, ft)
        self.t2s = nearest_rows(ft, fs)
        self.tau_s = float(tau)
        self.tau_t = float(tau if tau_t is None else tau_t)

    def __call__(self, source: Mesh, target: Mesh, sv: np.ndarray, tp: np.ndarray, tf: np.ndarray) -> np.ndarray:
        corners = target.faces[tf]  # (k, 3)
        d = np.linalg.norm(target.vertices[corners] - tp[:, None, :], axis=2)
        tv = corners[np.arange(len(tf)), d.argmin(1)]
        back = self.t2s[tv]
        ok_s = np.linalg.norm(source.vertices[back] - source.vertices[sv], axis=1) <= self.tau_s
        ok_t = np.linalg.norm(target.vertices[self.s2t[back]] - target.vertices[tv], axis=1) <= self.tau_t
        return ok_s & ok_t


def nearest_pixels(fs: torch.Tensor, ft: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise argmax of cosine similarity ``fs @ ft.T`` without holding the full matrix.

    fs : (a, d), ft : (b, d) unit rows; returns best index (a,) int64 and its similarity (a,)
    """
    idx, val = [], []
    for i in range(0, len(fs), chunk):
        s = fs[i : i + chunk] @ ft.T
        v, j = s.max(dim=1)
        idx.append(j)
        val.append(v)
    if not idx:
        return torch.zeros(0, dtype=torch.int64, device=fs.device), torch.zeros(0, device=fs.device)
    return torch.cat(idx), torch.cat(val)


def semantic_flow_view(
    feat_s: torch.Tensor, mask_s: torch.Tensor, feat_t: torch.Tensor, mask_t: torch.Tensor,
    cycle_radius: float = 1.5, max_pixels: int = 8192, min_similarity: float = -1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confident nearest-neighbour matches between two rendered feature images.

    feat_s, feat_t : (H, W, d) unit feature per pixel; mask_s, mask_t : (H, W) bool
    cycle_radius : a match p -> q is kept when q's nearest source pixel is within this many pixels of p
    max_pixels : source pixels considered (a regular subsample beyond that)
    returns : source pixel (P,) and target pixel (P,) flat indices (row * W + col), similarity (P,)
    """
    h, w = mask_s.shape
    src = mask_s.reshape(-1).nonzero().squeeze(1)
    tgt = mask_t.reshape(-1).nonzero().squeeze(1)
    empty = torch.zeros(0, dtype=torch.int64, device=feat_s.device)
    if len(src) == 0 or len(tgt) == 0:
        return empty, empty, torch.zeros(0, device=feat_s.device)
    if len(src) > max_pixels:
        src = src[torch.linspace(0, len(src) - 1, max_pixels, device=src.device).round().long()]
    fs = feat_s.reshape(h * w, -1)[src]
    ft = feat_t.reshape(h * w, -1)
    tgt_feats = ft[tgt]
    j, sim = nearest_pixels(fs, tgt_feats)
    q = tgt[j]  # matched target pixel of every source pixel
    # cycle: the target pixel's nearest neighbour among ALL source mask pixels
    all_src = mask_s.reshape(-1).nonzero().squeeze(1)
    uq, inv = torch.unique(q, return_inverse=True)
    back_j, _ = nearest_pixels(ft[uq], feat_s.reshape(h * w, -1)[all_src])
    back = all_src[back_j][inv]
    dy = (back // w - src // w).float()
    dx = (back % w - src % w).float()
    ok = (dx * dx + dy * dy <= cycle_radius * cycle_radius + 1e-6) & (sim >= min_similarity)
    return src[ok], q[ok], sim[ok]


class RenderedFlowGuidance(GuidanceSource):
    """The paper's rendered semantic flow as a registration guidance source.

    Parameters
    ----------
    features : precomputed per-vertex features (fs (ns, d), ft (nt, d)) float32, rows unit
        norm; None -> :func:`engine.features.semantic.vertex_features` with ``mode``
    mode : "dino" or "dino+sd" (when ``features`` is None)
    device : "auto", "cpu", "cuda", "mps": rasterisation, matching and the loss run there
        (pass ``loss`` the deformed vertices on that device)
    views, elevations, fov, up : the camera rig shared by both meshes
    resolution : flow-map side in pixels
    cycle_radius : pixel tolerance of the cycle check (0: mutual nearest neighbours)
    max_pixels : source pixels matched per view
    match_filter : optional :data:`MatchFilter` (e.g. bicyclic geodesic consistency) applied to
        the confident matches at every update; it receives the undeformed source
    feature_kwargs : passed to ``vertex_features`` (config, backbones, cache_dir, progress...)
    match_dim : when set, features are reduced to this many dimensions by co-PCA before
        matching (cheaper nearest neighbours on CPU; None keeps them whole)
    """

    name = "rendered_flow"

    def __init__(self, features: tuple[np.ndarray, np.ndarray] | None = None, mode: str = "dino", device="cpu",
                 views: int = 8, elevations=(20.0, -15.0), fov: float = 40.0, up: str = "y", resolution: int = 128,
                 cycle_radius: float = 1.5, max_pixels: int = 8192, match_filter: MatchFilter | None = None,
                 raster_backend: str = "auto", feature_kwargs: dict | None = None, match_dim: int | None = None):
        self.features = features
        self.mode = mode
        self.device: torch.device | None = None  # resolved in prepare()
        self._device_arg = device
        self.views = int(views)
        self.elevations = tuple(elevations)
        self.fov = float(fov)
        self.up = up
        self.resolution = int(resolution)
        if self.resolution < 8:
            raise InputError(f"rendered flow: resolution must be >= 8 pixels, got {resolution}")
        self.cycle_radius = float(cycle_radius)
        self.max_pixels = int(max_pixels)
        self.match_filter = match_filter
        self.raster_backend = raster_backend
        self.feature_kwargs = dict(feature_kwargs or {})
        if match_dim is not None and int(match_dim) < 1:
            raise InputError(f"rendered flow: match_dim must be >= 1, got {match_dim}")
        self.match_dim = None if match_dim is None else int(match_dim)
        self.flow: FlowMatches | None = None
        self.source: Mesh | None = None
        self.target: Mesh | None = None

    # ----------------------------------------------------------------- setup
    def prepare(self, source: Mesh, target: Mesh, progress: Progress | None = None) -> None:
        from ..features.dino import resolve_device
        from ..progress import SubProgress

        dev = resolve_device(self._device_arg)  # BackendUnavailable for CUDA / MPS that is not there
        self.device = dev
        if self.features is None:
            from ..features.semantic import vertex_features

            kw = dict(self.feature_kwargs)
            kw.setdefault("progress", SubProgress(progress, 0.0, 0.9) if progress is not None else None)
            fs, ft = vertex_features(source, target, self.mode, dev, **kw)
        else:
            fs, ft = self.features
        fs = np.asarray(fs, dtype=np.float32)
        ft = np.asarray(ft, dtype=np.float32)
        if fs.ndim != 2 or ft.ndim != 2 or fs.shape[1] != ft.shape[1] or len(fs) != source.n_vertices or len(ft) != target.n_vertices:
            raise InputError(
                f"rendered flow: features must be (ns, d) and (nt, d) for meshes with {source.n_vertices} and "
                f"{target.n_vertices} vertices, got {fs.shape} and {ft.shape}")
        self.source, self.target = source, target
        fs_t, ft_t = torch.as_tensor(fs, device=dev), torch.as_tensor(ft, device=dev)
        if self.match_dim is not None and fs_t.shape[1] > self.match_dim:
            from ..features.fusion import co_pca

            fs_t, ft_t = co_pca(fs_t, ft_t, self.match_dim)
        self.fs = F.normalize(fs_t, dim=1)
        self.ft = F.normalize(ft_t, dim=1)
        self.src_faces = torch.as_tensor(source.faces, dtype=torch.int64, device=dev)
        self.tgt_faces = torch.as_tensor(target.faces, dtype=torch.int64, device=dev)
        both = np.concatenate([source.vertices, target.vertices])
        center = (both.min(0) + both.max(0)) / 2
        # room for the source to move while it deforms
        radius = 1.15 * bounding_radius(source.vertices, target.vertices, center=center)
        self.cameras = orbit_cameras(self.views, self.elevations, fov=self.fov, device=dev, center=center,
                                     fit_radius=radius, up=self.up)
        tv = torch.as_tensor(target.vertices, dtype=torch.float32, device=dev)
        self.tgt_raster = rasterize(tv, self.tgt_faces, self.cameras, self.resolution, backend=self.raster_backend)
        if not bool(self.tgt_raster.mask.any()):
            raise InputError(f"{target.name}: the target is not visible from any camera view")
        self.tgt_feat = F.normalize(self.tgt_raster.interpolate(self.ft, self.tgt_faces), dim=-1)
        self.tgt_points = self.tgt_raster.interpolate(tv, self.tgt_faces)
        self.update(source.vertices, 0, 0.0)
        if progress is not None:
            progress.update(1.0)

    # ----------------------------------------------------------------- per update
    @torch.no_grad()
    def update(self, deformed, step: int, fraction: float) -> None:
        if self.source is None:
            raise InputError("rendered flow: prepare() must be called before update()")
        dev = self.device
        v = torch.as_tensor(np.asarray(deformed), dtype=torch.float32, device=dev)
        if v.shape != (self.source.n_vertices, 3) or not bool(torch.isfinite(v).all()):
            raise InputError(f"rendered flow: deformed vertices must be a finite ({self.source.n_vertices}, 3) array")
        raster = rasterize(v, self.src_faces, self.cameras, self.resolution, backend=self.raster_backend)
        src_feat = F.normalize(raster.interpolate(self.fs, self.src_faces), dim=-1)
        h, w = raster.resolution
        parts = []
        for k in range(len(self.cameras)):
            p, q, sim = semantic_flow_view(src_feat[k], raster.mask[k], self.tgt_feat[k], self.tgt_raster.mask[k],
                                           self.cycle_radius, self.max_pixels)
            if len(p) == 0:
                continue
            kk = torch.full_like(p, k)
            pxy = torch.stack([(p % w).float() + 0.5, (p // w).float() + 0.5], dim=1)
            qxy = torch.stack([(q % w).float() + 0.5, (q // w).float() + 0.5], dim=1)
            parts.append(FlowMatches(
                kk, raster.triangle_id[k].reshape(-1)[p], raster.bary[k].reshape(-1, 3)[p], pxy, qxy,
                self.tgt_points[k].reshape(-1, 3)[q], self.tgt_raster.triangle_id[k].reshape(-1)[q], sim))
        if not parts:
            self.flow = FlowMatches(*(torch.zeros((0,) + s, dtype=d, device=dev) for s, d in (
                ((), torch.int64), ((), torch.int64), ((3,), torch.float32), ((2,), torch.float32), ((2,), torch.float32),
                ((3,), torch.float32), ((), torch.int64), ((), torch.float32))))
            return
        flow = FlowMatches(*(torch.cat([getattr(m, f) for m in parts]) for f in FlowMatches.__dataclass_fields__))
        if self.match_filter is not None and len(flow):
            sv = self._source_vertices(flow)
            keep = np.asarray(self.match_filter(self.source, self.target, sv.cpu().numpy(),
                                                flow.target_point.cpu().double().numpy(),
                                                flow.target_tri.cpu().numpy()), dtype=bool)
            flow = flow.subset(torch.as_tensor(keep, device=dev))
        self.flow = flow

    def _source_vertices(self, flow: FlowMatches) -> torch.Tensor:
        corner = flow.bary.argmax(dim=1)
        return self.src_faces[flow.tri, corner]

    # ----------------------------------------------------------------- loss
    def loss(self, deformed: torch.Tensor) -> torch.Tensor:
        """Mean L1 (in image-side units) between rendered and semantic flow on confident pixels."""
        if self.flow is None or len(self.flow) == 0:
            return deformed.sum() * 0.0
        fl = self.flow
        xy, _ = self.cameras.project(deformed.to(torch.float32), (self.resolution, self.resolution))  # (K, n, 2)
        corners = self.src_faces[fl.tri]  # (P, 3)
        pts = xy[fl.view[:, None], corners]  # (P, 3, 2)
        pred = (pts * fl.bary[..., None]).sum(1)
        return (pred - fl.target_xy).abs().sum(-1).mean() / self.resolution

    def matches(self):
        """(source_vertex (k,) int64, target_point (k, 3) float64, weight (k,) float64) of the confident pixels."""
        if self.flow is None or len(self.flow) == 0:
            return None
        sv = self._source_vertices(self.flow).cpu().numpy().astype(np.int64)
        tp = self.flow.target_point.cpu().double().numpy()
        wgt = self.flow.similarity.clamp_min(0).cpu().double().numpy()
        return sv, tp, wgt
