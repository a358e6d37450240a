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
from .functional_map import nearest_rows_both_ways, nearest_rows_both_ways_gram

# the features do not change during a registration, only the positions: their Gram matrix is
# made once when it stays small (the 3000-vertex working copies: 36 MB), and each update adds
# the positions' rank-3 part (55 -> 22 ms an update at 3000 x 3000 x 126); larger pairs take
# the blocked products of nearest_rows_both_ways every time
GRAM_MAX_ENTRIES = 16 * 2**20


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
        self._gram = None  # feat_s @ feat_t.T, made at the first update (see GRAM_MAX_ENTRIES)

    def prepare(self, source: Mesh, target: Mesh, progress=None) -> None:
        self.source, self.target = source, target
        self._src_area = source.vertex_areas / source.vertex_areas.sum()

    def current_maps(self, deformed: np.ndarray, fraction: float):
        """Nearest neighbours both ways in ``[feature, w * position]``: (ns,) and (nt,) int64."""
        w = self.w_pos[0] + (self.w_pos[1] - self.w_pos[0]) * fraction
        if len(self.feat_s) * len(self.feat_t) <= GRAM_MAX_ENTRIES:
            return self._maps_from_gram(deformed, w)
        fs = np.concatenate([self.feat_s, w * deformed], axis=1)
        ft = np.concatenate([self.feat_t, w * self.target.vertices], axis=1)
        return nearest_rows_both_ways(fs, ft)

    def _maps_from_gram(self, deformed: np.ndarray, w: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`current_maps` from the features' Gram matrix (made at the first update)."""
        if self._gram is None:
            fs, ft = torch.from_numpy(self.feat_s), torch.from_numpy(self.feat_t)
            self._gram = (fs @ ft.T, (fs * fs).sum(1), (ft * ft).sum(1),
                          torch.as_tensor(self.target.vertices, dtype=torch.float32))
        gram, fs_sq, ft_sq, xt = self._gram
        return nearest_rows_both_ways_gram(gram, fs_sq, ft_sq, deformed, xt, float(w) ** 2)

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
