"""Named 3D body landmarks of a mesh from a 2D pose model on multi-view renders.

How: render clay images of the mesh from an orbit of views, run the pose model
(:mod:`engine.keypoints.pose_model`) on each, and triangulate every named
keypoint from the camera rays through its pixel in the views that see it
(rays that disagree with the others are dropped: a view that swapped left and
right or mistook a limb). The triangulated point is the joint estimate inside
the body; the landmark is the visible surface vertex nearest to it.

The orbit's axis is searched (world y, z, then x) so that a figure lying down
or modelled Z-up is seen from around its body; the model itself is rotation
invariant, so which way is up comes from the landmarks (hips -> shoulders), not
from the renders. Results are cached per mesh content and settings.

``detect_keypoints(vertices, faces)`` is the one-shot call, ``detect_keypoints_many``
the same for several meshes with the model's work overlapping the renders; a mesh
where no body is found gives ``Keypoints.humanoid == False`` (never an exception).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import InputError
from .pose_model import ALL_NAMES, BODY_NAMES, PoseModel, body_model, mirror_name
from .triangulation import MIN_VISIBILITY, lift_detections

# rays further than this from the consensus point (fraction of the mesh's bounding radius:
# ~5 cm on a 1.8 m body, about a joint's width) are dropped as disagreeing views
RAY_TOLERANCE = 0.06
TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
# a humanoid shows each level of these (one side at least), confidently (every view that sees one agrees), stacked
# from top to bottom along the body's up axis. Animals and a centaur also make the pose
# model fire in some views (a cow's head as a face, its legs as legs), but miss a knee,
# disagree between views or stack the chain wrongly
CHAIN = (("nose",), ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
         ("left_ankle", "right_ankle"))
# 0.6: the clearly found bodies score 0.8-1.0 on these (faust5k, X Bot, MakeHuman, ogre);
# the animals that fire score 0.4-0.7 on the few they have
MIN_CORE_CONFIDENCE = 0.6
SETTINGS_VERSION = 2  # 2: hand keypoints


@dataclass
class KeypointSettings:
    """views : orbit views per axis; resolution : render size in pixels (the pose model
    works at 256 px inside, 384 leaves the body large in a view with margin);
    elevation : camera elevation in degrees; min_views : views that must find the body
    for the mesh to count as humanoid."""

    views: int = 8
    resolution: int = 384
    elevation: float = 10.0
    min_views: int = 4
    axes: tuple[str, ...] = ("y", "z", "x")
    # finger landmarks from close-up renders of each hand through the hand model (+2 s a mesh).
    # Off for matching: on FAUST's mitten hands the model places fingers that are not there,
    # and the match numbers were measured without them; `landmarks --hands` turns them on
    hands: bool = False

    def check(self) -> "KeypointSettings":
        if int(self.views) < 3:
            raise InputError(f"keypoints: views must be >= 3 (got {self.views})")
        if not 128 <= int(self.resolution) <= 2048:
            raise InputError(f"keypoints: resolution must be between 128 and 2048 pixels (got {self.resolution})")
        if not 1 <= int(self.min_views) <= int(self.views):
            raise InputError(f"keypoints: min_views must be between 1 and views ({self.views}), got {self.min_views}")
        if not self.axes or any(a not in ("x", "y", "z") for a in self.axes):
            raise InputError(f"keypoints: axes must be a list of x, y, z (got {self.axes!r})")
        return self


# the body regions named in reports (where a fit leaves the target uncovered): each keypoint
# name's part, first match wins ("foot" before the hand's "index")
_REGIONS = (("eye", "head"), ("ear", "head"), ("nose", "head"), ("shoulder", "shoulder"), ("elbow", "arm"),
            ("hip", "hip"), ("knee", "knee"), ("ankle", "foot"), ("heel", "foot"), ("toe", "foot"))


def body_region(name: str) -> str:
    """The body region of a keypoint name, for reports: "head", or a side and a part
    ("left hand", "right knee")."""
    side, _, part = name.partition("_")
    if side not in ("left", "right"):
        side, part = "", name
    region = next((r for key, r in _REGIONS if key in part), "hand")  # wrist, hand and finger names
    return region if region == "head" else f"{side} {region}".strip()


@dataclass
class Keypoints:
    """Named landmarks of one mesh.

    Attributes
    ----------
    names : (k,) keypoint names (``engine.keypoints.pose_model.ALL_NAMES``: body, then hands)
    vertices : (k,) int64 vertex index in the mesh given (-1 where not found)
    points : (k, 3) float64 triangulated joint estimates in the mesh's coordinates (NaN where not found)
    confidence : (k,) float32 in [0, 1] (0 where not found)
    humanoid : whether a body was found in enough views
    views_found : views (of the chosen orbit) where the pose model found the body
    axis : the orbit axis the landmarks come from
    model : which model produced them
    """

    names: tuple[str, ...]
    vertices: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    humanoid: bool
    views_found: int
    axis: str
    model: str = "mediapipe-pose"
    views: list = field(default_factory=list, repr=False)  # per-view 2D detections (for pictures), not cached

    def index(self, name: str) -> int:
        return self.names.index(name)

    def found(self, min_confidence: float = 0.0) -> np.ndarray:
        """(k,) bool: landmarks with a vertex and a confidence above ``min_confidence``."""
        return (self.vertices >= 0) & (self.confidence > min_confidence)

    def point(self, name: str) -> np.ndarray | None:
        i = self.index(name)
        return self.points[i] if self.vertices[i] >= 0 else None

    def mirrored(self) -> "Keypoints":
        """The same landmarks with left and right exchanged (each sided name takes its twin's
        vertex, point and confidence): the sides of a body the model saw from behind as its front."""
        from .pose_model import mirror_name

        order = np.asarray([self.index(mirror_name(n)) if mirror_name(n) in self.names else i
                            for i, n in enumerate(self.names)])
        return replace(self, vertices=self.vertices[order].copy(), points=self.points[order].copy(),
                       confidence=self.confidence[order].copy(), views=[])

    def frame(self) -> np.ndarray | None:
        """(3, 3) rows: the body's left, up and front unit vectors (right-handed: front = left x up),
        from the shoulders and hips; None when those are missing."""
        p = {n: self.point(n) for n in TORSO}
        if any(v is None for v in p.values()):
            return None
        up = (p["left_shoulder"] + p["right_shoulder"] - p["left_hip"] - p["right_hip"]) / 2
        left = (p["left_shoulder"] - p["right_shoulder"]) + (p["left_hip"] - p["right_hip"])
        up = up / max(np.linalg.norm(up), 1e-12)
        left = left - up * float(left @ up)
        if np.linalg.norm(left) < 1e-9:
            return None
        left = left / np.linalg.norm(left)
        return np.stack([left, up, np.cross(left, up)])

    def model_of(self, name: str) -> str:
        """Which model found a landmark (the body's pose model, or the hand model for fingers)."""
        return "mediapipe-hands" if name in ALL_NAMES[len(BODY_NAMES):] else self.model

    def as_dict(self) -> dict:
        """JSON-ready description (what ``python -m engine landmarks`` writes)."""
        return {
            "humanoid": bool(self.humanoid), "model": self.model, "axis": self.axis, "views_found": int(self.views_found),
            "landmarks": [
                {"name": n, "vertex": int(v), "point": [round(float(x), 6) for x in p],
                 "confidence": round(float(c), 4), "model": self.model_of(n)}
                for n, v, p, c in zip(self.names, self.vertices, self.points, self.confidence) if v >= 0
            ],
        }

    def carried_to(self, own_vertices: np.ndarray, vertices: np.ndarray) -> "Keypoints":
        """These landmarks on another mesh of the same surface in the same frame (a decimated copy):
        each found landmark takes the vertex of ``vertices`` (n', 3) nearest to its own vertex in
        ``own_vertices`` (n, 3), the mesh it was detected on; points and confidences stay."""
        from scipy.spatial import cKDTree

        out = Keypoints(self.names, self.vertices.copy(), self.points.copy(), self.confidence.copy(), self.humanoid,
                        self.views_found, self.axis, self.model)
        found = self.vertices >= 0
        if found.any():
            own = np.asarray(own_vertices, np.float64)[self.vertices[found]]
            out.vertices[found] = cKDTree(np.asarray(vertices, np.float64)).query(own)[1]
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"vertices": self.vertices, "points": self.points, "confidence": self.confidence,
                "info": np.array([float(self.humanoid), float(self.views_found), "xyz".index(self.axis)])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], names=ALL_NAMES, model: str = "mediapipe-pose") -> "Keypoints":
        info = a["info"]
        return cls(tuple(names), a["vertices"].astype(np.int64), a["points"].astype(np.float64),
                   a["confidence"].astype(np.float32), bool(info[0]), int(info[1]), "xyz"[int(info[2])], model)


