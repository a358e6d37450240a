"""The worker's command handlers: one method per job command of ``engine.worker``.

Each handler takes ``(args: dict, arrays: dict, progress(stage, fraction), cancel: CancelToken)``
and returns ``(data: dict, arrays: dict | None)``; errors are raised as engine errors and turned
into plain ``{type, message}`` data by the server (``error_payload``).
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from .errors import InputError, StableWrapError
from .progress import CancelToken

PROTOCOL_VERSION = 1

Handler = Callable[[dict, dict, Callable[[str, float], None], CancelToken], "tuple[dict, dict | None]"]


# --------------------------------------------------------------------------- helpers


def _array(arrays: dict, key: str, dtype, ndim: int | None = None, last: int | None = None, cmd: str = "") -> np.ndarray:
    if key not in arrays:
        raise InputError(f"{cmd}: input array {key!r} is missing")
    a = np.asarray(arrays[key])
    if ndim is not None and a.ndim != ndim:
        raise InputError(f"{cmd}: input array {key!r} must have {ndim} dimensions, got shape {a.shape}")
    if last is not None and a.shape[-1] != last:
        raise InputError(f"{cmd}: input array {key!r} must have shape (..., {last}), got {a.shape}")
    return a if dtype is None else a.astype(dtype, copy=False)


def _optional(arrays: dict, key: str) -> np.ndarray | None:
    return np.asarray(arrays[key]) if key in arrays else None


def _stage_progress(progress: Callable[[str, float], None], token: CancelToken):
    """An :class:`engine.progress.Progress` that forwards each stage's own fraction to ``progress``."""
    from .progress import Progress

    class StageProgress(Progress):
        def update(self, fraction: float) -> None:
            self.token.raise_if_cancelled()
            progress(self._current, min(1.0, max(0.0, float(fraction))))

    return StageProgress(progress, token)


def error_payload(exc: BaseException) -> dict:
    """``{type, message}`` for any exception; one line, no traceback."""
    if isinstance(exc, StableWrapError):
        name = type(exc).__name__
        msg = str(exc).splitlines()[0] if str(exc) else name
    elif isinstance(exc, MemoryError):
        name, msg = "OutOfMemory", "out of memory"
    else:
        name = type(exc).__name__
        text = str(exc).splitlines()[0] if str(exc) else ""
        msg = f"internal error ({name}{': ' + text if text else ''})"
        if "out of memory" in text.lower():
            name, msg = "OutOfMemory", f"out of memory ({text})"
    return {"type": name, "message": msg}


def _resolve(spec: str) -> Callable:
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise InputError(f"--match-impl: expected MODULE:FUNCTION, got {spec!r}")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"--match-impl: cannot load {spec!r} ({exc.__class__.__name__})") from None


# --------------------------------------------------------------------------- command handlers


