"""What every task shares: the names results are stored under, the checks of what the worker
sends back, reading a pair of meshes, and the ``Task`` / ``MappedTask`` bases. The task modules
(``tasks``, ``landmark_tasks``, ``part_tasks``, ``morph_tasks``, ``bake_tasks``) build on it."""
from __future__ import annotations

from typing import Optional

import bpy
import numpy as np

from . import mesh_io
from .mesh_io import MeshDataError
from .worker_client import StableWrapAddonError


# names written into the scene
ATTR_TARGET_FACE = "sw_target_face"


ATTR_TARGET_BARY = "sw_target_bary"


ATTR_CONFIDENCE = "sw_confidence"


ATTR_SOURCE_FACE = "sw_source_face"


ATTR_SOURCE_BARY = "sw_source_bary"


ATTR_COLOR = "sw_correspondence"


FIT_KEY = "StableWrap fit"


MORPH_PREFIX = "StableWrap morph "


UV_NAME = "StableWrap UV"


IMAGE_SUFFIX = " StableWrap bake"


class TaskError(StableWrapAddonError):
    """A clear, one-line reason why a task cannot run or its result cannot be written."""


def resolve_object(obj_or_name, role: str):
    if isinstance(obj_or_name, str):
        obj = bpy.data.objects.get(obj_or_name)
        if obj is None:
            raise TaskError(f"{role} object '{obj_or_name}' not found")
        return obj
    return obj_or_name


def check_pair(source, target) -> None:
    if source is None or target is None:
        raise TaskError("pick a source and a target mesh" if source is None and target is None
                        else f"pick a {'source' if source is None else 'target'} mesh")
    if source == target:
        raise TaskError(f"source and target are the same object ('{source.name}'); pick two different meshes")
    try:
        mesh_io.check_mesh_object(source, "source")
        mesh_io.check_mesh_object(target, "target")
    except MeshDataError as exc:
        raise TaskError(str(exc)) from None


