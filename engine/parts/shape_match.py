"""Shape-to-shape part matching: a vertex group on the source -> the corresponding part on the target.

The source plays the image's role in BSB: its vertices are the query-side
elements, the vertex group is the part mask, the whole source is the object
mask, and segmenting "the image" from an element is growing a part on the
source (:class:`engine.parts.segment.MeshSegmenter`). The chosen target vertex
is then grown into the target part with a random walker seeded by the
vertices whose nearest source vertex (in feature space) lies confidently
inside / outside the query part.

>>> m = PartMatcher((Vs, Fs), (Vt, Ft))
>>> r = m.match(np.array([12, 13, 14, ...]))   # source vertex indices (caller order)
>>> r.bsb_vertex, r.target_vertices, r.score
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arrays import unit_rows
from ..errors import InputError
from ..mesh import Mesh, PreparedMesh, as_prepared
from ..progress import Progress
from .bsb import NO_MATCH, BSBResult, best_segmentation_buddy
from .features import PairFeatures, pair_features
from .segment import MeshSegmenter


@dataclass
class PartMatch:
    """Result of one part query (indices in the caller's vertex order).

    target_vertices : (m,) int32 target vertices of the matched part (empty when no match)
    bsb_vertex : int, the Best Segmentation Buddy on the target, -1 for "no match"
    score : float in [0, 1], IoU of the buddy's segment with the query part (0 when no match)
    details : the raw :class:`BSBResult` (clean-mesh indices)
    """

    target_vertices: np.ndarray
    bsb_vertex: int
    score: float
    details: BSBResult | None = field(default=None, repr=False)

    @property
    def matched(self) -> bool:
        return self.bsb_vertex >= 0

    def arrays(self) -> dict:
        """The CLI ``.npz`` keys."""
        return {
            "target_vertices": np.asarray(self.target_vertices, np.int32),
            "bsb_vertex": np.asarray(self.bsb_vertex, np.int32),
            "score": np.asarray(self.score, np.float32),
        }


def part_indices_to_clean(prepared: PreparedMesh, part_vertex_indices, name: str = "part") -> np.ndarray:
    """Validate caller vertex indices of a part and map them to clean vertices: (k,) int64 unique."""
    try:
        idx = np.asarray(part_vertex_indices).reshape(-1)
    except Exception:
        raise InputError(f"{name}: vertex indices must be an integer array") from None
    if idx.size == 0:
        raise InputError(f"{name}: the vertex group is empty; select at least one vertex of the part")
    if not np.issubdtype(idx.dtype, np.integer):
        if not np.issubdtype(idx.dtype, np.floating) or not np.all(np.isfinite(idx)) or not np.all(idx == np.round(idx)):
            raise InputError(f"{name}: vertex indices must be integers (got {idx.dtype})")
        idx = idx.astype(np.int64)
    n0 = len(prepared.orig_vertices)
    if idx.min() < 0 or idx.max() >= n0:
        raise InputError(f"{name}: vertex index out of range ({idx.min()}..{idx.max()}; {prepared.name} has {n0} vertices)")
    clean = np.unique(prepared.orig_to_clean[idx.astype(np.int64)])
    if len(clean) >= prepared.mesh.n_vertices:
        raise InputError(f"{name}: the vertex group covers the whole mesh {prepared.name!r}; select only the part to match")
    return clean


def clean_mask_to_orig(prepared: PreparedMesh, mask: np.ndarray) -> np.ndarray:
    """Caller vertex indices (k,) int32 whose clean vertex is in ``mask`` (n,) bool."""
    return np.nonzero(np.asarray(mask, bool)[prepared.orig_to_clean])[0].astype(np.int32)


class PartMatcher:
    """Per-pair state (features, segmenters) for any number of part queries from source to target.

    Parameters
    ----------
    source, target : a mesh path, ``(V, F)`` arrays, an ``engine.Mesh`` or a ``PreparedMesh``
    source_features, target_features : optional per-vertex (n, d) features in the clean
        vertex order of the prepared meshes (e.g. distilled DINO features); default: the
        shared geometric descriptors
    side_weight : share of the "left or right side" block in the similarity; it tells left
        from right (intrinsic descriptors are mirror-symmetric). 0 turns it off.
    side : how the side is found: "auto" (default), "plane" or "geodesic"; see
        :func:`engine.parts.features.pair_features`
    position_weight, sigma : share ("auto": from how well the descriptors agree) and kernel
        width of the aligned 3D position block (front/back, head/tail across species);
        see :func:`engine.parts.features.pair_features`
    query : "votes" (default; candidates: the target vertices most often nearest to a part
        vertex), "medoid" (the part vertex closest to the part's mean feature plays the click)
        or "mean" (the part's mean feature)
    elements : "vertices" (the source vertices are the query-side elements: exact for
        per-vertex features, no occlusion) or "renders" (``views`` renders of the source at
        ``resolution`` px with its per-vertex features interpolated: the paper's image role)
    selection : "iou" (the paper: the buddy with the highest IoU) or "bidirectional" (among
        the ``rerank`` best-IoU buddies, the highest IoU x consistency of the target segment)
    transform : the source -> target similarity (default: ``rigid_align``); check_orientation:
        see :func:`engine.parts.features.pair_features`
    k : BSB candidates; min_iou : reject buddies whose segment overlaps the query less (the
        paper reads a low IoU as "no corresponding part"; 0 = the bare rule)
    min_consistency : "no match" unless at least this fraction of the target segment grown
        around the buddy has its nearest source vertex (feature space) inside the query part
    """

    def __init__(
        self,
        source,
        target,
        source_features: np.ndarray | None = None,
        target_features: np.ndarray | None = None,
        side_weight: float = 0.2,
        position_weight: float | str = "auto",
        sigma: float = 0.35,
        k: int = 100,
        min_iou: float = 0.25,
        min_consistency: float = 0.3,
        transform=None,
        check_orientation: bool = False,
        query: str = "votes",
        selection: str = "bidirectional",
        rerank: int = 16,
        elements: str = "vertices",
        views: int = 8,
        resolution: int = 64,
        progress: Progress | None = None,
        side: str = "auto",
    ) -> None:
        if query not in ("votes", "medoid", "mean"):
            raise InputError(f"part matching: query must be 'votes', 'medoid' or 'mean' (got {query!r})")
        self.query = query
        if selection not in ("iou", "bidirectional"):
            raise InputError(f"part matching: selection must be 'iou' or 'bidirectional' (got {selection!r})")
        self.selection = selection
        self.rerank = max(1, int(rerank))
        if elements not in ("vertices", "renders"):
            raise InputError(f"part matching: elements must be 'vertices' or 'renders' (got {elements!r})")
        self.elements = elements
        if int(k) < 1:
            raise InputError(f"part matching: k must be at least 1 (got {k})")
        if progress is not None:
            progress.stage("part features")
        self.source = as_prepared(source, "source")
        self.target = as_prepared(target, "target")
        self.k = k
        self.min_iou = min_iou
        self.min_consistency = min_consistency
        self.features: PairFeatures = pair_features(
            self.source.mesh, self.target.mesh, source_features, target_features,
            side_weight=side_weight, position_weight=position_weight, sigma=sigma, transform=transform,
            check_orientation=check_orientation, side=side,
        )
        if progress is not None:
            progress.update(0.7)
        self.source_segmenter = MeshSegmenter(self.source.mesh, self.features.source)
        self.target_segmenter = MeshSegmenter(self.target.mesh, self.features.target)
        # nearest source vertex (feature space) of every target vertex, and its similarity
        ft, fs = self.features.target, self.features.source
        self.tgt_nn = np.empty(len(ft), np.int64)
        self.tgt_nn_sim = np.empty(len(ft), np.float32)
        for i in range(0, len(ft), 2048):
            sims = ft[i : i + 2048] @ fs.T
            self.tgt_nn[i : i + 2048] = np.argmax(sims, axis=1)
            self.tgt_nn_sim[i : i + 2048] = sims[np.arange(len(sims)), self.tgt_nn[i : i + 2048]]
        if elements == "renders":
            self._render_source(views, resolution)
        if progress is not None:
            progress.update(1.0)

    def _render_source(self, views: int, resolution: int) -> None:
        """Render the source with its per-vertex features: the pixels become the BSB elements."""
        import torch

        from ..render import orbit_cameras, rasterize
        from ..render.cameras import bounding_radius

        m = self.source.mesh
        lo, hi = m.vertices.min(0), m.vertices.max(0)
        centre = (lo + hi) / 2
        cams = orbit_cameras(views, (20.0, -15.0), center=centre, fit_radius=bounding_radius(m.vertices, center=centre))
        r = rasterize(torch.as_tensor(m.vertices, dtype=torch.float32), torch.as_tensor(m.faces), cams, resolution)
        sel = r.mask
        self.pix_face = r.triangle_id[sel].numpy().astype(np.int64)
        self.pix_bary = r.bary[sel].numpy().astype(np.float64)
        corners = m.faces[self.pix_face]
        self.pix_vertex = corners[np.arange(len(corners)), np.argmax(self.pix_bary, axis=1)]
        f = np.einsum("pk,pkd->pd", self.pix_bary, self.features.source[corners].astype(np.float64))
        self.pix_features = unit_rows(f).astype(np.float32)

    def _pixels_of(self, vertex_mask: np.ndarray) -> np.ndarray:
        """Pixels (p,) bool covered by a vertex set (interpolated indicator > 0.5)."""
        return (self.pix_bary * vertex_mask[self.source.mesh.faces[self.pix_face]]).sum(1) > 0.5

    def match_clean(self, part: np.ndarray) -> tuple[BSBResult, np.ndarray]:
        """BSB on clean source vertex indices; returns the raw result and the target part mask (nt,) bool."""
        fs, ft = self.features.source, self.features.target
        ns = self.source.mesh.n_vertices
        mask = np.zeros(ns, bool)
        mask[part] = True
        q = fs[mask].mean(0)
        if self.query == "medoid":
            # the part's most typical vertex plays the click: the one closest to the part's mean feature
            q = fs[part[np.argmax(fs[part] @ q)]]
        size = len(part)
        scores = None
        if self.query == "votes":
            # part-level query: rank target vertices by how many part vertices have them as
            # nearest neighbour (ties: similarity to the part's mean feature)
            nn = np.argmax(fs[part] @ ft.T, axis=1)
            sim = ft @ (q / max(float(np.linalg.norm(q)), 1e-12))
            scores = np.bincount(nn, minlength=len(ft)) + 0.5 * (sim + 1.0) * 0.999
        if self.elements == "renders":
            # the renders of the source play the image's role: pixels, their features, the
            # part mask = pixels of the vertex group, segments grown on the source and rendered
            pmask = self._pixels_of(mask)
            if not pmask.any():
                raise InputError("source part: the vertex group is not visible in any render of the source")
            res = best_segmentation_buddy(
                q, self.pix_features, pmask, ft,
                segment_element=lambda e: self._pixels_of(self.source_segmenter.grow_to_size(self.pix_vertex[e], size)),
                k=self.k, min_iou=self.min_iou, max_segmentations=32, candidate_scores=scores,
            )
        else:
            res = best_segmentation_buddy(
                q, fs, mask, ft, segment_element=lambda e: self.source_segmenter.grow_to_size(e, size),
                k=self.k, min_iou=self.min_iou, max_segmentations=32, candidate_scores=scores,
            )
        nt = self.target.mesh.n_vertices
        if not res.matched:
            return res, np.zeros(nt, bool)
        # the reverse check, at the segment level: the target segment around a buddy must map
        # back (nearest source vertex in feature space) into the query part. With
        # selection="bidirectional" the buddy maximising IoU x consistency wins (BSB in both
        # directions); with "iou" the paper's choice stands and is only checked.
        tsize = max(1, int(round(size * nt / ns)))

        def consistency(v: int) -> float:
            seg = self.target_segmenter.grow_to_size(int(v), tsize)
            return float(mask[self.tgt_nn[seg]].mean())

        if self.selection == "bidirectional":
            ok = np.nonzero(np.isfinite(res.ious))[0]
            order = ok[np.argsort(-res.ious[ok], kind="stable")][: self.rerank]
            cons = np.array([consistency(res.buddies[i]) for i in order])
            best = order[int(np.argmax(res.ious[order] * cons))]
            res.vertex, res.element, res.score = int(res.buddies[best]), int(res.buddy_elements[best]), float(res.ious[best])
            res.consistency = float(cons[list(order).index(best)])
        else:
            res.consistency = consistency(res.vertex)
        # coverage: the share of the query part whose nearest target vertex lands in the
        # buddy's target segment (low when the part is missing and maps all over the target)
        seg = self.target_segmenter.grow_to_size(res.vertex, tsize)
        nn_part = np.argmax(fs[part] @ ft.T, axis=1)
        res.coverage = float(seg[nn_part].mean())
        if res.consistency < self.min_consistency:
            res.vertex, res.element = NO_MATCH, -1
            return res, np.zeros(nt, bool)
        return res, self.grow_target(res.vertex, mask)

    def grow_target(self, vertex: int, source_mask: np.ndarray) -> np.ndarray:
        """Target part around ``vertex``: random walker seeded by confident transfers of the source part."""
        inside = source_mask[self.tgt_nn]
        conf = self.tgt_nn_sim >= np.quantile(self.tgt_nn_sim, 0.5)
        fg = np.r_[vertex, np.nonzero(inside & conf)[0]]
        bg = np.nonzero(~inside & conf)[0]
        if len(bg) == 0:
            return self.target_segmenter.grow(vertex)
        return self.target_segmenter.grow(fg, background=bg)

    def match(self, part_vertex_indices) -> PartMatch:
        """Match a source vertex group (caller vertex indices) to the target."""
        part = part_indices_to_clean(self.source, part_vertex_indices, "source part")
        res, tmask = self.match_clean(part)
        if not res.matched:
            return PartMatch(np.zeros(0, np.int32), NO_MATCH, 0.0, res)
        bsb_orig = int(self.target.clean_to_orig[res.vertex])
        return PartMatch(clean_mask_to_orig(self.target, tmask), bsb_orig, res.score, res)


def match_part(source, part_vertex_indices, target, progress: Progress | None = None, **options) -> PartMatch:
    """One-shot shape-to-shape part matching (see :class:`PartMatcher` for the options).

    source, target : a mesh path, ``(V, F)`` numpy arrays (float (n, 3), int (m, k)),
        an ``engine.Mesh`` or a ``PreparedMesh``
    part_vertex_indices : (k,) int source vertex indices (the vertex group), caller order
    Returns a :class:`PartMatch` (``bsb_vertex == -1`` when the part has no counterpart).
    """
    src = as_prepared(source, "source")
    part_indices_to_clean(src, part_vertex_indices, "source part")  # fail fast, before the features
    return PartMatcher(src, target, progress=progress, **options).match(part_vertex_indices)
