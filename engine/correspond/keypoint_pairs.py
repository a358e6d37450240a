"""Body keypoints of a source / target pair: whether to use them, which pairs, and a verdict on a match.

``detect_pair`` runs the keypoint detector on both (normalised) meshes and
decides, for the ``keypoints`` setting of ``engine.match``:

- "off": never; "on": both meshes must show a body (else an InputError naming
  the mesh); "auto": used when both do, with a one-line notice when not.

``keypoint_verdict`` checks a finished match: the source's keypoints carried
through the map should land on the target's keypoints of the same name; a
keypoint that lands on its mirror twin (left hand on the right hand) or far
away (head on a foot: an upside-down fit) makes the match "wrong" or "check".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..mesh import Mesh

KEYPOINT_MODES = ("auto", "on", "off")
# a pair needs each of its two keypoints found with more than this confidence (a keypoint seen by
# few views is left out); the pair's weight is then the product of the two
MIN_PAIR_CONFIDENCE = 0.25
# verdict thresholds, in units of sqrt(target area) (the normalised meshes have unit area: a
# 1.8 m body has sqrt(area) ~ 1.3 m). A keypoint's own placement scatters by 0.02-0.05
# between two detections of the same body (lifting is to the nearest surface point of a
# joint estimate), so 0.1 is clearly off and 0.25 is another body part altogether
VERDICT_OFF = 0.10
VERDICT_FAR = 0.25
# a working copy that nearly shows a body (engine.keypoints.detect.nearly_a_body) is searched
# again on the mesh it was decimated from, itself decimated to at most this many vertices: the
# renders are 384 px, where a 20k-vertex body's triangles are about a pixel across, so finer
# meshes show nothing more (MakeHuman's base mesh with its helper geometry: the 3000-vertex
# copy's ankles blur into the helpers, its 19k vertices show them)
FINER_VERTICES = 20_000
# the face landmarks of a head are searched on its full mesh decimated to this many vertices: the
# aimed views are 384 px across a face, where a 20k-vertex head's triangles are a few pixels
FACE_VERTICES = 20_000


@dataclass
class PairKeypoints:
    """Keypoints of both meshes and the pairs a match may use.

    source, target : engine.keypoints.detect.Keypoints (None when not run)
    pairs : (p, 2) int64 (source vertex, target vertex) on the clean meshes
    weights : (p,) float64 pair confidences; names : (p,) the keypoint names
    used : whether the match is guided by them; reason : why not (one line), "" when used
    detected_on : per side, the vertex count of the finer mesh the body was found on when the
        working copy showed none (0: found on the mesh given, or not searched again)
    kind : "body" (the pose model's keypoints) or "face" (face landmarks of heads without a body)
    """

    source: object = None
    target: object = None
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: list = field(default_factory=list)
    used: bool = False
    reason: str = ""
    detected_on: tuple = (0, 0)
    kind: str = "body"  # "body": the pose model's keypoints; "face": the face mesh's (a head alone)

    def meta(self) -> dict:
        out: dict = {"used": self.used, "kind": self.kind}
        if self.reason:
            out["reason"] = self.reason
        if self.used:
            out["pairs"] = {n: round(float(w), 3) for n, w in zip(self.names, self.weights)}
        for side, kp, finer in zip(("source", "target"), (self.source, self.target), self.detected_on):
            if kp is not None:
                out[side] = {"humanoid": bool(kp.humanoid), "views_found": int(kp.views_found), "axis": kp.axis}
                if finer:
                    out[side]["found_on_vertices"] = int(finer)
        return out


def detect_pair(source: Mesh, target: Mesh, mode: str, progress=None, cache_dir: str | None = None,
                model=None, settings=None, meanwhile=None, finer: tuple = (None, None)) -> PairKeypoints:
    """Detect keypoints on both meshes and decide whether the match uses them (see the module docstring).

    progress : object with ``update(fraction)``; model / settings / meanwhile : passed to
    ``detect_keypoints_many`` (``meanwhile`` runs once when the detector runs, also when it fails)
    finer : per side, the mesh that ``source`` / ``target`` is a decimated working copy of (same
        frame), or None: where the copy nearly shows a body but not quite, it is searched again on
        that mesh (decimated to ``FINER_VERTICES``) and the landmarks are carried to the copy
    Raises InputError ("on" and no body on a mesh) or BackendUnavailable ("on" and no working
    pose model: not installed, broken, or its process ended); "auto" goes on without keypoints.
    """
    if mode not in KEYPOINT_MODES:
        raise InputError(f"keypoints: unknown mode {mode!r}; use one of {', '.join(KEYPOINT_MODES)}")
    if mode == "off":
        return PairKeypoints(reason="keypoints off")
    from ..keypoints.detect import KeypointSettings, detect_keypoints_many, nearly_a_body
    from ..keypoints.pose_model import keypoints_status

    if model is None:
        ok, why = keypoints_status()
        if not ok:
            if mode == "on":
                raise BackendUnavailable(f"keypoints: {why}")
            return PairKeypoints(reason=f"keypoints: {why}; using geometric orientation")
    ran = []

    def once() -> None:  # the caller's meanwhile work, run once whether or not the detection ends early
        if meanwhile is not None and not ran:
            ran.append(True)
            meanwhile()

    def detect(meshes, **kw):
        return detect_keypoints_many([(m.vertices, m.faces) for m in meshes], model=model, settings=settings,
                                     cache_dir=cache_dir, progress=progress, stop_at_miss=True, **kw)

    detected_on = [0, 0]
    min_views = (settings or KeypointSettings()).min_views
    try:
        kps = detect((source, target), meanwhile=once)
        for i, mesh in enumerate((source, target)):
            if kps[i] is None:  # not searched: the source showed no body on its copy first
                kps[i] = detect((mesh,))[0]
            if nearly_a_body(kps[i], min_views) and finer[i] is not None and finer[i].n_vertices > mesh.n_vertices:
                kps[i], detected_on[i] = _search_finer(finer[i], mesh, detect, kps[i], progress)
            if not kps[i].humanoid:
                break
    except BackendUnavailable as exc:  # a broken install, or the model's process ended (engine.keypoints.pose_server)
        if mode == "on":
            raise
        once()
        return PairKeypoints(reason=f"{exc}; using geometric orientation")
    for i, (kp, mesh) in enumerate(zip(kps, (source, target))):
        if kp is not None and not kp.humanoid:
            which = "source" if i == 0 else "target"
            msg = (f"keypoints: no body found on the {which} mesh '{mesh.name}' "
                   f"({kp.views_found} of the views show one)")
            if model is None:  # the shipped models: a head without a body has a face to go by
                faces, why = detect_face_pair(source, target, kps, finer, cache_dir)
                if faces is not None:
                    return faces
                msg += f"; {why}"
            if mode == "on":
                raise InputError(msg)
            return PairKeypoints(*kps, reason=msg + "; using geometric matching", detected_on=tuple(detected_on))
    pairs, weights, names = paired(kps[0], kps[1])
    return PairKeypoints(kps[0], kps[1], pairs, weights, names, used=len(pairs) >= 3,
                         reason="" if len(pairs) >= 3 else "keypoints: fewer than 3 keypoints found on both meshes",
                         detected_on=tuple(detected_on))


def paired(source, target) -> tuple[np.ndarray, np.ndarray, list]:
    """The pairs of two meshes' keypoints (engine.keypoints.detect.Keypoints) found on both with
    more than MIN_PAIR_CONFIDENCE: (p, 2) int64 (source vertex, target vertex), (p,) weights, names."""
    from ..keypoints.detect import keypoint_pairs

    pairs, weights = keypoint_pairs(source, target, MIN_PAIR_CONFIDENCE)
    ok = source.found(MIN_PAIR_CONFIDENCE) & target.found(MIN_PAIR_CONFIDENCE)
    return pairs, weights, [n for n, k in zip(source.names, ok) if k]


def detect_face_pair(source: Mesh, target: Mesh, bodies, finer: tuple = (None, None), cache_dir: str | None = None):
    """Face landmark pairs where a mesh shows no body (a head on its own): the face mesh on both
    meshes (engine.keypoints.face), on the finer mesh a working copy was made from (decimated to
    ``FACE_VERTICES``: a 3000-vertex copy of a head blurs its eyes and mouth) and carried to the
    copy. Returns (PairKeypoints with ``kind`` "face", "") when both show a face, else (None, the
    reason in a few words)."""
    from ..geometry.working_copy import WorkingCopy
    from ..keypoints.face import detect_face_landmarks, face_keypoints

    sides = []
    for i, mesh in enumerate((source, target)):
        body = bodies[i] if bodies[i] is not None and bodies[i].humanoid else None
        full = finer[i] if finer[i] is not None and finer[i].n_vertices > mesh.n_vertices else None
        seen = WorkingCopy(full, FACE_VERTICES).mesh if full is not None else mesh
        face = detect_face_landmarks(seen.vertices, seen.faces, body=body, cache_dir=cache_dir)
        if not face.found_face:
            return None, f"no face found on the {'source' if i == 0 else 'target'} mesh '{mesh.name}' either"
        kp = face_keypoints(face)
        sides.append(kp.carried_to(seen.vertices, mesh.vertices) if seen is not mesh else kp)
    pairs, weights, names = paired(sides[0], sides[1])
    if len(pairs) < 3:
        return None, "fewer than 3 face landmarks found on both meshes"
    return PairKeypoints(sides[0], sides[1], pairs, weights, names, used=True, kind="face"), ""


def _search_finer(finer: Mesh, copy: Mesh, detect, missed, progress) -> tuple[object, int]:
    """The body searched again on ``finer`` (decimated to ``FINER_VERTICES``), the mesh the working
    ``copy`` was made from: (its Keypoints carried to ``copy``, the vertices searched) when it
    shows one, else (``missed``, 0)."""
    from ..geometry.working_copy import WorkingCopy

    token = getattr(progress, "token", None)
    mesh = WorkingCopy(finer, FINER_VERTICES, cancel=token).mesh
    if mesh.n_vertices <= copy.n_vertices:
        return missed, 0
    kp = detect((mesh,))[0]
    if not kp.humanoid:
        return missed, 0
    return kp.carried_to(mesh.vertices, copy.vertices), mesh.n_vertices


def keypoint_verdict(pk: PairKeypoints, mapped_points: np.ndarray, target_vertices: np.ndarray) -> dict:
    """Verdict on a match from where the source's keypoints landed.

    mapped_points : (k, 3) float the target points of the source keypoint vertices through the
        map (rows in ``pk.source.names`` order; the meshes in the normalised, unit-area frame)
    target_vertices : (nt, 3) float the target mesh the keypoints were detected on
    returns {"verdict": "good" | "check" | "wrong", "reason": str, "keypoint_error": median}
    """
    from ..keypoints.pose_model import mirror_name

    src, tgt = pk.source, pk.target
    ok = src.found(MIN_PAIR_CONFIDENCE) & tgt.found(MIN_PAIR_CONFIDENCE)
    errs, swapped, sided = [], [], 0
    for i in np.nonzero(ok)[0]:
        name = src.names[i]
        e = float(np.linalg.norm(mapped_points[i] - target_vertices[tgt.vertices[i]]))
        errs.append(e)
        twin = tgt.index(mirror_name(name))
        if twin != i and tgt.found(MIN_PAIR_CONFIDENCE)[twin]:
            sided += 1
            e_twin = float(np.linalg.norm(mapped_points[i] - target_vertices[tgt.vertices[twin]]))
            if e > VERDICT_OFF and e_twin < VERDICT_OFF:  # landed on its twin, not just astray
                swapped.append(name)
    if not errs:
        return {"verdict": "check", "reason": "no keypoint found on both meshes"}
    misplaced = _on_other_parts(pk, mapped_points, target_vertices, ok, swapped)
    med, worst = float(np.median(errs)), float(np.max(errs))
    out = {"keypoint_error": round(med, 4), "keypoint_error_max": round(worst, 4)}
    if sided and len(swapped) > sided / 2:
        return {**out, "verdict": "wrong", "reason": f"left and right swapped ({len(swapped)} of {sided} sided keypoints)"}
    if med > VERDICT_FAR:
        return {**out, "verdict": "wrong", "reason": f"keypoints land on other body parts (median {med:.2f} of sqrt(area))"}
    if swapped:
        return {**out, "verdict": "check", "reason": f"mirrored: {', '.join(swapped[:4])}"}
    if misplaced:
        return {**out, "verdict": "check", "reason": f"parts on other parts: {', '.join(misplaced[:4])}"}
    if worst > VERDICT_FAR or med > VERDICT_OFF:
        return {**out, "verdict": "check", "reason": f"keypoints off by up to {worst:.2f} of sqrt(area)"}
    return {**out, "verdict": "good", "reason": f"keypoints agree (median {med:.3f} of sqrt(area))"}


# a keypoint off its place by more than VERDICT_OFF has landed on another part when a target
# keypoint of another body region lies within this share of that distance (it sits on that part,
# not just astray between parts)
LANDED_ON = 0.5


def _on_other_parts(pk: PairKeypoints, mapped_points: np.ndarray, target_vertices: np.ndarray, ok: np.ndarray,
                    swapped: list) -> list[str]:
    """"<keypoint> on the <region>" for every source keypoint (found on both meshes, not a
    mirrored one) that landed on a target keypoint of another body region (hands on a nose)."""
    from ..keypoints.detect import body_region

    src, tgt = pk.source, pk.target
    found = np.nonzero(tgt.found(MIN_PAIR_CONFIDENCE))[0]
    if len(found) == 0:
        return []
    where = target_vertices[tgt.vertices[found]]
    out = []
    for i in np.nonzero(ok)[0]:
        name = src.names[i]
        e = float(np.linalg.norm(mapped_points[i] - target_vertices[tgt.vertices[i]]))
        if e <= VERDICT_OFF or name in swapped:
            continue
        d = np.linalg.norm(where - mapped_points[i], axis=1)
        j = int(np.argmin(d))
        region = body_region(str(tgt.names[found[j]]))
        if d[j] < LANDED_ON * e and region != body_region(str(name)):
            out.append(f"{name} on the {region}")
    return out


def match_verdict(pk: PairKeypoints | None, fitted_points: np.ndarray, target_vertices: np.ndarray,
                  fit_score: float | None, suspect_score: float) -> dict:
    """good / check / wrong for a finished match.

    With keypoints on both meshes: ``keypoint_verdict`` of where the source keypoints landed
    (fitted_points (ns, 3): the fitted source vertices on the target, normalised frame).
    Otherwise from the fit score (``engine.correspond.fit_score``): above ``suspect_score``
    the fit distorts the shape (a limb on another limb, a body turned round); geometry alone
    cannot see a left/right mirror, and the reason says so.
    """
    if pk is not None and pk.source is not None and pk.target is not None and pk.source.humanoid and pk.target.humanoid:
        return keypoint_verdict(pk, fitted_points[np.maximum(pk.source.vertices, 0)], target_vertices)
    if fit_score is None:
        return {"verdict": "check", "reason": "no fit score (rigid alignment only)"}
    if fit_score > 2 * suspect_score:
        return {"verdict": "check", "reason": f"the fit distorts the shape strongly (score {fit_score:.2f})"}
    if fit_score > suspect_score:
        return {"verdict": "check", "reason": f"the fit distorts the shape (score {fit_score:.2f}); check limbs and sides"}
    return {"verdict": "good", "reason": f"low distortion (score {fit_score:.2f}); geometry cannot check left/right"}
