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

Commands: ``ping``, ``check``, ``match``, ``detect_landmarks``, ``transfer_uvs``,
``bake_texture``, ``transfer_weights``, ``make_morph``, ``match_part``,
``match_image_part``, ``release_gpu``, ``shutdown`` (and
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
import json
import os
import queue
import socket
import sys
import threading
import time
import traceback
from typing import Optional

import numpy as np

from .correspondence import save_npz_atomic
from .errors import Cancelled, InputError, StableWrapError
from .progress import CancelToken

from .worker_commands import PROTOCOL_VERSION, Handlers, _resolve, check_environment, error_payload  # noqa: F401 (re-exported)

JOB_COMMANDS = ("check", "match", "detect_landmarks", "transfer_uvs", "bake_texture", "transfer_weights", "make_morph",
                "match_part", "match_image_part", "release_gpu")


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
    parser.add_argument("--threads", type=int, default=int(os.environ.get("STABLEWRAP_THREADS", "0")) or None, metavar="N",
                        help="at most N threads for torch and BLAS (Blender keeps the other cores); default: all")
    parser.add_argument("--match-impl", metavar="MODULE:FUNCTION", default=os.environ.get("STABLEWRAP_MATCH_IMPL") or None,
                        help="use another matcher with engine.match's signature (testing, research)")
    ns = parser.parse_args(argv)

    try:
        match_impl = _resolve(ns.match_impl) if ns.match_impl else None
        from .threads import set_threads

        set_threads(ns.threads)
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
