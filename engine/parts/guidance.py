"""Part pairs found by BSB as a soft part-to-part term of the registration loss.

Semantic or descriptor flow can send the left arm of the source onto the
right arm of the target, or one leg onto another. Part pairs are a coarse,
reliable signal against that: each source part (a vertex group given by the
user, or the automatic extremity parts of the source: head, limbs, tail...)
is matched to the target with BSB; every source vertex of a matched part is
then pulled towards the nearest vertex *of the matched target part*, and the
part's centroid towards the target part's centroid. Unmatched parts add
nothing.

Usage in the registration (``engine.register``)::

    from engine.parts.guidance import PartGuidance
    g = PartGuidance(weight=1.0)               # or PartGuidance(parts=[group_a, group_b])
    g.prepare(source_mesh, target_mesh, progress)
    ... every few hundred steps: g.update(deformed_vertices, step, fraction)
    loss = loss + g.loss(deformed_tensor)
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..geometry.geodesic import GeodesicSolver, farthest_extremities
from ..mesh import Mesh
from ..progress import Progress
from ..correspond.guidance_source import GuidanceSource
from .shape_match import PartMatcher


def extremity_parts(mesh: Mesh, count: int = 6, radius: float = 0.5) -> list[np.ndarray]:
    """Automatic parts: the vertices geodesically near each of ``count`` extremities.

    Extremities are found by farthest-point sampling on geodesic distance (hands,
    feet, head, tail tip on a body); each part holds the vertices closer to its
    extremity than ``radius`` times the extremity's distance to the body centre
    (and closer to it than to any other extremity). Returns a list of (k,) int64.
    """
    solver = GeodesicSolver(mesh)
    picks, F = farthest_extremities(solver, count)
    F = np.where(np.isfinite(F), F, np.inf)
    centre = int(np.argmin(F.max(0)))
    d_centre = solver.distances(centre)
    owner = np.argmin(F, axis=0)
    own = F[owner, np.arange(mesh.n_vertices)]
    parts = []
    for i, e in enumerate(picks):
        sel = np.nonzero((owner == i) & (own < radius * d_centre[e]))[0]
        if 0 < len(sel) < mesh.n_vertices:
            parts.append(sel)
    return parts


class PartGuidance(GuidanceSource):
    """Soft part-to-part constraints from BSB part pairs.

    Parameters
    ----------
    parts : optional list of source vertex groups ((k,) int, source vertex order);
        default: the automatic extremity parts of the source
    pairs : optional list of (source vertex group, target vertex group) already known
        (skips BSB for those)
    weight : loss weight; centroid_weight : share of the centroid term
    n_auto_parts : number of automatic extremity parts
    side_weight : passed to :class:`PartMatcher` (left/right disambiguation)
    source_features, target_features : optional per-vertex (n, d) descriptors of the two
        meshes (e.g. the WKS the registration already has); default: the shared
        geometric descriptors, computed here
    """

    name = "parts"

    def __init__(self, parts=None, pairs=None, weight: float = 1.0, centroid_weight: float = 0.5,
                 n_auto_parts: int = 6, side_weight: float = 0.2, min_score: float = 0.0,
                 source_features: np.ndarray | None = None, target_features: np.ndarray | None = None) -> None:
        self.parts = [np.asarray(p, np.int64).reshape(-1) for p in parts] if parts is not None else None
        self.given_pairs = [(np.asarray(a, np.int64).reshape(-1), np.asarray(b, np.int64).reshape(-1)) for a, b in (pairs or [])]
        self.weight = float(weight)
        self.centroid_weight = float(centroid_weight)
        self.n_auto_parts = int(n_auto_parts)
        self.side_weight = float(side_weight)
        self.min_score = float(min_score)
        self.source_features, self.target_features = source_features, target_features
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._src_idx = np.zeros(0, np.int64)
        self._tgt_pts = np.zeros((0, 3))
        self._pair_of = np.zeros(0, np.int64)

    def prepare(self, source: Mesh, target: Mesh, progress: Progress | None = None) -> None:
        self.source, self.target = source, target
        self.pairs = list(self.given_pairs)
        groups = self.parts if self.parts is not None else extremity_parts(source, self.n_auto_parts)
        if groups:
            from ..geometry.align import RigidTransform

            # the registration hands over meshes already rigidly aligned: no second alignment
            from ..mesh import prepare_mesh

            ps = prepare_mesh(source.vertices, source.faces, "source")
            pt = prepare_mesh(target.vertices, target.faces, "target")
            # features come in the registration's vertex order; the matcher works on clean meshes
            sf = None if self.source_features is None else np.asarray(self.source_features)[ps.clean_to_orig]
            tf = None if self.target_features is None else np.asarray(self.target_features)[pt.clean_to_orig]
            # the identity in the registration frame, seen from the two re-normalised frames
            ns_, nt_ = ps.normalization, pt.normalization
            same_frame = RigidTransform(np.eye(3), (ns_.center - nt_.center) * nt_.scale, nt_.scale / ns_.scale, kind="identity")
            matcher = PartMatcher(ps, pt, sf, tf, side_weight=self.side_weight, progress=progress, transform=same_frame)
            for g in groups:
                if len(g) == 0 or len(np.unique(g)) >= source.n_vertices:
                    continue
                r = matcher.match(g)
                if r.matched and r.score >= self.min_score and len(r.target_vertices):
                    self.pairs.append((g, np.asarray(r.target_vertices, np.int64)))
        self._trees = [cKDTree(target.vertices[t]) for _, t in self.pairs]
        self._centroids = np.array([target.vertices[t].mean(0) for _, t in self.pairs]).reshape(-1, 3)
        self.update(source.vertices, 0, 0.0)

    def update(self, deformed: np.ndarray, step: int, fraction: float) -> None:
        src, tgt, pair_of = [], [], []
        x = np.asarray(deformed, np.float64)
        for i, ((s, t), tree) in enumerate(zip(self.pairs, self._trees)):
            _, nn = tree.query(x[s])
            src.append(s)
            tgt.append(self.target.vertices[t[nn]])
            pair_of.append(np.full(len(s), i))
        self._src_idx = np.concatenate(src) if src else np.zeros(0, np.int64)
        self._tgt_pts = np.concatenate(tgt) if tgt else np.zeros((0, 3))
        self._pair_of = np.concatenate(pair_of) if pair_of else np.zeros(0, np.int64)

    def loss(self, deformed: torch.Tensor) -> torch.Tensor:
        if len(self._src_idx) == 0:
            return deformed.sum() * 0.0
        dev, dt = deformed.device, deformed.dtype
        idx = torch.as_tensor(self._src_idx, device=dev)
        tgt = torch.as_tensor(self._tgt_pts, device=dev, dtype=dt)
        point_term = ((deformed[idx] - tgt) ** 2).sum(-1).mean()
        cent = []
        for (s, _), c in zip(self.pairs, self._centroids):
            si = torch.as_tensor(s, device=dev)
            cent.append(((deformed[si].mean(0) - torch.as_tensor(c, device=dev, dtype=dt)) ** 2).sum())
        cent_term = torch.stack(cent).mean()
        return self.weight * ((1.0 - self.centroid_weight) * point_term + self.centroid_weight * cent_term)

    def matches(self):
        if len(self._src_idx) == 0:
            return None
        return self._src_idx.copy(), self._tgt_pts.copy(), np.ones(len(self._src_idx))


class CombinedGuidance(GuidanceSource):
    """Several guidance sources as one: weighted sum of the losses, matches concatenated.

    ``sources`` : list of (GuidanceSource, weight). Sources already prepared are not
    prepared again when ``prepared=True``.
    """

    name = "combined"

    def __init__(self, sources, prepared: bool = False) -> None:
        self.sources = [(s, float(w)) for s, w in sources]
        self._prepared = prepared

    def prepare(self, source: Mesh, target: Mesh, progress: Progress | None = None) -> None:
        if not self._prepared:
            for s, _ in self.sources:
                s.prepare(source, target, progress)
        self._prepared = True

    def update(self, deformed: np.ndarray, step: int, fraction: float) -> None:
        for s, _ in self.sources:
            s.update(deformed, step, fraction)

    def loss(self, deformed: torch.Tensor) -> torch.Tensor:
        total = deformed.sum() * 0.0
        for s, w in self.sources:
            if w:
                total = total + w * s.loss(deformed)
        return total

    def matches(self):
        got = [m for m in (s.matches() for s, _ in self.sources) if m is not None]
        if not got:
            return None
        return tuple(np.concatenate([m[i] for m in got]) for i in range(3))