def check_length(name: str, arr: np.ndarray, shape: tuple) -> np.ndarray:
    if arr is None:
        raise TaskError(f"engine reply has no '{name}'")
    if tuple(arr.shape) != tuple(shape):
        raise TaskError(f"engine reply '{name}' has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise TaskError(f"engine reply '{name}' contains NaN or infinite values")
    return arr


def check_faces(name: str, arr: np.ndarray, n_faces: int) -> None:
    if len(arr) and (arr.min() < 0 or arr.max() >= n_faces):
        raise TaskError(f"engine reply '{name}' refers to triangle {int(arr.max())} of a mesh with {n_faces}")


def check_unchanged(objects, signatures, when: str) -> None:
    """Refuse to write when an object was deleted or its mesh changed since the job read it
    (``signatures``: their ``mesh_signature`` then; ``when``: the rest of the one-line error)."""
    for obj, sig in zip(objects, signatures):
        if obj.name not in bpy.data.objects or mesh_signature(obj) != sig:
            raise TaskError(f"'{sig[0]}' was changed or deleted {when}")


def read_pair(task, use_evaluated: bool, rest_pose: bool = False) -> dict:
    """The source and target meshes of ``task`` as the engine's pair arrays (world space, float64:
    objects far from the origin keep their precision); sets ``task.src``, ``task.tgt``,
    ``task.signature`` and ``task.pose_note`` (how a rigged target was read, "" otherwise).
    Match and Detect Landmarks send the same geometry, so the engine's cached detections serve
    both. A target deformed by an armature is read in the pose the viewport shows (its modifiers
    applied) unless ``rest_pose``; where its other modifiers change its vertex count, in its
    rest pose, and the note says so."""
    task.pose_note = ""
    try:
        src = mesh_io.read_mesh(task.source, "source", evaluated=use_evaluated)
        rig = None if use_evaluated else posing_armature(task.target)
        tgt = None
        if rig is not None and not rest_pose:
            try:
                tgt = mesh_io.read_mesh(task.target, "target", evaluated=True)
                task.pose_note = f"target '{task.target.name}' matched in the pose shown (armature '{rig}'; Rest pose to match it unposed)"
            except MeshDataError:
                task.pose_note = (f"target '{task.target.name}' matched in its rest pose: its modifiers change its vertex "
                                  "count, so the pose shown cannot be read (apply them, or turn on Use modifiers)")
        elif rig is not None:
            task.pose_note = f"target '{task.target.name}' matched in its rest pose (armature '{rig}' not applied)"
        if tgt is None:
            tgt = mesh_io.read_mesh(task.target, "target", evaluated=use_evaluated)
    except MeshDataError as exc:
        raise TaskError(str(exc)) from None
    task.src, task.tgt = src, tgt
    task.signature = (mesh_signature(task.source), mesh_signature(task.target))
    return {"src_vertices": src.world_vertices(), "src_faces": src.triangles,
            "tgt_vertices": tgt.world_vertices(), "tgt_faces": tgt.triangles}


def posing_armature(obj) -> str | None:
    """The name of the armature deforming ``obj`` in the viewport (an enabled Armature modifier
    bound to an armature object), None when none does."""
    for mod in obj.modifiers:
        if mod.type == "ARMATURE" and mod.show_viewport and mod.object is not None:
            return mod.object.name
    return None


def topology_key(triangles: np.ndarray) -> str:
    """A short key of a triangle list (count and a hash of the indices): a stored map is only
    valid for the source topology it was made with."""
    import hashlib

    tris = np.ascontiguousarray(triangles, np.int64)
    return f"{len(tris)}:{hashlib.sha1(tris.tobytes()).hexdigest()[:16]}"


def mesh_signature(obj) -> tuple:
    return (obj.name, len(obj.data.vertices), len(obj.data.polygons), len(obj.data.loops))


class EditModeGuard:
    """Leave edit mode while results are written (edit-mode data would overwrite them), then return."""

    def __init__(self, *objects) -> None:
        self.objects = [o for o in objects if o is not None]
        self.restore = False

    def __enter__(self):
        ctx_obj = bpy.context.view_layer.objects.active if bpy.context.view_layer else None
        if any(o.mode == "EDIT" for o in self.objects) and ctx_obj is not None and ctx_obj.mode == "EDIT":
            bpy.ops.object.mode_set(mode="OBJECT")
            self.restore = True
        for o in self.objects:
            if o.mode == "EDIT":
                o.update_from_editmode()
        return self

    def __exit__(self, *exc):
        if self.restore:
            bpy.ops.object.mode_set(mode="EDIT")
        return False


def correspondence_colors(points: np.ndarray) -> np.ndarray:
    """(n, 4) float32 RGBA: bounding-box-normalised positions as colours (a smooth, readable map)."""
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    rgb = (p - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
    return np.concatenate([0.1 + 0.85 * rgb, np.ones((len(p), 1))], axis=1).astype(np.float32)


def interpolate(values: np.ndarray, triangles: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Values at points given as (triangle, barycentric) of a mesh with per-vertex ``values``."""
    return np.einsum("nk,nk...->n...", bary.astype(np.float64), values[triangles[face]].astype(np.float64))


def landmark_pairs(source, target) -> np.ndarray:
    """(k, 2) int32 (source vertex, target vertex) pairs stored on the source for this target."""
    pairs = [(lm.source_vertex, lm.target_vertex) for lm in source.stablewrap.landmarks if lm.target == target]
    arr = np.asarray(pairs, np.int32).reshape(-1, 2)
    ns, nt = len(source.data.vertices), len(target.data.vertices)
    if len(arr) and (arr[:, 0].max() >= ns or arr[:, 1].max() >= nt):
        raise TaskError(f"a landmark refers to a vertex that no longer exists (source has {ns}, target {nt} vertices); clear the landmarks")
    return arr


class Task:
    label = "StableWrap"
    cmd = ""
    # the level the finished job is reported at: a result that may be wrong is a WARNING, never an
    # Info-level success (apply sets it)
    report_level = "INFO"

    def prepare(self) -> tuple[str, dict, dict]:
        raise NotImplementedError

    def apply(self, data: dict, arrays: dict) -> str:
        raise NotImplementedError


def applied_on_top(source) -> str:
    """What Blender applies over the fit shape key when it shows the source: other shape keys
    with a value and enabled modifiers ('' when nothing)."""
    what = []
    sk = source.data.shape_keys
    if sk is not None and sk.use_relative:
        keys = [k for k in sk.key_blocks[1:] if k.name != FIT_KEY and not k.mute and k.value != 0.0]
        if keys:
            what.append(f"shape key{'s' if len(keys) > 1 else ''} " + ", ".join(f"'{k.name}'" for k in keys[:3])
                        + (" etc." if len(keys) > 3 else ""))
    mods = [m for m in source.modifiers if m.show_viewport]
    if mods:
        what.append(f"modifier{'s' if len(mods) > 1 else ''} " + ", ".join(f"'{m.name}'" for m in mods[:3])
                    + (" etc." if len(mods) > 3 else ""))
    return " and ".join(what)


def stored_map(target, source) -> tuple[np.ndarray, np.ndarray]:
    """The target -> source map written by Match (triangle, barycentric)."""
    face = mesh_io.read_attribute(target.data, ATTR_SOURCE_FACE)
    bary = mesh_io.read_attribute(target.data, ATTR_SOURCE_BARY)
    if face is None or bary is None:
        raise TaskError(f"'{target.name}' has no correspondence yet: run Match first")
    partner = target.stablewrap.matched_with
    if partner is not None and partner != source:
        raise TaskError(f"'{target.name}' was matched with '{partner.name}', not '{source.name}': "
                        f"run Match on '{source.name}' -> '{target.name}' first")
    return face, bary


class MappedTask(Task):
    """Base for transfers that use the stored target -> source map."""

    def __init__(self, source, target) -> None:
        self.source = resolve_object(source, "source")
        self.target = resolve_object(target, "target")

    def _common(self):
        check_pair(self.source, self.target)
        face, bary = stored_map(self.target, self.source)
        src_tris, src_loops, _ = mesh_io.read_triangles(self.source.data)
        tgt_tris, tgt_loops, tgt_polys = mesh_io.read_triangles(self.target.data)
        stored = self.target.stablewrap.source_topology
        if stored and stored != topology_key(src_tris):
            raise TaskError(f"'{self.source.name}' changed since Match (its faces are not the ones matched): run Match again")
        check_faces("sw_source_face", face, len(src_tris))
        self.src_tris, self.src_loops, self.tgt_tris, self.tgt_loops = src_tris, src_loops, tgt_tris, tgt_loops
        self.tgt_polys = tgt_polys
        self.signature = (mesh_signature(self.source), mesh_signature(self.target))
        return {"src_faces": src_tris, "tgt_faces": tgt_tris, "tgt_to_src_face": face, "tgt_to_src_bary": bary}

    def _still_same(self):
        check_unchanged((self.source, self.target), self.signature, "meanwhile; run it again")


def read_corner_uv(mesh, loops: np.ndarray, uv_name: Optional[str] = None) -> tuple[str, np.ndarray]:
    """UVs of every triangle corner: (t, 3, 2) float32, from ``uv_name`` or the active UV map."""
    layer = mesh.uv_layers.get(uv_name) if uv_name else mesh.uv_layers.active
    if layer is None:
        raise TaskError(f"'{mesh.name}' has no UV map{' ' + repr(uv_name) if uv_name else ''}; add or unwrap one on the source")
    buf = np.empty(len(mesh.loops) * 2, np.float32)
    if len(buf):
        layer.uv.foreach_get("vector", buf)
    return layer.name, buf.reshape(-1, 2)[loops]
