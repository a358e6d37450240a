"""Vertex-feature correspondence guidance (the geometric source, and the slot semantic features use).

Per-vertex features of both meshes (spectral embeddings from a functional map,
WKS/HKS, or lifted DINOv2/SD features) are matched by nearest neighbours in
``[feature, w * position]``, where the position weight grows during the
registration (a shrinking spatial window: early on features decide, late the
deformed shape does). Matches are kept when they survive the bicyclic filter.
"""
from __future__ import annotations

import numpy as np
import torch

from ..mesh import Mesh
from .guidance_source import GuidanceSource
from .filters import bicyclic_consistent
from .functional_map import nearest_rows_both_ways


class VertexFeatureGuidance(GuidanceSource):
    """Guidance from per-vertex features.

    Parameters
    ----------
    feat_s : (ns, d) float  source features (rows comparable to ``feat_t``)
    feat_t : (nt, d) float
    w_pos : (start, end) weight of positions relative to features, ramped over the registration
    tau : round-trip tolerance as a fraction of sqrt(area) (meshes are unit area)
    """

    name = "vertex-features"

    def __init__(self, feat_s: np.ndarray, feat_t: np.ndarray, w_pos=(0.5, 4.0), tau: float = 0.05) -> None:
        self.feat_s = np.asarray(feat_s, np.float32)
        self.feat_t = np.asarray(feat_t, np.float32)
        self.w_pos = w_pos
        self.tau = tau
        self._idx = None
        self._pts = None
        self._w = None

    def prepare(self, source: Mesh, target: Mesh, progress=None) -> None:
        self.source, self.target = source, target
        self._src_area = source.vertex_areas / source.vertex_areas.sum()

    def current_maps(self, deformed: np.ndarray, fraction: float):
        w = self.w_pos[0] + (self.w_pos[1] - self.w_pos[0]) * fraction
        fs = np.concatenate([self.feat_s, w * deformed], axis=1)
        ft = np.concatenate([self.feat_t, w * self.target.vertices], axis=1)
        return nearest_rows_both_ways(fs, ft)

    def update(self, deformed: np.ndarray, step: int, fraction: float) -> None:
        s2t, t2s = self.current_maps(deformed, fraction)
        ok = bicyclic_consistent(s2t, t2s, self.source.vertices, self.target.vertices, self.tau, self.tau)
        self._idx = np.nonzero(ok)[0]
        self._pts = self.target.vertices[s2t[self._idx]]
        self._w = self._src_area[self._idx]
        self.s2t = s2t
        self.keep = ok

    def loss(self, deformed: torch.Tensor) -> torch.Tensor:
        if self._idx is None or len(self._idx) == 0:
            return torch.zeros((), dtype=deformed.dtype, device=deformed.device)
        idx = torch.as_tensor(self._idx, device=deformed.device)
        pts = torch.as_tensor(self._pts, dtype=deformed.dtype, device=deformed.device)
        w = torch.as_tensor(self._w, dtype=deformed.dtype, device=deformed.device)
        return (w * ((deformed[idx] - pts) ** 2).sum(1)).sum() / w.sum().clamp_min(1e-12)

    def matches(self):
        if self._idx is None:
            return None
        return self._idx, self._pts, self._w
