"""Blocking Python API for scripts and ``blender --background`` pipelines.

>>> import bpy, sys
>>> sw = next(m for n, m in sys.modules.items() if n.startswith("bl_ext.") and n.endswith(".stablewrap"))
>>> # (or, knowing the repository: from bl_ext.user_default import stablewrap as sw)
>>> sw.match(bpy.data.objects["Template"], bpy.data.objects["Scan"], quality="fast")
"Matched 'Template' to 'Scan' in 41.2 s, mean confidence 0.87"
>>> sw.transfer_uvs("Template", "Scan")
>>> sw.detect_landmarks("Template", "Scan")             # named body landmark pairs, used by the next match
>>> sw.match_part("Template", "Scan", "Head")            # -> vertex group 'Head' on Scan
>>> sw.pick_from_image("Scan", bpy.data.images["ref.png"], 120, 88)

Objects may be given as objects or names. Every call blocks until the engine
answers and raises :class:`StableWrapAddonError` (``TaskError`` for bad
input, ``WorkerError`` for engine problems, with ``.type``) with a one-line
message; on error nothing in the scene changes. ``progress(stage, fraction)``
may return ``False`` to cancel.
"""
from __future__ import annotations

from typing import Callable, Optional

from . import engine_env, tasks
from .mesh_io import MeshDataError
from .tasks import NoMatch, TaskError
from .worker_client import StableWrapAddonError, WorkerError

ProgressFn = Optional[Callable[[str, float], object]]


def run_task(task: tasks.Task, timeout: Optional[float] = None, progress: ProgressFn = None) -> str:
    """prepare -> worker -> apply, blocking; returns the one-line report."""
    try:
        cmd, args, arrays = task.prepare()
        data, out = engine_env.client().call(cmd, args, arrays, timeout=timeout, on_progress=progress)
        return task.apply(data, out)
    except MeshDataError as exc:
        raise TaskError(str(exc)) from None


def match(source, target, *, features: str = "auto", quality: str = "balanced", exclude_group: str = "",
          use_evaluated: bool = False, show_fit: bool = True, method: Optional[str] = None,
          device: Optional[str] = None, orientation: str = "auto", skin_group: str = "",
          rest_pose: bool = False, timeout: Optional[float] = None, progress: ProgressFn = None) -> str:
    """Match ``source`` onto ``target``; writes the maps, confidence, colours and the 'StableWrap fit' key.

    Landmark pairs stored on the source (for this target) are used; vertices of
    ``exclude_group`` on the source are not pulled onto the target. ``orientation="as-is"``: both
    objects stand upright and face the same way in the scene (only small turns are searched).
    ``skin_group``: the source's vertex group naming its skin (the loose pieces holding it are
    matched, the others ride along); empty: found from the shape. A target an armature deforms is
    matched in the pose the viewport shows unless ``rest_pose`` (the report says which).
    """
    return run_task(tasks.MatchTask(source, target, features, quality, exclude_group, use_evaluated, show_fit,
                                    method, device, orientation, skin_group, rest_pose), timeout, progress)


def detect_landmarks(source, target, *, use_evaluated: bool = False, timeout: Optional[float] = None,
                     progress: ProgressFn = None) -> str:
    """Detect body landmarks on both meshes and store them as named landmark pairs on the source.

    The pairs (``source.stablewrap.landmarks``, ``name`` = the keypoint, e.g. "left_wrist",
    ``detected`` = True) replace the ones an earlier detection wrote for this target; pairs
    added by hand are kept. Match uses them like any landmark pair. A mesh without a body
    raises ``WorkerError`` (type ``InputError``) naming it; then nothing changes.
    """
    return run_task(tasks.DetectLandmarksTask(source, target, use_evaluated), timeout, progress)


def transfer_uvs(source, target, *, uv_name: Optional[str] = None, timeout=None, progress: ProgressFn = None) -> str:
    """Copy the source's UV map (active or ``uv_name``) to the target as 'StableWrap UV'. Needs a match."""
    return run_task(tasks.TransferUVTask(source, target, uv_name), timeout, progress)


def bake_texture(source, target, *, image=None, resolution: int = 1024, timeout=None, progress: ProgressFn = None) -> str:
    """Bake the source's image texture into the target's active UV layout. Needs a match."""
    return run_task(tasks.BakeTextureTask(source, target, image, resolution), timeout, progress)


