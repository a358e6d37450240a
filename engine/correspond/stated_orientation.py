"""An orientation the artist states: ``orientation="as-is"``.

Two characters in one scene stand upright and face the same way (Blender: Z up, facing -Y). Said
so, the rigid alignment searches only small turns (engine.geometry.align), and two things follow
from the stated frame that the meshes alone cannot give:

- sides: the pose model names left and right from what it takes for the front; a faceless figure
  seen from behind gets them swapped. Under the stated alignment the source's keypoints must land
  on the target's of the same name; where they land on their twins instead, either one mesh's
  sides were seen mirrored or the meshes do not face the same way (the keypoints cannot tell the
  two apart: a body seen from behind is a body turned round). The statement decides: the target's
  sides are exchanged (the pairs then join left to left under it), and the match says so and asks
  for a check;
- a wrong statement: meshes that do not stand and face alike align far worse without turning than
  the free search aligns them; the match says so and suggests ``auto``.
"""
from __future__ import annotations

import numpy as np

# the stated alignment's residual this many times the free search's is a wrong statement: right
# statements measured 1.00-1.01 (MakeHuman body -> FAUST tr_reg_000, 007, ogre in one frame), FAUST
# turned 45 / 90 degrees about its up 1.53 / 2.01; turned round (180) 1.09: a body's back fits
# like its front, and there the keypoints' crossing sides speak instead (docs/decisions.md)
AS_IS_RESIDUAL_RATIO = 1.3
# the sided pairs must fit this much better crossed for the sides to be exchanged: not tuned, a
# margin against noise (sided twins lie a shoulder or hip width apart; a figure seen mirrored
# crosses them: MakeHuman -> ogre turned round: crossed 0.14 against 0.26 named)
SIDES_MIRRORED_RATIO = 0.8


def sided_distances(pk, rigid, source_vertices: np.ndarray, target_vertices: np.ndarray) -> tuple[float, float]:
    """Median distance, under ``rigid`` (source -> target), of the sided keypoint pairs (both
    twins found on both meshes) as named and with the target's sides exchanged; (nan, nan) with
    none. pk : PairKeypoints; *_vertices : the meshes the keypoints' vertices index."""
    from .keypoint_pairs import MIN_PAIR_CONFIDENCE
    from ..keypoints.pose_model import mirror_name

    src, tgt = pk.source, pk.target
    ok = src.found(MIN_PAIR_CONFIDENCE) & tgt.found(MIN_PAIR_CONFIDENCE)
    direct, crossed = [], []
    for i, name in enumerate(src.names):
        twin = mirror_name(name)
        if twin == name or not ok[i] or twin not in tgt.names or not tgt.found(MIN_PAIR_CONFIDENCE)[tgt.index(twin)]:
            continue
        p = rigid.apply(source_vertices[src.vertices[i]][None])[0]
        direct.append(np.linalg.norm(p - target_vertices[tgt.vertices[i]]))
        crossed.append(np.linalg.norm(p - target_vertices[tgt.vertices[tgt.index(twin)]]))
    if not direct:
        return float("nan"), float("nan")
    return float(np.median(direct)), float(np.median(crossed))


def sides_from_orientation(pk, rigid, source_vertices: np.ndarray, target_vertices: np.ndarray):
    """``pk`` with the target's sides exchanged when, under the stated alignment ``rigid``, the
    sided pairs fit clearly better so (SIDES_MIRRORED_RATIO); returns (PairKeypoints, notice or None)."""
    from dataclasses import replace

    from .keypoint_pairs import paired

    direct, crossed = sided_distances(pk, rigid, source_vertices, target_vertices)
    if not (crossed < SIDES_MIRRORED_RATIO * direct):
        return pk, None
    target = pk.target.mirrored()
    pairs, weights, names = paired(pk.source, target)
    notice = ("orientation as-is: the keypoints' left and right cross between the meshes (one seen from behind, "
              "or the meshes face opposite ways); the sides follow the stated orientation: check the result, or "
              "use orientation auto if the meshes do not face the same way")
    return replace(pk, target=target, pairs=pairs, weights=weights, names=names), notice


def statement_check(as_is_score: float, free_score: float) -> str | None:
    """A one-line notice when the stated alignment (its score, engine.geometry.align) fits far
    worse than the free search's: the meshes do not stand and face alike."""
    if not (as_is_score > AS_IS_RESIDUAL_RATIO * free_score):
        return None
    return (f"orientation as-is: the meshes do not seem to stand and face the same way (alignment residual "
            f"{as_is_score / max(free_score, 1e-12):.1f}x that of a free turn); check their orientation or use "
            "orientation auto")