def check_environment() -> dict:
    """Python, torch, device, GPU, installed models and the keypoint back end ("mediapipe",
    "litert" or None with the reason): what the "Check engine" button shows."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "protocol": PROTOCOL_VERSION,
    }
    try:
        import engine

        info["engine"] = getattr(engine, "__version__", "unknown")
    except Exception:  # pragma: no cover - we are inside engine
        info["engine"] = "unknown"
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        device, gpu, mem = "cpu", None, None
        if torch.cuda.is_available():
            device = "cuda"
            props = torch.cuda.get_device_properties(0)
            gpu, mem = props.name, int(props.total_memory)
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device, gpu = "mps", "Apple GPU (MPS)"
        info.update(device=device, gpu=gpu, gpu_memory=mem)
    except Exception as exc:
        info.update(torch=None, device=None, gpu=None, gpu_memory=None, torch_error=error_payload(exc)["message"])
    try:
        from .features import semantic

        models, why = [], {}
        for mode in semantic.MODES:
            ok, reason = semantic.available(mode)
            if ok:
                models.append(mode)
            else:
                why[mode] = reason
        info["models"], info["models_missing"] = models, why
    except Exception as exc:
        info["models"], info["models_missing"] = [], {"semantic": error_payload(exc)["message"]}
    try:
        from .keypoints.pose_model import keypoint_backend, keypoints_status

        ok, why = keypoints_status()
        info["keypoints"] = keypoint_backend() if ok else None
        info["keypoints_missing"] = None if ok else why
    except Exception as exc:  # noqa: BLE001  (an invalid STABLEWRAP_KEYPOINT_BACKEND, a broken install)
        info["keypoints"], info["keypoints_missing"] = None, error_payload(exc)["message"]
    return info


class Handlers:
    """The engine-facing side of every command. ``match_impl`` defaults to :func:`engine.match`."""

    def __init__(self, match_impl: Optional[Callable] = None) -> None:
        self.match_impl = match_impl

    def _match_fn(self) -> Callable:
        if self.match_impl is not None:
            return self.match_impl
        import engine

        return engine.match

    def ping(self, args, arrays, progress, cancel):
        return {"pong": True, "pid": os.getpid(), "protocol": PROTOCOL_VERSION}, None

    def check(self, args, arrays, progress, cancel):
        return check_environment(), None

    def match(self, args, arrays, progress, cancel):
        c = "match"
        sv = _array(arrays, "src_vertices", np.float64, 2, 3, c)
        sf = _array(arrays, "src_faces", np.int64, 2, None, c)
        tv = _array(arrays, "tgt_vertices", np.float64, 2, 3, c)
        tf = _array(arrays, "tgt_faces", np.int64, 2, None, c)
        landmarks = _optional(arrays, "landmarks")
        exclude = _optional(arrays, "exclude")
        skin = _optional(arrays, "skin")
        options = {k: args[k] for k in ("method", "features", "quality", "device", "config", "orientation", "keypoints")
                   if args.get(k) is not None}
        if landmarks is not None and len(landmarks):
            options["landmarks"] = landmarks.astype(np.int64).reshape(-1, 2)
        if exclude is not None and len(exclude) and np.asarray(exclude).any():
            options["exclude"] = exclude
        if skin is not None and len(skin) and np.asarray(skin).any():
            options["skin"] = skin
        t0 = time.perf_counter()
        result = self._match_fn()((sv, sf), (tv, tf), progress=progress, cancel=cancel, **options)
        out = result.arrays() if hasattr(result, "arrays") else dict(result)
        meta = out.pop("meta", None)
        meta = json.loads(str(meta)) if meta is not None and not isinstance(meta, dict) else (meta or {})
        meta.setdefault("worker_seconds", round(time.perf_counter() - t0, 3))
        return {"meta": meta}, out

    def detect_landmarks(self, args, arrays, progress, cancel):
        """Named body landmark pairs of a source / target pair (MediaPipe pose keypoints on both).

        arrays as ``match`` (``src_vertices``, ``src_faces``, ``tgt_vertices``, ``tgt_faces``); args:
        ``source_name`` / ``target_name`` (the meshes' names in error messages). Returns
        ``{names, source_views, target_views}`` and arrays ``pairs`` (p, 2) int64 (source vertex,
        target vertex in the caller's vertex indices) and ``confidence`` (p,) float32, one row per
        keypoint found on both meshes. A mesh without a body is an InputError naming it.
        """
        from .correspond.keypoint_pairs import detect_pair
        from .mesh import as_prepared

        c = "detect_landmarks"
        sv = _array(arrays, "src_vertices", np.float64, 2, 3, c)
        sf = _array(arrays, "src_faces", np.int64, 2, None, c)
        tv = _array(arrays, "tgt_vertices", np.float64, 2, 3, c)
        tf = _array(arrays, "tgt_faces", np.int64, 2, None, c)
        stage = _stage_progress(progress, cancel)
        stage.stage("prepare")
        src = as_prepared((sv, sf), str(args.get("source_name") or "source"))
        tgt = as_prepared((tv, tf), str(args.get("target_name") or "target"))
        stage.stage("keypoints")
        # the clean meshes are the ones engine.match detects on: a later match reuses the cached detections
        pk = detect_pair(src.mesh, tgt.mesh, "on", progress=stage)
        stage.update(1.0)
        pairs = np.asarray(pk.pairs, np.int64).reshape(-1, 2)
        orig = np.stack([src.clean_to_orig[pairs[:, 0]], tgt.clean_to_orig[pairs[:, 1]]], axis=1).astype(np.int64)
        data = {"names": [str(n) for n in pk.names],
                "source_views": int(pk.source.views_found), "target_views": int(pk.target.views_found)}
        return data, {"pairs": orig.reshape(-1, 2), "confidence": np.asarray(pk.weights, np.float32)}

    def transfer_uvs(self, args, arrays, progress, cancel):
        from .transfer import uv

        c = "transfer_uvs"
        progress("transfer_uvs", 0.0)
        src_vertices = arrays.get("src_vertices")
        polys = arrays.get("tgt_tri_to_poly")  # the target polygon of every triangle: one chart per polygon
        res = uv.transfer_uvs(
            _array(arrays, "src_faces", np.int64, 2, 3, c),
            _array(arrays, "src_corner_uv", np.float32, 3, 2, c),
            _array(arrays, "tgt_faces", np.int64, 2, 3, c),
            _array(arrays, "tgt_to_src_face", np.int64, 1, None, c),
            _array(arrays, "tgt_to_src_bary", np.float32, 2, 3, c),
            src_vertices=None if src_vertices is None else np.asarray(src_vertices, np.float64),
            tgt_tri_to_poly=None if polys is None else _array(arrays, "tgt_tri_to_poly", np.int64, 1, None, c),
        )
        progress("transfer_uvs", 1.0)
        return {"seam_faces": int(len(res.seam_faces))}, {
            "corner_uv": np.asarray(res.corner_uv, np.float32), "seam_faces": np.asarray(res.seam_faces, np.int64)}

    def bake_texture(self, args, arrays, progress, cancel):
        """Inputs as :func:`engine.transfer.texture.bake_texture` (image row 0 = top); args: size, padding, wrap."""
        from .transfer import texture

        c = "bake_texture"
        size = args.get("size")
        src_vertices = arrays.get("src_vertices")
        image = texture.bake_texture(
            _array(arrays, "src_faces", np.int64, 2, 3, c),
            _array(arrays, "src_corner_uv", np.float32, 3, 2, c),
            np.asarray(_array(arrays, "src_image", None, None, None, c)),
            _array(arrays, "tgt_faces", np.int64, 2, 3, c),
            _array(arrays, "tgt_corner_uv", np.float32, 3, 2, c),
            _array(arrays, "tgt_to_src_face", np.int64, 1, None, c),
            _array(arrays, "tgt_to_src_bary", np.float32, 2, 3, c),
            size=tuple(int(x) for x in size) if isinstance(size, (list, tuple)) else size,
            padding=int(args.get("padding", 16)),
            progress=progress,
            src_vertices=None if src_vertices is None else np.asarray(src_vertices, np.float64),
            wrap=str(args.get("wrap", "repeat")),
        )
        return {"shape": list(np.shape(image))}, {"image": np.asarray(image)}

    def transfer_weights(self, args, arrays, progress, cancel):
        from .transfer import attributes

        c = "transfer_weights"
        progress("transfer_weights", 0.0)
        values = _array(arrays, "values", np.float32, None, None, c)
        res = attributes.transfer_vertex_attributes(
            values,
            _array(arrays, "src_faces", np.int64, 2, 3, c),
            _array(arrays, "tgt_to_src_face", np.int64, 1, None, c),
            _array(arrays, "tgt_to_src_bary", np.float32, 2, 3, c),
            mode=str(args.get("mode", "barycentric")),
            normalize=bool(args.get("normalize", False)),
        )
        progress("transfer_weights", 1.0)
        return {}, {"values": np.asarray(res, np.float32)}

    def make_morph(self, args, arrays, progress, cancel):
        """args: ``times`` (list of t in [0, 1]) or ``n`` (shapes at linspace(0, 1, n)), ``method``."""
        from .transfer import morph

        c = "make_morph"
        times = args.get("times")
        progress("make_morph", 0.0)
        frames = morph.morph_sequence(
            _array(arrays, "src_vertices", np.float64, 2, 3, c),
            _array(arrays, "src_faces", np.int64, 2, 3, c),
            _array(arrays, "fitted_vertices", np.float64, 2, 3, c),
            n=int(args.get("n", 5)),
            method=str(args.get("method", "jacobian")),
            times=None if times is None else [float(t) for t in times],
        )
        progress("make_morph", 1.0)
        return {}, {"frames": np.asarray(frames, np.float32)}

    # options of engine.parts.match_part / match_image_part that may cross the protocol
    PART_OPTIONS = {"k": int, "min_iou": float, "side_weight": float, "query": str, "selection": str,
                    "elements": str, "min_consistency": float}
    IMAGE_OPTIONS = {"k": int, "min_iou": float, "grid": int, "views": int, "resolution": int}

    @staticmethod
    def _options(args: dict, allowed: dict, cmd: str) -> dict:
        out = {}
        for key, kind in allowed.items():
            if args.get(key) is None:
                continue
            try:
                out[key] = kind(args[key])
            except (TypeError, ValueError):
                raise InputError(f"{cmd}: option {key!r} must be {kind.__name__}, got {args[key]!r}") from None
        return out

    def match_part(self, args, arrays, progress, cancel):
        """Source part (vertex indices ``part``) -> target part; arrays as ``match`` plus ``part`` (k,) int.

        Returns ``{matched, bsb_vertex, score, n_target_vertices}`` and the arrays of
        :meth:`engine.parts.PartMatch.arrays` (``target_vertices`` int32, ``bsb_vertex`` -1 = no match, ``score``).
        """
        from .parts import match_part
        c = "match_part"
        sv = _array(arrays, "src_vertices", np.float64, 2, 3, c)
        sf = _array(arrays, "src_faces", np.int64, 2, None, c)
        tv = _array(arrays, "tgt_vertices", np.float64, 2, 3, c)
        tf = _array(arrays, "tgt_faces", np.int64, 2, None, c)
        part = _array(arrays, "part", None, None, None, c).reshape(-1)
        options = self._options(args, self.PART_OPTIONS, c)
        res = match_part((sv, sf), part, (tv, tf), progress=_stage_progress(progress, cancel), **options)
        return self._part_reply(res)

    def match_image_part(self, args, arrays, progress, cancel):
        """Image click (or mask / box) -> target part.

        arrays: ``image`` (H, W, 3|4) float (row 0 = top, values in [0, 1]), ``tgt_vertices``,
        ``tgt_faces``, optional ``mask`` (H, W) bool; args: ``click`` [x, y] and/or ``box``
        [x0, y0, x1, y1], ``device``, ``cache`` (False: no feature cache) and :attr:`IMAGE_OPTIONS`.
        """
        from .parts import match_image_part
        c = "match_image_part"
        image = _array(arrays, "image", np.float32, 3, None, c)
        tv = _array(arrays, "tgt_vertices", np.float64, 2, 3, c)
        tf = _array(arrays, "tgt_faces", np.int64, 2, None, c)
        options = self._options(args, self.IMAGE_OPTIONS, c)
        for key, size in (("click", 2), ("box", 4)):
            value = args.get(key)
            if value is not None:
                if not isinstance(value, (list, tuple)) or len(value) != size:
                    raise InputError(f"{c}: {key} must be a list of {size} numbers, got {value!r}")
                options[key] = tuple(float(x) for x in value)
        mask = _optional(arrays, "mask")
        if mask is not None:
            options["mask"] = mask
        if args.get("cache") is False:
            options["cache_dir"] = False
        if os.environ.get("STABLEWRAP_TEST_TINY_BACKBONE") == "1":  # test support: see the module docstring
            from .features.testing import tiny_backbones
            from .parts.distill import DistillSettings

            options["backbone"] = tiny_backbones("dino").dino
            options.setdefault("views", 2)
            options.setdefault("resolution", 32)
            options.setdefault("grid", 16)
            options["distill_settings"] = DistillSettings(layers=2, width=16, n_freqs=2, steps=5)
            options["cache_dir"] = False
        res = match_image_part(image, (tv, tf), device=args.get("device") or "auto",
                               progress=_stage_progress(progress, cancel), **options)
        return self._part_reply(res)

    @staticmethod
    def _part_reply(res):
        out = res.arrays()
        data = {"matched": bool(res.matched), "bsb_vertex": int(res.bsb_vertex), "score": float(res.score),
                "n_target_vertices": int(len(out["target_vertices"]))}
        return data, out

    def release_gpu(self, args, arrays, progress, cancel):
        freed = 0
        try:
            import gc

            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                before = torch.cuda.memory_reserved()
                torch.cuda.empty_cache()
                freed = int(before - torch.cuda.memory_reserved())
            elif torch is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                torch.mps.empty_cache()
        except Exception as exc:  # freeing memory never fails the worker
            return {"freed_bytes": 0, "warning": error_payload(exc)["message"]}, None
        return {"freed_bytes": freed}, None