def transfer_weights(source, target, *, normalize: bool = False, timeout=None, progress: ProgressFn = None) -> str:
    """Copy every vertex group of the source to the target. Needs a match."""
    return run_task(tasks.TransferWeightsTask(source, target, normalize), timeout, progress)


def make_morph(source, steps: int = 5, *, timeout=None, progress: ProgressFn = None) -> str:
    """``steps`` in-between shape keys from the source to its fit, driven by ``source.stablewrap.morph``."""
    return run_task(tasks.MorphTask(source, steps), timeout, progress)


def match_part(source, target, group_name: str, *, new_group: Optional[str] = None, select: bool = True,
               k: Optional[int] = None, timeout: Optional[float] = None, progress: ProgressFn = None) -> str:
    """Find the part of ``target`` that corresponds to vertex group ``group_name`` of ``source``.

    Writes it as vertex group ``new_group`` on the target (default: the same name; an existing
    group of that name is replaced; "" writes none) and, with ``select``, makes it the target's
    vertex selection. Raises :class:`NoMatch` (a ``TaskError``) when the part has no counterpart
    on the target; then nothing changes.
    """
    return run_task(tasks.MatchPartTask(source, target, group_name, new_group, select, k), timeout, progress)


def pick_from_image(target, image, x: float, y: float, *, new_group: str = "", select: bool = True,
                    device: Optional[str] = None, timeout: Optional[float] = None, progress: ProgressFn = None) -> str:
    """Select the part of ``target`` shown at pixel (``x``, ``y``) of ``image`` (an Image or its name).

    ``x`` is the column and ``y`` the row counted from the image's TOP-left corner (as in
    ``python -m engine part --click``; Blender's pixel readout counts rows from the bottom:
    ``y = height - 1 - row``). Transparent pixels are background. Needs DINOv2 in the engine
    environment (``WorkerError`` of type ``BackendUnavailable`` otherwise). ``new_group``: also
    write the part as that vertex group. Raises :class:`NoMatch` when nothing on the target matches.
    """
    return run_task(tasks.PickFromImageTask(target, image, x, y, new_group, select, device), timeout, progress)


def clear(source, target=None) -> list[str]:
    """Remove every StableWrap result from the objects."""
    src = tasks.resolve_object(source, "source") if source is not None else None
    tgt = tasks.resolve_object(target, "target") if target is not None else None
    return tasks.clear_results(src, tgt)


def add_landmark(source, target, source_vertex: int, target_vertex: int) -> int:
    """Store a landmark pair on the source; returns the number of pairs for this target."""
    src, tgt = tasks.resolve_object(source, "source"), tasks.resolve_object(target, "target")
    tasks.check_pair(src, tgt)
    if not 0 <= source_vertex < len(src.data.vertices):
        raise TaskError(f"source vertex {source_vertex} out of range ('{src.name}' has {len(src.data.vertices)})")
    if not 0 <= target_vertex < len(tgt.data.vertices):
        raise TaskError(f"target vertex {target_vertex} out of range ('{tgt.name}' has {len(tgt.data.vertices)})")
    lm = src.stablewrap.landmarks.add()
    lm.target, lm.source_vertex, lm.target_vertex = tgt, int(source_vertex), int(target_vertex)
    return sum(1 for p in src.stablewrap.landmarks if p.target == tgt)


def check_engine(timeout: float = 300) -> dict:
    """Python, torch, device, GPU, installed models of the engine environment."""
    return engine_env.client().call("check", timeout=timeout)[0]


def release_gpu() -> dict:
    """Ask the worker to free cached GPU memory (keeps it running)."""
    return engine_env.client().call("release_gpu", timeout=60)[0]


def stop_engine() -> bool:
    """Stop the worker process; it restarts on the next call."""
    return engine_env.stop_worker()


__all__ = ["match", "detect_landmarks", "transfer_uvs", "bake_texture", "transfer_weights", "make_morph", "match_part", "pick_from_image",
           "clear", "add_landmark", "check_engine", "release_gpu", "stop_engine", "StableWrapAddonError", "TaskError",
           "NoMatch", "WorkerError"]
