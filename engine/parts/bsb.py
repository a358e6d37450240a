"""The Best Segmentation Buddies matching rule (BSB, CVPR 2026), modality-agnostic.

The query side is a set of *elements* with features: the pixels of an image,
or the vertices (or rendered pixels) of a source shape. The query is one
element (the click) or a feature vector, its *part mask* (the segment it
belongs to) and an *object mask* (which elements count at all: the object's
pixels, not the background). The candidate side is the target shape's
vertices with features in the same space.

1. Take the ``k`` target vertices most similar (cosine) to the query.
2. A candidate is a *buddy* when its most similar element inside the object
   mask lies inside the part mask.
3. For every buddy, segment the query side from that nearest element and
   measure the IoU with the query's part mask; the buddy with the highest IoU
   is the Best Segmentation Buddy.
4. No buddy: "no match" (the part does not exist on the target).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..arrays import unit_rows
from ..errors import InputError

NO_MATCH = -1


@dataclass
class BSBResult:
    """Outcome of one BSB query.

    vertex : target vertex chosen (``-1`` = no match)
    score : IoU of the chosen buddy's segment with the query part (0 when no match)
    element : query-side element nearest to the chosen vertex (-1 when no match)
    candidates : (k,) int64 target vertices considered, most similar first
    buddies : (b,) int64 the candidates that passed the buddy test
    buddy_elements : (b,) int64 their nearest query-side element
    ious : (b,) float64 IoU of each buddy's segment (NaN where not evaluated)
    """

    vertex: int
    score: float
    element: int = -1
    candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buddies: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    buddy_elements: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ious: np.ndarray = field(default_factory=lambda: np.zeros(0))
    consistency: float = float("nan")  # shape-to-shape reverse check (see shape_match), NaN if not run
    coverage: float = float("nan")  # shape-to-shape: share of the query part mapping into the target segment

    @property
    def matched(self) -> bool:
        return self.vertex >= 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape."""
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter) / float(union) if union else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    return unit_rows(np.asarray(x, np.float32))


def best_segmentation_buddy(
    query_feature: np.ndarray,
    element_features: np.ndarray,
    part_mask: np.ndarray,
    target_features: np.ndarray,
    segment_element: Callable[[int], np.ndarray] | None = None,
    object_mask: np.ndarray | None = None,
    k: int = 100,
    max_segmentations: int = 16,
    min_iou: float = 0.0,
    candidate_scores: np.ndarray | None = None,
) -> BSBResult:
    """Run the BSB rule.

    Parameters
    ----------
    query_feature : (d,) float   feature of the query (clicked element, or a part summary)
    element_features : (p, d) float   query-side elements (pixels or source vertices)
    part_mask : (p,) bool   the query's segment
    target_features : (n, d) float   target vertices
    segment_element : element index -> (p,) bool segment grown from that element; None
        skips the IoU step (buddies are then ranked by similarity to the query)
    object_mask : (p,) bool elements that count (default: all)
    k : number of candidates (the paper's K = 100)
    max_segmentations : segment at most this many distinct buddy elements (most similar
        buddies first), which bounds the time of one query
    min_iou : buddies whose best IoU is below this are rejected (0 = the paper's rule)
    candidate_scores : optional (n,) float ranking of the target vertices used instead of the
        similarity to ``query_feature`` to pick the ``k`` candidates (a part-level query)
    """
    ef = _unit(element_features)
    tf = _unit(target_features)
    q = _unit(np.asarray(query_feature, np.float32).reshape(-1))
    part_mask = np.asarray(part_mask, bool).reshape(-1)
    if ef.ndim != 2 or tf.ndim != 2 or ef.shape[1] != tf.shape[1] or q.shape[0] != ef.shape[1]:
        raise InputError(f"BSB: feature sizes disagree (query {q.shape}, elements {ef.shape}, target {tf.shape})")
    if part_mask.shape[0] != ef.shape[0]:
        raise InputError(f"BSB: part mask has {part_mask.shape[0]} entries for {ef.shape[0]} elements")
    obj = np.ones(len(ef), bool) if object_mask is None else np.asarray(object_mask, bool).reshape(-1)
    part_mask = part_mask & obj
    if not part_mask.any():
        raise InputError("BSB: the part mask is empty (inside the object)")
    if part_mask.sum() == obj.sum():
        raise InputError("BSB: the part mask covers the whole object; nothing to tell it apart from")

    sim_q = tf @ q
    if candidate_scores is not None:
        sim_q = np.asarray(candidate_scores, np.float64).reshape(-1)
        if sim_q.shape[0] != tf.shape[0]:
            raise InputError(f"BSB: {sim_q.shape[0]} candidate scores for {tf.shape[0]} target vertices")
    k = int(min(max(k, 1), len(tf)))
    cand = np.argpartition(-sim_q, k - 1)[:k]
    cand = cand[np.argsort(-sim_q[cand], kind="stable")]

    obj_idx = np.nonzero(obj)[0]
    nearest = obj_idx[np.argmax(tf[cand] @ ef[obj_idx].T, axis=1)]
    is_buddy = part_mask[nearest]
    buddies, buddy_el = cand[is_buddy], nearest[is_buddy]
    if len(buddies) == 0:
        return BSBResult(NO_MATCH, 0.0, -1, cand, buddies, buddy_el, np.zeros(0))

    ious = np.full(len(buddies), np.nan)
    if segment_element is None:
        best = 0
        score = float(sim_q[buddies[0]])
    else:
        seen: dict[int, float] = {}
        for i, el in enumerate(buddy_el):
            el = int(el)
            if el not in seen:
                if len(seen) >= max_segmentations:
                    continue
                seen[el] = iou(np.asarray(segment_element(el), bool) & obj, part_mask)
            ious[i] = seen[el]
        # highest IoU; ties go to the candidate most similar to the query (earlier in the list)
        best = int(np.nanargmax(ious))
        score = float(ious[best])
        if score < min_iou:
            return BSBResult(NO_MATCH, score, -1, cand, buddies, buddy_el, ious)
    return BSBResult(int(buddies[best]), score, int(buddy_el[best]), cand, buddies, buddy_el, ious)