def not_found(names=ALL_NAMES, axis: str = "y", model: str = "mediapipe-pose") -> Keypoints:
    k = len(names)
    return Keypoints(tuple(names), np.full(k, -1, np.int64), np.full((k, 3), np.nan), np.zeros(k, np.float32),
                     False, 0, axis, model)


# ----------------------------------------------------------------------------- detection


def _render(vertices: np.ndarray, faces: np.ndarray, axis: str, s: KeypointSettings):
    """Clay renders of the mesh from an orbit around ``axis``: images (K, H, W, 3) uint8, cameras, raster."""
    from ..render.cameras import bounding_radius, orbit_cameras
    from ..render.raster import rasterize
    from ..render.shading import shade_lambert

    lo, hi = vertices.min(0), vertices.max(0)
    center = (lo + hi) / 2
    cams = orbit_cameras(int(s.views), elevations=(float(s.elevation),), center=center,
                         fit_radius=bounding_radius(vertices, center=center), up=axis)
    v = torch.as_tensor(vertices, dtype=torch.float32)
    f = torch.as_tensor(faces, dtype=torch.int64)
    raster = rasterize(v, f, cams, (int(s.resolution), int(s.resolution)), backend="torch")
    img = shade_lambert(raster, cams, v, f)  # (K, 3, H, W) in [0, 1]
    images = (img.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, cams, raster


def _torso_seen(det) -> bool:
    if det is None:
        return False
    vis = det.visibility[[BODY_NAMES.index(n) for n in TORSO]]
    return bool(np.all(vis >= MIN_VISIBILITY))


def _lift(vertices, faces, dets, cams, raster, s: KeypointSettings, axis: str, model: str) -> Keypoints:
    found = [d if _torso_seen(d) else None for d in dets]
    radius = float(np.linalg.norm(vertices.max(0) - vertices.min(0))) / 2
    points, verts, conf = lift_detections(vertices, faces, found, cams, raster, s.resolution, RAY_TOLERANCE * radius,
                                          len(BODY_NAMES))
    out = not_found(ALL_NAMES, axis, model)
    nb = len(BODY_NAMES)
    out.points[:nb], out.vertices[:nb], out.confidence[:nb] = points, verts, conf
    out.views_found = sum(d is not None for d in found)
    out.humanoid = out.views_found >= s.min_views and _is_upright_chain(out)
    return out


def _is_upright_chain(kp: Keypoints) -> bool:
    """Every ``CHAIN`` level confidently found (one side is enough: a foot hidden by helper geometry
    or a skirt), each level below the one before along the body's up."""
    levels = [[n for n in level if kp.confidence[kp.index(n)] >= MIN_CORE_CONFIDENCE] for level in CHAIN]
    frame = kp.frame()
    if frame is None or not all(levels):
        return False
    heights = [np.mean([kp.point(n) @ frame[1] for n in level]) for level in levels]
    return bool(np.all(np.diff(heights) < 0))


def nearly_a_body(kp: Keypoints, min_views: int) -> bool:
    """Not a body, but close to one: the torso in at least ``min_views`` views and every ``CHAIN``
    level seen (one side) with at least ``MIN_VISIBILITY``, only not all confidently. A decimated
    copy of a body can blur one level so (MakeHuman's base mesh with its helper geometry at 3000
    vertices: ankles 0.58, the rest 0.79-1.0); the animals tried miss a level or show a level
    below it (smal_r's ferrari, cow, hippo, cougar, dog, tosca's cat: 0-0.45 on their weakest)."""
    levels = [max(float(kp.confidence[kp.index(n)]) for n in level) for level in CHAIN]
    return not kp.humanoid and kp.views_found >= min_views and min(levels) >= MIN_VISIBILITY


def _axis_order(vertices: np.ndarray, axes) -> list[str]:
    """The orbit axes to try, longest extent of the mesh first (an orbit round a body's long
    axis sees all of it in every view); extents within 10 % keep the given order (Y, then Z:
    the usual up axes), so a T-pose, as wide as it is tall, is still orbited round its up."""
    ext = vertices.max(0) - vertices.min(0)
    length = {a: float(ext["xyz".index(a)]) for a in axes}
    order = list(axes)
    return sorted(order, key=lambda a: (-round(length[a] / (0.1 * max(length.values()) + 1e-30)), order.index(a)))


def _model(model: PoseModel | None) -> PoseModel:
    return model if model is not None else body_model()


def detect_keypoints(vertices: np.ndarray, faces: np.ndarray, *, settings: KeypointSettings | None = None,
                     model: PoseModel | None = None, cache_dir: str | None = None, use_cache: bool = True,
                     progress=None, keep_views: bool = False, hand_model: PoseModel | None = None) -> Keypoints:
    """Named body landmarks of one mesh (see the module docstring).

    vertices : (n, 3) float; faces : (m, 3) int
    settings : render / search settings; model : the pose model (MediaPipe pose by default)
    hand_model : the hand model for the close-ups of the hands (MediaPipe hands by default)
    cache_dir : the feature cache folder (None: the default); use_cache : read / write it
    progress : optional object with ``update(fraction)`` (cancellation goes through it)
    keep_views : keep the renders and 2D detections on the result (``Keypoints.views``), for pictures
    returns Keypoints (``humanoid`` False when no body was found in enough views)
    """
    return detect_keypoints_many([(vertices, faces)], settings=settings, model=model, cache_dir=cache_dir,
                                 use_cache=use_cache, progress=progress, keep_views=keep_views,
                                 hand_model=hand_model)[0]


def detect_keypoints_many(meshes, *, settings: KeypointSettings | None = None, model: PoseModel | None = None,
                          cache_dir: str | None = None, use_cache: bool = True, progress=None,
                          keep_views: bool = False, hand_model: PoseModel | None = None,
                          stop_at_miss: bool = False, meanwhile=None) -> list[Keypoints | None]:
    """:func:`detect_keypoints` of several meshes (a match's source and target), overlapped: the pose
    model loads and runs on a helper thread (the MediaPipe models in their own process,
    engine.keypoints.pose_server: the thread waits without Python's lock) while this one renders
    every mesh's first orbit and then does the caller's ``meanwhile`` work; other orbits, when
    the first does not show the body, follow one by one.

    meshes : sequence of (vertices (n, 3) float, faces (m, 3) int); the other arguments as in
    :func:`detect_keypoints` (``progress`` runs over all meshes)
    stop_at_miss : once a mesh is known to show no body (cached, or detected: in order), the
        meshes after it are not searched further, and come back None (a pair that needs both)
    meanwhile : optional callable (no arguments) run on this thread while the model works (or
        right away when every mesh is cached); what it raises is raised
    returns one Keypoints (or None, see ``stop_at_miss``) per mesh, in order
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..features.cache import FeatureCache, default_cache_dir, mesh_key

    s = (settings or KeypointSettings()).check()
    arrays = []
    for vertices, faces in meshes:
        v = np.asarray(vertices, np.float64)
        f = np.asarray(faces, np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise InputError(f"keypoints: expected (n, 3) vertices and (m, 3) triangles, got {v.shape} and {f.shape}")
        arrays.append((v, f))
    pm = _model(model)
    cache = FeatureCache(cache_dir or os.path.join(os.path.dirname(default_cache_dir()), "keypoints"))
    keys = [mesh_key(v, f, {"kind": "keypoints", "version": SETTINGS_VERSION, "model": pm.name, **vars(s)})
            for v, f in arrays]
    out: list[Keypoints | None] = [None] * len(arrays)
    if use_cache and not keep_views:
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is not None:
                out[i] = Keypoints.from_arrays(hit, ALL_NAMES, pm.name)
    todo = [i for i in range(len(arrays)) if out[i] is None]
    if not todo or (stop_at_miss and any(kp is not None and not kp.humanoid for kp in out)):
        if meanwhile is not None:
            meanwhile()
        return out
    share = 1.0 / len(todo)
    pool = ThreadPoolExecutor(1, thread_name_prefix="stablewrap-pose")
    try:
        if hasattr(pm, "warm_up"):  # (a duck-typed model may have none) the jobs run in order: the
            pool.submit(pm.warm_up)  # model is loaded by the time the first images are
        first = {}
        for n, i in enumerate(todo):  # each mesh's images go to the model as soon as they are rendered
            v, f = arrays[i]
            images, cams, raster = _render(v, f, _axis_order(v, s.axes)[0], s)
            first[i] = (images, cams, raster, pool.submit(pm.detect, images))
            if progress is not None:
                progress.update((n + 0.25) * share)
        if meanwhile is not None:
            meanwhile()
        for n, i in enumerate(todo):
            v, f = arrays[i]
            kp, best = _search(v, f, s, pm, first.pop(i), progress, n * share, share)
            if kp.humanoid and s.hands:
                from .hands import add_hand_keypoints

                add_hand_keypoints(v, f, kp, hand_model)
            if use_cache:
                cache.put(keys[i], kp.to_arrays())
            if keep_views:
                n_found, axis, dets, cams, raster, images = best
                kp.views = [(images[j], dets[j]) for j in range(len(dets))]
            out[i] = kp
            if stop_at_miss and not kp.humanoid:
                break
    finally:  # on a cancel too: detections not started are dropped, a running one is waited for
        pool.shutdown(wait=True, cancel_futures=True)
    if progress is not None:
        progress.update(1.0)
    return out


def _search(v: np.ndarray, f: np.ndarray, s: KeypointSettings, pm: PoseModel, first: tuple, progress,
            offset: float, share: float):
    """The orbit search of one mesh from its first orbit (images, cameras, raster and the pose
    model's future, round the first of ``_axis_order``): further axes until one shows the body in
    most views (and, where the next axis is as long as this one, its landmarks make a body: a
    T-pose orbited round its arm span sees the torso everywhere but blurs the legs); returns the
    lifted Keypoints of the best orbit (a body first, then the most views) and that orbit's (views
    found, axis, detections, cameras, raster, images)."""
    images, cams, raster, job = first
    axes = _axis_order(v, s.axes)
    ext = np.ptp(v, axis=0)
    best = None
    for n_axis, axis in enumerate(axes):
        if n_axis:
            images, cams, raster = _render(v, f, axis, s)
            if progress is not None:
                progress.update(offset + share * (n_axis + 0.5) / len(axes))
            dets = pm.detect(images)
        else:
            dets = job.result()
        n_found = sum(_torso_seen(d) for d in dets)
        kp = _lift(v, f, dets, cams, raster, s, axis, pm.name) if n_found >= 2 else not_found(ALL_NAMES, axis, pm.name)
        if best is None or (kp.humanoid, n_found) > (best[0].humanoid, best[1][0]):
            best = (kp, (n_found, axis, dets, cams, raster, images))
        if progress is not None:
            progress.update(offset + share * (n_axis + 1) / len(axes))
        # most views found: this orbit sees the body; the other axes cannot do much better, unless
        # the next is as long as this one (which of the two is up is open) and no body came out
        if n_found >= max(s.min_views, int(0.75 * s.views)):
            nxt = axes[n_axis + 1] if n_axis + 1 < len(axes) else None
            if best[0].humanoid or nxt is None or not _same_extent(ext, axis, nxt):
                break
    return best


def _same_extent(ext: np.ndarray, a: str, b: str) -> bool:
    """Whether the mesh's extents ``ext`` (3,) along axes ``a`` and ``b`` differ by at most 10 % of
    the largest extent: which of the two is the body's up is open (``_axis_order`` then keeps them,
    up to its rounding, in the given order)."""
    return abs(float(ext["xyz".index(a)] - ext["xyz".index(b)])) <= 0.1 * float(ext.max())


def keypoint_pairs(source: Keypoints, target: Keypoints, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Landmark pairs found on both meshes, each side with more than ``min_confidence`` (the
    match uses ``engine.correspond.keypoint_pairs.MIN_PAIR_CONFIDENCE``).

    returns (p, 2) int64 (source vertex, target vertex) and (p,) float64 weights (the product
    of the two confidences), in the order of ``source.names``
    """
    ok = source.found(min_confidence) & target.found(min_confidence)
    pairs = np.stack([source.vertices[ok], target.vertices[ok]], axis=1).astype(np.int64)
    return pairs, (source.confidence[ok] * target.confidence[ok]).astype(np.float64)


__all__ = ["Keypoints", "KeypointSettings", "detect_keypoints", "detect_keypoints_many", "keypoint_pairs", "triangulate", "camera_rays",
           "mirror_name", "BODY_NAMES"]
