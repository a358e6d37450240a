"""Finger landmarks: close-up renders of each hand of a detected body through the hand model.

The body's wrist and index-knuckle keypoints place a small orbit of cameras round each hand;
the hand model's 2D points are triangulated like the body's (engine.keypoints.detect) and
written into the Keypoints under ``left_*`` / ``right_*`` hand names. A hand the model does
not find (a mitten hand, a fist, a hand inside a prop) simply gets no finger landmarks.
"""
from __future__ import annotations

import numpy as np
import torch

from .pose_model import HAND_KEYPOINTS, PoseModel, hand_model

HAND_VIEWS = 8
HAND_RESOLUTION = 256  # the hand model works at 224 px inside
# the close-up frames a sphere this many wrist-to-knuckle lengths round the palm: the whole hand
# with its fingers spread, and little of the forearm
HAND_FRAME = 1.6
# rays further than this (fraction of the framed radius) from the consensus are dropped
HAND_RAY_TOLERANCE = 0.12


def add_hand_keypoints(vertices: np.ndarray, faces: np.ndarray, kp, model: PoseModel | None = None) -> int:
    """Detect and add the finger landmarks of both hands to ``kp`` (in place); returns how many were found."""
    from ..render.cameras import orbit_cameras
    from ..render.raster import rasterize
    from ..render.shading import shade_lambert
    from .triangulation import lift_detections

    model = model or hand_model()
    v = torch.as_tensor(vertices, dtype=torch.float32)
    f = torch.as_tensor(faces, dtype=torch.int64)
    found = 0
    for side in ("left", "right"):
        wrist, knuckle = kp.point(f"{side}_wrist"), kp.point(f"{side}_hand")
        if wrist is None or knuckle is None:
            continue
        center = (wrist + 2.0 * knuckle) / 3.0
        radius = HAND_FRAME * float(np.linalg.norm(knuckle - wrist)) + 1e-9
        cams = orbit_cameras(HAND_VIEWS, elevations=(30.0, -30.0), center=center, fit_radius=radius, up=kp.axis)
        raster = rasterize(v, f, cams, (HAND_RESOLUTION, HAND_RESOLUTION), backend="torch")
        img = shade_lambert(raster, cams, v, f)
        images = (img.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        dets = model.detect(images)
        points, verts, conf = lift_detections(vertices, faces, dets, cams, raster, HAND_RESOLUTION,
                                              HAND_RAY_TOLERANCE * radius, len(HAND_KEYPOINTS))
        for j, (name, _) in enumerate(HAND_KEYPOINTS):
            if verts[j] < 0:
                continue
            i = kp.index(f"{side}_{name}")
            kp.points[i], kp.vertices[i], kp.confidence[i] = points[j], verts[j], conf[j]
            found += 1
    return found
