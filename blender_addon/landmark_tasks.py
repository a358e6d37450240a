"""Detect Landmarks: body landmarks found by the engine on both meshes -> named landmark pairs
on the source (the artist reviews and edits them; Match sends them like pairs added by hand)."""
from __future__ import annotations

import numpy as np

from .task_base import Task, TaskError, check_length, resolve_object, check_pair, check_unchanged, read_pair


class DetectLandmarksTask(Task):
    """Body landmarks detected on both meshes -> named landmark pairs stored on the source for the target.

    Replaces the pairs an earlier detection wrote for this target and keeps the pairs added by
    hand; a failure or a cancel never reaches ``apply``, so the list stays as it was.
    """

    label = "Detect Landmarks"
    cmd = "detect_landmarks"

    def __init__(self, source, target, use_evaluated: bool = False, rest_pose: bool = False) -> None:
        self.source = resolve_object(source, "source")
        self.target = resolve_object(target, "target")
        self.use_evaluated = use_evaluated
        self.rest_pose = rest_pose

    def prepare(self):
        check_pair(self.source, self.target)
        arrays = read_pair(self, self.use_evaluated, self.rest_pose)
        return self.cmd, {"source_name": self.source.name, "target_name": self.target.name}, arrays

    def check(self, data: dict, arrays: dict) -> tuple[np.ndarray, np.ndarray, list]:
        pairs = arrays.get("pairs")
        if pairs is None or pairs.ndim != 2 or pairs.shape[1] != 2:
            raise TaskError("engine reply has no landmark 'pairs'")
        p = len(pairs)
        conf = check_length("confidence", arrays.get("confidence"), (p,))
        names = data.get("names")
        if not isinstance(names, list) or len(names) != p:
            raise TaskError(f"engine reply names {len(names) if isinstance(names, list) else 0} landmarks for {p} pairs")
        ns, nt = len(self.source.data.vertices), len(self.target.data.vertices)
        if p and (pairs.min() < 0 or pairs[:, 0].max() >= ns or pairs[:, 1].max() >= nt):
            raise TaskError(f"engine reply refers to vertices outside the meshes (source has {ns}, target {nt} vertices)")
        if p == 0:
            raise TaskError(f"no body landmark was found confidently on both '{self.source.name}' and "
                            f"'{self.target.name}'; add landmark pairs by hand")
        return pairs.astype(np.int64), np.clip(conf.astype(np.float64), 0.0, 1.0), [str(n) for n in names]

    def apply(self, data, arrays):
        pairs, conf, names = self.check(data, arrays)
        check_unchanged((self.source, self.target), self.signature, "while detecting; run Detect Landmarks again")
        n = write_detected_landmarks(self.source, self.target, pairs, names, conf)
        kept = sum(1 for lm in self.source.stablewrap.landmarks if lm.target == self.target and not lm.detected)
        return (f"Detected {n} landmark pairs on '{self.source.name}' and '{self.target.name}'"
                + (f" ({kept} added by hand kept)" if kept else "") + "; review them in the Landmarks list")


def write_detected_landmarks(source, target, pairs: np.ndarray, names: list, confidence: np.ndarray) -> int:
    """Replace the detected landmark pairs of ``source`` for ``target``; pairs added by hand stay."""
    lms = source.stablewrap.landmarks
    for i in reversed(range(len(lms))):
        if lms[i].detected and lms[i].target == target:
            lms.remove(i)
    for (sv, tv), name, c in zip(pairs.tolist(), names, confidence.tolist()):
        lm = lms.add()
        lm.name, lm.target, lm.source_vertex, lm.target_vertex = name, target, int(sv), int(tv)
        lm.detected, lm.confidence = True, float(c)
    source.stablewrap.landmark_index = min(max(0, source.stablewrap.landmark_index), max(0, len(lms) - 1))
    return len(pairs)
