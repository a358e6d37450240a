"""Face landmarks of a mesh: MediaPipe's face mesh on views aimed at the face, lifted to the surface.

How: find the face, then look at it. Where the body keypoints found a head (ears, nose), the
face is where they put it. Otherwise (a head on its own, any orientation) the whole mesh is
orbited round each world axis and every view is tried at four image rotations; the view whose
face mesh comes out most frontal gives the face's centre, its up (forehead over chin) and its
front (towards that camera). Views aimed at the face from in front of it (azimuths and
elevations round its up, the face upright in each image) then go through the face mesh; every
landmark's pixel is looked up in the raster (its triangle and barycentrics: a point on the
surface), and a landmark is kept where enough views put it at the same place. The face's
outline (the oval, which slides over the cheeks as the view turns) is left out, and so is a
landmark whose pixel shows no surface (inside an open mouth or an eye hole).

Landmark ``face_NNN`` is the face mesh's point NNN (1 the nose tip, 33 / 263 the subject's right
/ left outer eye corners, 61 / 291 the mouth corners, 152 the chin): the same index is the same
place on every face, which makes them pairs between two meshes directly.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .pose_model import FACE_NAMES, PoseModel, face_model

# the face oval of MediaPipe's face mesh (FACEMESH_FACE_OVAL): silhouette points, left out
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284, 288,
             297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
# points that place the face: nose tip, outer eye corners (subject's right, left), mouth corners,
# forehead centre (on the oval, used only to frame), chin (the same)
NOSE, EYE_R, EYE_L, MOUTH_R, MOUTH_L, FOREHEAD, CHIN = 1, 33, 263, 61, 291, 10, 152
# the key light: towards the camera, raised by this much along its up (45 degrees; docs/decisions.md)
KEY_LIGHT_RISE = 1.0
SETTINGS_VERSION = 5  # 5: each search turn lit from its own top  # 2: confidence is the share of the views that found the face
# The face landmarks a match pairs (a few dozen of the 468: spread over the face, off the
# outline, each side's twin checked by mirroring the MakeHuman template's detected landmarks
# across its symmetry plane: 0.001-0.03 ear widths apart). Left / right are the subject's own.
FACE_KEYPOINTS = (
    ("nose_tip", 1), ("nose_bridge", 6), ("nose_root", 168), ("glabella", 9), ("forehead", 151),
    ("subnasale", 2), ("upper_lip", 0), ("mouth_top", 13), ("mouth_bottom", 14), ("lower_lip", 17), ("chin", 199),
    ("right_eye_outer", 33), ("left_eye_outer", 263), ("right_eye_inner", 133), ("left_eye_inner", 362),
    ("right_brow_outer", 70), ("left_brow_outer", 300), ("right_brow_mid", 105), ("left_brow_mid", 334),
    ("right_brow_inner", 107), ("left_brow_inner", 336), ("right_lower_lid", 145), ("left_lower_lid", 374),
    ("right_mouth", 61), ("left_mouth", 291), ("right_nostril", 98), ("left_nostril", 327),
    ("right_nose_wing", 64), ("left_nose_wing", 294), ("right_cheek", 50), ("left_cheek", 280),
    ("right_cheek_low", 205), ("left_cheek_low", 425), ("right_cheekbone", 116), ("left_cheekbone", 345),
    ("right_upper_lip_side", 40), ("left_upper_lip_side", 270), ("right_lower_lip_side", 91), ("left_lower_lip_side", 321),
    ("right_jaw", 192), ("left_jaw", 416),
)
FACE_KEYPOINT_NAMES = tuple(n for n, _ in FACE_KEYPOINTS)


@dataclass
class FaceSettings:
    """resolution : render size (the face mesh works at 192 px inside);
    azimuths / elevations : the aimed views round the face's up, degrees from its front;
    frame : the aimed views frame a sphere this many face heights (forehead to chin) round the
    face; min_views : views that must agree on a landmark; tolerance : how far apart (fraction
    of the face height) their surface points may lie."""

    resolution: int = 384
    azimuths: tuple[float, ...] = (-45.0, -22.5, 0.0, 22.5, 45.0)
    elevations: tuple[float, ...] = (12.0, -12.0)
    frame: float = 1.5
    min_views: int = 3
    tolerance: float = 0.06

    def check(self) -> "FaceSettings":
        if not 128 <= int(self.resolution) <= 2048:
            raise InputError(f"face: resolution must be between 128 and 2048 pixels (got {self.resolution})")
        if int(self.min_views) < 2 or int(self.min_views) > len(self.azimuths) * len(self.elevations):
            raise InputError(f"face: min_views must be between 2 and the number of aimed views (got {self.min_views})")
        if not 0 < float(self.tolerance) < 1 or not 0.3 <= float(self.frame) <= 5:
            raise InputError("face: tolerance must lie in (0, 1) and frame in [0.3, 5]")
        return self


@dataclass
class FaceLandmarks:
    """Face landmarks of one mesh.

    names : (468,) ``face_NNN``; vertices : (468,) int64 (-1: not found); points : (468, 3) float64
    surface points (NaN where not found); confidence : (468,) float32 (share of the aimed views
    that agree); found_face : whether a face was found; views_found : aimed views that showed
    it; front, up : (3,) unit vectors of the face (NaN when no face)
    """

    names: tuple[str, ...]
    vertices: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    found_face: bool
    views_found: int
    front: np.ndarray
    up: np.ndarray
    model: str = "face"

    def found(self, min_confidence: float = 0.0) -> np.ndarray:
        return (self.vertices >= 0) & (self.confidence > min_confidence)

    def point(self, index: int) -> np.ndarray | None:
        return self.points[index] if self.vertices[index] >= 0 else None

    def as_dict(self) -> dict:
        return {"face": bool(self.found_face), "model": self.model, "views_found": int(self.views_found),
                "front": [round(float(x), 6) for x in self.front], "up": [round(float(x), 6) for x in self.up],
                "landmarks": [{"name": n, "vertex": int(v), "point": [round(float(x), 6) for x in p],
                               "confidence": round(float(c), 4), "model": self.model}
                              for n, v, p, c in zip(self.names, self.vertices, self.points, self.confidence) if v >= 0]}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"vertices": self.vertices, "points": self.points, "confidence": self.confidence,
                "frame": np.stack([self.front, self.up]), "info": np.array([float(self.found_face), float(self.views_found)])}

    @classmethod
    def from_arrays(cls, a: dict, model: str) -> "FaceLandmarks":
        return cls(FACE_NAMES, a["vertices"].astype(np.int64), a["points"].astype(np.float64),
                   a["confidence"].astype(np.float32), bool(a["info"][0]), int(a["info"][1]),
                   a["frame"][0].astype(np.float64), a["frame"][1].astype(np.float64), model)


def no_face(model: str, views_found: int = 0) -> FaceLandmarks:
    k = len(FACE_NAMES)
    nan3 = np.full(3, np.nan)
    return FaceLandmarks(FACE_NAMES, np.full(k, -1, np.int64), np.full((k, 3), np.nan), np.zeros(k, np.float32),
                         False, views_found, nan3, nan3.copy(), model)


# ----------------------------------------------------------------------------- rendering and lookup


def _render(v: torch.Tensor, f: torch.Tensor, cams, resolution: int):
    """Rasterise the views and shade them upright (``_shade`` with no turn)."""
    from ..render.raster import rasterize

    raster = rasterize(v, f, cams, (resolution, resolution), backend="torch")
    return _shade(raster, cams), raster


def _shade(raster, cams, turn: float = 0.0) -> np.ndarray:
    """Grey clay images (K, H, W) uint8 lit by a key light: from the camera, raised by
    ``KEY_LIGHT_RISE`` towards the top of the image as it will be seen turned ``turn`` degrees
    counter-clockwise (``_turn_images``). Faces are photographed so: the brows, nose and lips
    cast the shading a face detector knows (a headlight flattens them, a light from below
    darkens them); the search shades each turn of its views anew (no new raster)."""
    k, h, w = raster.mask.shape
    w2v = cams.world_to_view.double().cpu()
    right, up, to_cam = w2v[:, 0, :3], w2v[:, 1, :3], w2v[:, 2, :3]  # camera axes in world space
    t = math.radians(turn)
    light = to_cam + KEY_LIGHT_RISE * (math.cos(t) * up + math.sin(t) * right)
    light = (light / light.norm(dim=-1, keepdim=True)).numpy()
    mask = raster.mask.cpu().numpy()
    view = np.nonzero(mask)[0]
    normals = raster.normal.cpu().numpy()[mask]  # (p, 3) the covered pixels only
    lit = np.clip(np.einsum("pc,pc->p", normals, light[view]), 0.0, None)
    grey = np.full((k, h, w), 255, np.uint8)
    grey[mask] = np.round(255.0 * 0.85 * (0.3 + 0.7 * lit)).astype(np.uint8)
    return grey


def surface_points(raster, faces: np.ndarray, vertices: np.ndarray, view: int, xy: np.ndarray) -> np.ndarray:
    """The surface point under each pixel position of one view (raster triangle + barycentrics).

    xy : (k, 2) float pixel coordinates; returns (k, 3) float64, NaN where the pixel shows no surface
    """
    h, w = raster.triangle_id.shape[1:3]
    col = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, w - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, h - 1)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    tri = raster.triangle_id[view].cpu().numpy()[row, col]
    bary = raster.bary[view].cpu().numpy()[row, col].astype(np.float64)
    out = np.full((len(xy), 3), np.nan)
    ok = inside & (tri >= 0)
    out[ok] = np.einsum("kc,kcd->kd", bary[ok], vertices[faces[tri[ok]]])
    return out


def _turn_matrix(angle: float, size: int) -> np.ndarray:
    """(2, 3) affine map of pixel indices (OpenCV's: pixel centres at integers, y down) of an
    image turned ``angle`` degrees counter-clockwise about its centre."""
    import cv2

    return cv2.getRotationMatrix2D(((size - 1) / 2.0, (size - 1) / 2.0), float(angle), 1.0)


def _turn_images(images: np.ndarray, angle: float) -> np.ndarray:
    """Every image (K, S, S[, 3]) turned ``angle`` degrees counter-clockwise about its centre (white corners)."""
    import cv2

    if angle % 360 == 0:
        return images
    size = images.shape[1]
    m = _turn_matrix(angle, size)
    border = (255, 255, 255) if images.ndim == 4 else 255
    return np.stack([cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=border)
                     for img in images])


def _unturn_xy(xy: np.ndarray, angle: float, size: int) -> np.ndarray:
    """Pixel positions (centres at +0.5) in an image turned by ``angle`` -> in the original image."""
    if angle % 360 == 0:
        return np.array(xy, np.float64, copy=True)
    m = np.vstack([_turn_matrix(angle, size), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)
    return (np.asarray(xy, np.float64) - 0.5) @ inv[:2, :2].T + inv[:2, 2] + 0.5


def _frontalness(xy: np.ndarray) -> float:
    """How squarely a found face looks at the camera: the nose tip midway between the outer eye
    corners (1 frontal, 0 in profile)."""
    dr, dl = np.linalg.norm(xy[NOSE] - xy[EYE_R]), np.linalg.norm(xy[NOSE] - xy[EYE_L])
    return float(1.0 - abs(dr - dl) / max(dr + dl, 1e-9))


def _upright(xy: np.ndarray) -> bool:
    """Whether a face mesh lies upright in its image (forehead over chin within 45 degrees of the
    image's up). The face detector also fires on a face turned upside down and the face mesh then
    reads it with forehead and chin swapped; of the four turns of a view, the upright one counts."""
    up = xy[FOREHEAD] - xy[CHIN]
    return bool(-up[1] > abs(up[0]))


def _reads_upright(points: np.ndarray, front: np.ndarray) -> bool:
    """Whether the face mesh read the face the right way up: the mouth corners lie ahead of the
    outer eye corners (on the face's curve; in profile the eye corners sit well behind). A face
    turned upside down in the image can be read as upright with every label moved to its
    opposite (the eyes' on the mouth, the forehead's on the chin): that reading fits the picture
    as well, but puts its "mouth" behind its "eyes"."""
    eyes = (points[EYE_R] + points[EYE_L]) / 2
    mouth = (points[MOUTH_R] + points[MOUTH_L]) / 2
    return bool(np.all(np.isfinite(eyes)) and np.all(np.isfinite(mouth)) and float((mouth - eyes) @ front) > 0)


def _face_frame(points: np.ndarray, camera_pos: np.ndarray):
    """(centre, front, up, height) of a face from the surface points of its landmarks in one view."""
    need = [NOSE, EYE_R, EYE_L, MOUTH_R, MOUTH_L, FOREHEAD, CHIN]
    p = points[need]
    if not np.all(np.isfinite(p)):
        return None
    nose, eye_r, eye_l, mouth_r, mouth_l, forehead, chin = p
    up = forehead - chin
    height = float(np.linalg.norm(up))
    if height <= 0:
        return None
    up = up / height
    left = eye_l - eye_r
    front = np.cross(left, up)  # the subject's left x up = its front (right-handed)
    if np.linalg.norm(front) < 1e-12:
        return None
    front = front / np.linalg.norm(front)
    if float(front @ (camera_pos - nose)) < 0:  # a mirrored reading: trust the camera for the facing
        front = -front
    centre = (eye_r + eye_l + mouth_r + mouth_l) / 4 - 0.25 * height * front
    return centre, front, up, height


# ----------------------------------------------------------------------------- the search


def _search_directions() -> np.ndarray:
    """(32, 3) unit view directions spread over the sphere: an icosahedron's vertices and face
    centres (every direction lies within about 20 degrees of one)."""
    from scipy.spatial import ConvexHull

    g = (1.0 + 5.0 ** 0.5) / 2.0
    verts = np.array([(a, b * g, 0.0) for a in (-1, 1) for b in (-1, 1)], np.float64)
    verts = np.concatenate([verts, np.roll(verts, 1, axis=1), np.roll(verts, 2, axis=1)])  # the 12 vertices
    tris = ConvexHull(verts).simplices  # its 20 faces
    d = np.concatenate([verts, verts[tris].mean(1)])
    return d / np.linalg.norm(d, axis=1, keepdims=True)


# image turns tried on every search view, degrees counter-clockwise: the face detector takes
# faces up to about 30 degrees off upright, so steps of 45 leave none out
SEARCH_TURNS = (0, 90, 180, 270, 45, 135, 225, 315)
# the search views' size: the face detector sees every image at 128 px; 256 px renders (half the
# time of 384, a 2.25x smaller transfer to the models' process) found the same faces on the 6
# turned dev FAUST heads and the turned MakeHuman heads (docs/decisions.md): the frame each reading
# gives is only a candidate, checked and corrected by the aimed views
SEARCH_RESOLUTION = 256
# a face is found when this many of its 432 off-outline landmarks have views agreeing on them:
# real faces give 420-432 (MakeHuman, FAUST heads alone), the face mesh forced onto an animal's
# head 253 (smal_r 00211799_ferrari, 4 views); about four fifths
MIN_FACE_LANDMARKS = 340
# candidate frames the search hands to the aimed views, best first (each costs an aimed pass,
# about 0.4 s, only where the one before found too little)
SEARCH_CANDIDATES = 3
# a face this frontal (``_frontalness``) ends the search: the aimed views correct the rest
FRONTAL_ENOUGH = 0.85


def _find_face(vertices, faces, v, f, s: FaceSettings, model: PoseModel) -> list:
    """Where no body gives the head: views from all round the mesh, each tried at ``SEARCH_TURNS``;
    every face read upright and plausibly is a candidate frame (centre, front, up, height).
    Returns up to ``SEARCH_CANDIDATES`` distinct ones, most frontal first (a reading can still
    turn the face over; the aimed views tell which candidate is the face)."""
    from ..render.cameras import bounding_radius, sphere_cameras
    from ..render.raster import rasterize

    centre = (vertices.max(0) + vertices.min(0)) / 2
    radius = bounding_radius(vertices, center=centre)
    cams = sphere_cameras(centre, _search_directions(), radius)
    size = SEARCH_RESOLUTION
    raster = rasterize(v, f, cams, (size, size), backend="torch")
    found = []
    for angle in SEARCH_TURNS:
        dets = model.detect(_turn_images(_shade(raster, cams, angle), angle))
        for view, det in enumerate(dets):
            if det is None or not _upright(det.xy):
                continue
            xy = _unturn_xy(det.xy, angle, size)
            pts = surface_points(raster, faces, vertices, view, xy)
            frame = _face_frame(pts, cams.positions[view].double().numpy())
            if frame is not None and _reads_upright(pts, frame[1]):
                found.append((_frontalness(xy), frame))
        if found and max(score for score, _ in found) > FRONTAL_ENOUGH:
            break
    found.sort(key=lambda c: -c[0])
    out: list = []
    for _, frame in found:  # distinct: a face turned over or round is another candidate
        if all(float(frame[2] @ o[2]) < 0.5 or float(frame[1] @ o[1]) < 0.7 for o in out):
            out.append(frame)
        if len(out) == SEARCH_CANDIDATES:
            break
    return out


def _in_front(frame) -> np.ndarray:
    """A point well in front of a face frame (centre, front, up, height): where a camera looking
    at it stands (``_face_frame``'s check of which way the face looks)."""
    return np.asarray(frame[0]) + 10.0 * frame[3] * np.asarray(frame[1])


def _head_from_body(kp):
    """(centre, front, up, height) from body keypoints with a head (ears, eyes, nose), or None."""
    if kp is None or not getattr(kp, "humanoid", False):
        return None
    parts = [kp.point(n) for n in ("left_ear", "right_ear", "nose")]
    frame = kp.frame()
    if any(p is None for p in parts) or frame is None:
        return None
    ear_l, ear_r, nose = parts
    width = float(np.linalg.norm(ear_l - ear_r))
    front = frame[2]
    up = frame[1]
    return (ear_l + ear_r) / 2, front, up, width


def _aimed(vertices, faces, v, f, frame, s: FaceSettings, model: PoseModel):
    from ..render.cameras import aimed_cameras

    centre, front, up, height = frame
    cams = aimed_cameras(centre, front, up, s.frame * height, azimuths=s.azimuths, elevations=s.elevations)
    images, raster = _render(v, f, cams, int(s.resolution))
    dets = model.detect(images)
    per_view = []
    for view, det in enumerate(dets):
        if det is not None and _upright(det.xy):  # aimed upright: a face read upside down is misread
            per_view.append(surface_points(raster, faces, vertices, view, det.xy))
    return per_view


def _consensus(per_view: list, vertices: np.ndarray, tolerance: float, min_views: int):
    """Per landmark: the surface points the views agree on (within ``tolerance`` of the medoid),
    their mean snapped to the nearest vertex, and the agreeing share of the views that found the
    face."""
    from scipy.spatial import cKDTree

    k = len(FACE_NAMES)
    points, verts, conf = np.full((k, 3), np.nan), np.full(k, -1, np.int64), np.zeros(k, np.float32)
    if len(per_view) < min_views:
        return points, verts, conf
    stack = np.stack(per_view)  # (V, k, 3), NaN where a view shows no surface there
    tree = cKDTree(vertices)
    for j in range(k):
        pts = stack[:, j]
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if len(pts) < min_views:
            continue
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        close = d <= tolerance
        medoid = int(np.argmax(close.sum(1)))
        inl = close[medoid]
        if inl.sum() < min_views:
            continue
        p = pts[inl].mean(0)
        points[j], verts[j] = p, int(tree.query(p)[1])
        conf[j] = float(inl.sum()) / len(per_view)
    return points, verts, conf


def detect_face_landmarks(vertices: np.ndarray, faces: np.ndarray, *, body=None, settings: FaceSettings | None = None,
                          model: PoseModel | None = None, cache_dir: str | None = None,
                          use_cache: bool = True) -> FaceLandmarks:
    """The face landmarks of one mesh (module docstring); ``found_face`` False where no face is seen.

    vertices : (n, 3) float; faces : (m, 3) int
    body : the mesh's body Keypoints, where detected (they place the head; None: search the mesh)
    model : the face mesh (the chosen back end's by default); cache_dir / use_cache : as for
    the body keypoints (per mesh content, settings and model)
    """
    from ..features.cache import FeatureCache, default_cache_dir, mesh_key

    s = (settings or FaceSettings()).check()
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0 or faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise InputError(f"face: expected (n, 3) vertices and (m, 3) triangles, got {vertices.shape} and {faces.shape}")
    model = model if model is not None else face_model()
    head = _head_from_body(body)
    cache = FeatureCache(cache_dir or os.path.join(os.path.dirname(default_cache_dir()), "keypoints"))
    key = mesh_key(vertices, faces, {"kind": "face", "version": SETTINGS_VERSION, "model": model.name,
                                     "head": None if head is None else [np.round(x, 5).tolist() for x in head[:3]],
                                     **{k: (list(x) if isinstance(x, tuple) else x) for k, x in vars(s).items()}})
    if use_cache:
        hit = cache.get(key)
        if hit is not None:
            return FaceLandmarks.from_arrays(hit, model.name)
    v, f = torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.int64)
    candidates = [head] if head is not None else _find_face(vertices, faces, v, f, s, model)
    out = no_face(model.name)
    n_views = len(s.azimuths) * len(s.elevations)
    best = None
    for frame in candidates:
        for _ in range(2):  # the aimed views, then once more from the frame their landmarks give
            if frame is None:
                break
            per_view = _aimed(vertices, faces, v, f, frame, s, model)
            pts, verts, conf = _consensus(per_view, vertices, s.tolerance * frame[3], int(s.min_views))
            if best is None or (verts >= 0).sum() > (best[3] >= 0).sum():
                best = (len(per_view), frame, pts, verts, conf)
            if len(per_view) >= 0.8 * n_views and (verts >= 0).sum() >= MIN_FACE_LANDMARKS:
                break  # the views saw the face squarely enough: another pass would change little
            frame = _face_frame(pts, _in_front(frame))
        if best is not None and best[0] > n_views // 2 and (best[3] >= 0).sum() >= MIN_FACE_LANDMARKS:
            break  # most aimed views found the face and agree: this candidate is it
    if best is not None:
        n_found, frame, pts, verts, conf = best
        # the face's own frame from its landmarks where they give one (the views' frame is the
        # search's estimate: off by up to its 20-degree direction steps)
        frame = _face_frame(pts, _in_front(frame)) or frame
        oval = list(FACE_OVAL)  # the outline slides with the view: it framed the face, it is no landmark
        verts[oval], conf[oval], pts[oval] = -1, 0.0, np.nan
        out = FaceLandmarks(FACE_NAMES, verts, pts, conf, bool((verts >= 0).sum() >= MIN_FACE_LANDMARKS), n_found,
                            np.asarray(frame[1], np.float64), np.asarray(frame[2], np.float64), model.name)
        if not out.found_face:
            out = no_face(model.name, n_found)
    if use_cache:
        cache.put(key, out.to_arrays())
    return out


def face_keypoints(face: FaceLandmarks):
    """The ``FACE_KEYPOINTS`` of a face as body-style Keypoints (engine.keypoints.detect): what a
    match pairs, orients by and judges with. ``humanoid`` says a face was found."""
    from .detect import Keypoints

    idx = [i for _, i in FACE_KEYPOINTS]
    return Keypoints(FACE_KEYPOINT_NAMES, face.vertices[idx].copy(), face.points[idx].copy(), face.confidence[idx].copy(),
                     bool(face.found_face), int(face.views_found), "y", face.model)
