"""Stand-in matchers the worker loads with ``--match-impl`` / ``STABLEWRAP_MATCH_IMPL``.

They have :func:`engine.match`'s signature, so the worker protocol and the
add-on's write-back are tested without running the real registration. This
module holds no tests; it is imported by the worker subprocess (keep it free
of bpy and pytest imports).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from engine.correspondence import Correspondence
from engine.errors import InputError


def _vertex_faces(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One face containing every vertex and the vertex's corner in it (-1 when unreferenced)."""
    face_of = np.full(n, -1, np.int64)
    corner_of = np.zeros(n, np.int64)
    for k in range(faces.shape[1] - 1, -1, -1):
        face_of[faces[:, k]] = np.arange(len(faces))
        corner_of[faces[:, k]] = k
    return face_of, corner_of


def _nearest_vertex_map(va, vb, fb):
    """Map each point of ``va`` to its nearest vertex of (vb, fb) as (face, one-hot bary)."""
    from scipy.spatial import cKDTree

    _, nn = cKDTree(vb).query(va)
    face_of, corner_of = _vertex_faces(fb, len(vb))
    bary = np.zeros((len(va), 3), np.float32)
    bary[np.arange(len(va)), corner_of[nn]] = 1.0
    return face_of[nn].astype(np.int32), bary, nn


def nearest_vertex_match(source, target, *, progress=None, cancel=None, landmarks=None, exclude=None, **options):
    """Nearest-vertex correspondence; fitted vertices are target vertices (so they lie on the target)."""
    sv, sf = (np.asarray(source[0], np.float64), np.asarray(source[1], np.int64))
    tv, tf = (np.asarray(target[0], np.float64), np.asarray(target[1], np.int64))
    if len(sf) == 0 or len(tf) == 0:
        raise InputError("source: mesh has no faces" if len(sf) == 0 else "target: mesh has no faces")
    for i, stage in enumerate(("features", "register", "map")):
        if progress is not None:
            progress(stage, i / 3.0)
        if cancel is not None:
            cancel.raise_if_cancelled()
    s2t_f, s2t_b, nn = _nearest_vertex_map(sv, tv, tf)
    t2s_f, t2s_b, _ = _nearest_vertex_map(tv, sv, sf)
    fitted = tv[nn].astype(np.float32)
    conf = np.ones(len(sv), np.float32)
    if exclude is not None:
        mask = np.zeros(len(sv), bool)
        ex = np.asarray(exclude)
        mask[ex if ex.dtype != bool else np.nonzero(ex)[0]] = True
        conf[mask] = 0.0
    if progress is not None:
        progress("map", 1.0)
    meta = {"fake": True, "options": {k: str(v) for k, v in options.items()},
            "landmarks": 0 if landmarks is None else int(len(landmarks))}
    return Correspondence(s2t_f, s2t_b, t2s_f, t2s_b, fitted, conf, meta)


def slow_match(source, target, *, progress=None, cancel=None, **options):
    """Reports progress every 10 ms for up to 20 s; only a cancel ends it early."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 20.0:
        if progress is not None:
            progress("register", min(0.99, i / 2000.0))
        if cancel is not None:
            cancel.raise_if_cancelled()
        time.sleep(0.01)
        i += 1
    return nearest_vertex_match(source, target, **options)


def stuck_match(source, target, *, progress=None, cancel=None, **options):
    """Reports one progress step, then sits for 60 s in a call that never checks the cancel."""
    if progress is not None:
        progress("align", 0.05)
    time.sleep(60.0)
    return nearest_vertex_match(source, target, **options)


def failing_match(source, target, **options):
    raise InputError("target: mesh has no faces (a point cloud?); a surface mesh is needed")


def buggy_match(source, target, **options):
    return {"src_to_tgt_face": 1 // 0}


def crashing_match(source, target, *, progress=None, **options):
    if progress is not None:
        progress("register", 0.1)
    sys.stderr.write("fatal: simulated crash in the engine\n")
    sys.stderr.flush()
    os._exit(3)


def chatty_match(source, target, **options):
    """Prints to stdout (as some libraries do); the protocol must survive it."""
    print("hello from a library that prints to stdout")
    sys.stdout.flush()
    os.write(1, b"raw bytes on fd 1\n")
    return nearest_vertex_match(source, target, **options)


def doubtful_parts_match(source, target, **options):
    """The nearest-vertex match, reporting left-out target parts and a doubtful verdict."""
    corr = nearest_vertex_match(source, target, **options)
    corr.meta.update({"target_parts": {"parts": 5, "left_out": 2, "left_out_area_pct": 1.5},
                      "verdict": {"verdict": "check", "reason": "keypoints disagree (median 0.2 of sqrt(area))"},
                      "notices": ["keypoints: no body found on the target (auto: geometric path)",
                                  "target: 300000 vertices, matched on a 3000-vertex working copy",
                                  "a third notice"]})
    return corr
