"""The engine worker: the process the Blender extension talks to.

Run as ``python -m engine.worker``. It speaks JSON lines over stdin/stdout
(or over a TCP socket with ``--connect HOST:PORT``); bulk arrays travel as
``.npz`` files whose paths are named in the messages, so no pickle ever
crosses the process boundary.

Requests (one JSON object per line, client -> worker)::

    {"id": "7", "cmd": "match", "args": {...}, "input": "/tmp/in.npz", "output": "/tmp/out.npz"}
    {"id": "8", "cmd": "cancel", "target": "7"}

Replies (worker -> client)::

    {"id": "7", "type": "progress", "stage": "register", "fraction": 0.42}
    {"id": "7", "type": "result", "data": {...}, "output": "/tmp/out.npz" | null}
    {"id": "7", "type": "error", "error": {"type": "InputError", "message": "source: mesh has no faces"}}

Commands: ``ping``, ``check``, ``match``, ``transfer_uvs``, ``bake_texture``,
``transfer_weights``, ``make_morph``, ``match_part``, ``match_image_part``,
``release_gpu``, ``shutdown`` (and
``cancel``, which targets a running or queued job). Jobs run one at a time in
order on an executor thread; ``ping``, ``cancel`` and ``shutdown`` are
answered at once, even while a job runs. Errors cross as ``{type, message}``;
an unexpected exception's message is its class name and first line.

The protocol stream is a private duplicate of the original stdout: anything
the engine or a library prints goes to stderr, never into the protocol.

``--match-impl MODULE:FUNCTION`` (or the environment variable
``STABLEWRAP_MATCH_IMPL``) swaps the matcher for another function with the
signature of :func:`engine.match`; tests use it to drive the protocol without
running the real registration.

Test support only: with ``STABLEWRAP_TEST_TINY_BACKBONE=1`` in the worker's
environment, ``match_image_part`` uses the tiny random DINOv2 of
:mod:`engine.features.testing` and a tiny distillation instead of the real
model (its features are meaningless; it exercises the whole path quickly).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import queue
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

import numpy as np

from .correspondence import save_npz_atomic
from .errors import Cancelled, InputError, StableWrapError
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
    """Python, torch, device, GPU and installed models: what the "Check engine" button shows."""
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
        options = {k: args[k] for k in ("method", "features", "quality", "device", "config") if args.get(k) is not None}
        if landmarks is not None and len(landmarks):
            options["landmarks"] = landmarks.astype(np.int64).reshape(-1, 2)
        if exclude is not None and len(exclude) and np.asarray(exclude).any():
            options["exclude"] = exclude
        t0 = time.perf_counter()
        result = self._match_fn()((sv, sf), (tv, tf), progress=progress, cancel=cancel, **options)
        out = result.arrays() if hasattr(result, "arrays") else dict(result)
        meta = out.pop("meta", None)
        meta = json.loads(str(meta)) if meta is not None and not isinstance(meta, dict) else (meta or {})
        meta.setdefault("worker_seconds", round(time.perf_counter() - t0, 3))
        return {"meta": meta}, out

    def transfer_uvs(self, args, arrays, progress, cancel):
        from .transfer import uv

        c = "transfer_uvs"
        progress("transfer_uvs", 0.0)
        src_vertices = arrays.get("src_vertices")
        res = uv.transfer_uvs(
            _array(arrays, "src_faces", np.int64, 2, 3, c),
            _array(arrays, "src_corner_uv", np.float32, 3, 2, c),
            _array(arrays, "tgt_faces", np.int64, 2, 3, c),
            _array(arrays, "tgt_to_src_face", np.int64, 1, None, c),
            _array(arrays, "tgt_to_src_bary", np.float32, 2, 3, c),
            src_vertices=None if src_vertices is None else np.asarray(src_vertices, np.float64),
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


JOB_COMMANDS = ("check", "match", "transfer_uvs", "bake_texture", "transfer_weights", "make_morph", "match_part",
                "match_image_part", "release_gpu")


# --------------------------------------------------------------------------- the server


class Worker:
    """Reads requests from ``reader``, writes replies to ``writer`` (text streams)."""

    def __init__(self, reader, writer, handlers: Optional[Handlers] = None) -> None:
        self.reader = reader
        self.writer = writer
        self.handlers = handlers or Handlers()
        self._write_lock = threading.Lock()
        self._jobs: "queue.Queue[dict | None]" = queue.Queue()
        self._tokens: dict[str, CancelToken] = {}
        self._tokens_lock = threading.Lock()
        self._stop = threading.Event()

    def send(self, message: dict) -> None:
        line = json.dumps(message, default=_json_default)
        with self._write_lock:
            try:
                self.writer.write(line + "\n")
                self.writer.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._stop.set()  # the client went away

    # one job at a time, in order
    def _executor(self) -> None:
        while True:
            req = self._jobs.get()
            if req is None:
                return
            self._run_job(req)

    def _run_job(self, req: dict) -> None:
        jid = str(req.get("id"))
        with self._tokens_lock:
            token = self._tokens.setdefault(jid, CancelToken())
        last: list = [0.0, None]

        def progress(stage: str, fraction: float) -> None:
            token.raise_if_cancelled()
            now = time.perf_counter()
            # at most ~20 messages a second within a stage; a new stage is always sent
            if now - last[0] >= 0.05 or fraction >= 1.0 or stage != last[1]:
                last[0], last[1] = now, stage
                self.send({"id": jid, "type": "progress", "stage": str(stage), "fraction": float(fraction)})
            token.raise_if_cancelled()

        try:
            token.raise_if_cancelled()
            cmd = req.get("cmd")
            args = req.get("args") or {}
            arrays = {}
            if req.get("input"):
                path = str(req["input"])
                try:
                    with np.load(path, allow_pickle=False) as z:
                        arrays = {k: z[k] for k in z.files}
                except (OSError, ValueError) as exc:
                    raise InputError(f"{cmd}: cannot read input payload {os.path.basename(path)} ({exc.__class__.__name__})") from None
            data, out = getattr(self.handlers, cmd)(args, arrays, progress, token)
            token.raise_if_cancelled()
            out_path = None
            if out:
                out_path = req.get("output")
                if not out_path:
                    raise InputError(f"{cmd}: the request names no output path for the result arrays")
                save_npz_atomic(out_path, out)
            self.send({"id": jid, "type": "result", "data": data, "output": out_path})
        except Cancelled:
            self.send({"id": jid, "type": "error", "error": {"type": "Cancelled", "message": "cancelled"}})
        except BaseException as exc:  # noqa: BLE001 - everything crosses as data
            if not isinstance(exc, StableWrapError):
                traceback.print_exc(file=sys.stderr)
            self.send({"id": jid, "type": "error", "error": error_payload(exc)})
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            with self._tokens_lock:
                self._tokens.pop(jid, None)

    def handle_line(self, line: str) -> bool:
        """Dispatch one request line; False means stop."""
        line = line.strip()
        if not line:
            return True
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            self.send({"id": None, "type": "error", "error": {"type": "ProtocolError", "message": "request is not a JSON object"}})
            return True
        jid = req.get("id")
        cmd = req.get("cmd")
        if cmd == "ping":
            self.send({"id": jid, "type": "result", "data": self.handlers.ping({}, {}, None, None)[0], "output": None})
        elif cmd == "cancel":
            target = str(req.get("target"))
            with self._tokens_lock:
                self._tokens.setdefault(target, CancelToken()).cancel()
            self.send({"id": jid, "type": "result", "data": {"cancelled": target}, "output": None})
        elif cmd == "shutdown":
            self.send({"id": jid, "type": "result", "data": {"bye": True}, "output": None})
            return False
        elif cmd in JOB_COMMANDS:
            with self._tokens_lock:
                self._tokens.setdefault(str(jid), CancelToken())
            self._jobs.put(req)
        else:
            self.send({"id": jid, "type": "error", "error": {"type": "ProtocolError", "message": f"unknown command {cmd!r}"}})
        return True

    def serve(self) -> int:
        executor = threading.Thread(target=self._executor, name="stablewrap-job", daemon=True)
        executor.start()
        self.send({"id": None, "type": "ready", "data": {"pid": os.getpid(), "protocol": PROTOCOL_VERSION}})
        try:
            for line in self.reader:
                if not self.handle_line(line) or self._stop.is_set():
                    break
        finally:
            # stop: cancel whatever runs, let the executor finish its current message
            with self._tokens_lock:
                for tok in self._tokens.values():
                    tok.cancel()
            self._jobs.put(None)
            executor.join(timeout=5.0)
        return 0


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description="StableWrap engine worker (JSON lines + .npz payloads)")
    parser.add_argument("--connect", metavar="HOST:PORT", help="talk over a TCP socket instead of stdin/stdout")
    parser.add_argument("--match-impl", metavar="MODULE:FUNCTION", default=os.environ.get("STABLEWRAP_MATCH_IMPL") or None,
                        help="use another matcher with engine.match's signature (testing, research)")
    ns = parser.parse_args(argv)

    try:
        match_impl = _resolve(ns.match_impl) if ns.match_impl else None
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if ns.connect:
        host, _, port = ns.connect.rpartition(":")
        sock = socket.create_connection((host or "127.0.0.1", int(port)))
        reader = sock.makefile("r", encoding="utf-8", newline="\n")
        writer = sock.makefile("w", encoding="utf-8", newline="\n")
    else:
        # keep the protocol on a private copy of stdout; stray prints go to stderr
        proto_fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr
        writer = os.fdopen(proto_fd, "w", encoding="utf-8", newline="\n")
        reader = sys.stdin
    return Worker(reader, writer, Handlers(match_impl)).serve()


if __name__ == "__main__":
    sys.exit(main())
