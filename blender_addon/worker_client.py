"""Client side of the engine worker protocol (see ``engine/worker.py``).

Pure Python + numpy: no bpy, no torch. The worker runs in its own Python
environment as a child process; requests are JSON lines on its stdin, replies
JSON lines on its stdout, arrays travel as ``.npz`` files in a private
temporary folder. A reader thread collects replies; :meth:`Job.poll` (for
modal operators and timers) and :meth:`Job.wait` (blocking, for background
mode and scripts) hand them out on the caller's thread.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

import numpy as np

READY_TIMEOUT_S = 120.0
# a cancelled job whose worker has not answered within this long is stuck inside a step that
# cannot check the cancel (a long library call): the worker is stopped (the next job starts a
# fresh one) rather than the next job waiting behind it
CANCEL_GRACE_S = 2.5


class StableWrapAddonError(Exception):
    """Base of every error the extension reports to the user (one line)."""


class WorkerError(StableWrapAddonError):
    """An error reported by (or about) the worker: ``type`` + one-line ``message``."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message

    def __str__(self) -> str:
        return self.message


class Job:
    """One request in flight. ``stage``/``fraction`` follow the streamed progress."""

    def __init__(self, client: "WorkerClient", jid: str, cmd: str, output: Optional[str],
                 input_path: Optional[str] = None) -> None:
        self.client = client
        self.id = jid
        self.cmd = cmd
        self.output_path = output
        self.input_path = input_path
        self.stage = "starting"
        self.fraction = 0.0
        self.done = False
        self.data: Optional[dict] = None
        self.error: Optional[WorkerError] = None
        self._arrays: Optional[dict] = None
        self.cancel_requested = False
        #: optional ``callback(stage, fraction)`` run (on the pumping thread) for every progress reply;
        #: returning ``False`` cancels the job
        self.on_progress: Optional[Callable[[str, float], object]] = None

    def poll(self) -> bool:
        """Collect the replies that arrived; True once the job has finished (result or error)."""
        self.client.pump()
        return self.done

    def wait(self, timeout: Optional[float] = None, on_progress: Optional[Callable[[str, float], object]] = None) -> tuple[dict, dict]:
        """Block until done; returns ``(data, arrays)`` or raises :class:`WorkerError`.

        ``on_progress(stage, fraction)`` is called on this thread; returning
        ``False`` cancels the job.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.on_progress = on_progress
        while not self.done:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                self.cancel()
                raise WorkerError("Timeout", f"{self.cmd}: no result after {timeout:.0f} s")
            self.client.pump(block=True, timeout=0.1 if remaining is None else min(0.1, remaining))
        return self.result()

    def result(self) -> tuple[dict, dict]:
        if not self.done:
            raise WorkerError("NotDone", f"{self.cmd}: still running")
        if self.error is not None:
            raise self.error
        return self.data or {}, self.arrays

    @property
    def arrays(self) -> dict:
        if self._arrays is None:
            self._arrays = {}
            if self.output_path and os.path.exists(self.output_path):
                with np.load(self.output_path, allow_pickle=False) as z:
                    self._arrays = {k: z[k] for k in z.files}
                _unlink(self.output_path)
        return self._arrays

    def cancel(self) -> None:
        """Ask the worker to stop this job; it ends with a ``Cancelled`` error."""
        if self.done or self.cancel_requested:
            return
        self.cancel_requested = True
        try:
            self.client.send({"id": self.client.next_id(), "cmd": "cancel", "target": self.id})
        except WorkerError:
            return  # dead worker: pump() fails the job
        self.client._cancel_deadlines[self.id] = time.monotonic() + CANCEL_GRACE_S
        timer = threading.Timer(CANCEL_GRACE_S, self.client._stop_if_stuck, args=(self.id,))
        timer.daemon = True
        timer.start()


class WorkerClient:
    """Starts and talks to ``PYTHON -m engine.worker``.

    Parameters
    ----------
    python : str
        The worker environment's Python executable.
    env : dict, optional
        Extra environment variables for the worker.
    """

    def __init__(self, python: str, env: Optional[dict] = None, args: tuple = ()) -> None:
        self.python = python
        self.extra_env = dict(env or {})
        self.args = tuple(args)
        self.proc: Optional[subprocess.Popen] = None
        self.tmpdir: Optional[str] = None
        self._messages: "queue.Queue[Optional[dict]]" = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._dead: Optional[WorkerError] = None
        self._finished: set = set()  # ids of jobs the worker answered (seen by the reader thread)
        self._stopped_stuck = False  # the worker was stopped because a cancelled job did not end
        self._cancel_deadlines: dict = {}  # job id -> when a cancelled job must have ended
        self.info: dict = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = READY_TIMEOUT_S, wait: bool = True) -> "WorkerClient":
        """Start the worker process; with ``wait`` block until it says it is ready (at most
        ``timeout`` s). Without, return at once: requests sent meanwhile wait in its input and a
        failed start fails them (for the UI, which must not freeze while torch loads)."""
        if not self.python:
            raise WorkerError("EngineNotConfigured", "no engine Python set: create the managed environment or point to a Python in the StableWrap preferences")
        if not os.path.isfile(self.python):
            raise WorkerError("EngineNotFound", f"engine Python not found: {self.python}")
        self.tmpdir = tempfile.mkdtemp(prefix="stablewrap-")
        self.log_path = os.path.join(self.tmpdir, "worker.log")
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into the worker
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        log = open(self.log_path, "wb")
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        try:
            self.proc = subprocess.Popen(
                [self.python, "-u", "-m", "engine.worker", *self.args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                cwd=self.tmpdir, **kwargs,
            )
        except OSError as exc:
            log.close()
            raise WorkerError("EngineNotFound", f"cannot start engine Python {self.python} ({exc.strerror or exc})") from None
        log.close()
        threading.Thread(target=self._read_loop, name="stablewrap-worker-reader", daemon=True).start()
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        while not self.info:
            if time.monotonic() > deadline:
                self.kill()
                raise WorkerError("WorkerStartFailed", f"engine worker did not start within {timeout:.0f} s")
            self.pump(block=True, timeout=0.1)
            if self._dead is not None:
                raise self._dead
        return self

    def _read_loop(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        try:
            for raw in proc.stdout:
                try:
                    msg = json.loads(raw.decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(msg, dict):
                    if msg.get("type") in ("result", "error"):
                        self._finished.add(str(msg.get("id")))
                    self._messages.put(msg)
        except (OSError, ValueError):
            pass  # stream closed under us by kill()
        self._messages.put(None)  # EOF: the worker is gone

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._dead is None

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 8192))
                text = fh.read().decode("utf-8", "replace")
        except (OSError, AttributeError):
            return ""
        rows = [r.strip() for r in text.splitlines() if r.strip()]
        return " | ".join(rows[-lines:])

    def settle_cancels(self) -> None:
        """Before a new job: wait (at most until their deadlines) for cancelled jobs to end, and stop
        the worker if one does not, so that the new job never queues behind a stuck one."""
        for jid, deadline in list(self._cancel_deadlines.items()):
            while jid not in self._finished and self.alive and time.monotonic() < deadline:
                time.sleep(0.05)
            self._stop_if_stuck(jid)
            self._cancel_deadlines.pop(jid, None)

    def _stop_if_stuck(self, jid: str) -> None:
        """(Timer thread) stop the worker when the cancelled job ``jid`` has still not ended."""
        proc = self.proc
        if jid in self._finished or proc is None or proc.poll() is not None:
            return
        self._stopped_stuck = True
        try:
            proc.kill()  # the reader thread sees the end of the stream; pump() fails what was running
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _on_dead(self) -> None:
        code = self.proc.wait(timeout=5) if self.proc is not None else None
        tail = self.stderr_tail(1)
        if self._stopped_stuck:
            self._dead = WorkerError("WorkerStopped", "engine worker stopped after a cancel it could not answer "
                                                      "in time; the next job starts a fresh one")
        elif not self.info:
            self._dead = WorkerError("WorkerStartFailed", f"engine worker failed to start (exit code {code}){': ' + tail if tail else ''}")
        else:
            self._dead = WorkerError("WorkerDied", f"engine worker stopped unexpectedly (exit code {code}){': ' + tail if tail else ''}")
        for job in self._jobs.values():
            if not job.done:
                cancelled = job.cancel_requested
                job.error = WorkerError("Cancelled", "cancelled") if cancelled else self._dead
                job.done = True
        self._jobs.clear()
        if self.tmpdir:  # nothing in it is read any more (results are loaded when they arrive)
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def pump(self, block: bool = False, timeout: float = 0.1) -> None:
        """Dispatch the replies that arrived to their jobs."""
        first = True
        while True:
            try:
                if block and first:
                    msg = self._messages.get(timeout=timeout)
                else:
                    msg = self._messages.get_nowait()
            except queue.Empty:
                return
            first = False
            if msg is None:
                self._on_dead()
                return
            self._dispatch(msg)

    def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "ready":
            self.info = msg.get("data") or {"ready": True}
            return
        job = self._jobs.get(str(msg.get("id")))
        if job is None:
            return  # a reply to a cancel or to a job nobody waits for
        if kind == "progress":
            job.stage = str(msg.get("stage", job.stage))
            job.fraction = float(msg.get("fraction", job.fraction))
            if job.on_progress is not None and job.on_progress(job.stage, job.fraction) is False:
                job.cancel()
        elif kind == "result":
            job.data = msg.get("data") or {}
            job.arrays  # loaded now: the request folder may go with the worker
            job.done = True
            job.fraction = 1.0
            self._jobs.pop(job.id, None)
            if job.input_path:
                _unlink(job.input_path)
        elif kind == "error":
            err = msg.get("error") or {}
            job.error = WorkerError(str(err.get("type", "Error")), str(err.get("message", "unknown error")))
            job.done = True
            self._jobs.pop(job.id, None)
            for path in (job.output_path, job.input_path):
                if path:
                    _unlink(path)

    def next_id(self) -> str:
        return str(next(self._ids))

    def send(self, message: dict) -> None:
        if self._dead is not None:
            raise self._dead
        if self.proc is None or self.proc.stdin is None:
            raise WorkerError("WorkerNotStarted", "engine worker is not running")
        data = (json.dumps(message) + "\n").encode("utf-8")
        with self._send_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.pump()
                if self._dead is None:
                    self._messages.put(None)
                    self.pump()
                raise self._dead or WorkerError("WorkerDied", "engine worker stopped unexpectedly") from None

    # ------------------------------------------------------------------ requests
    def submit(self, cmd: str, args: Optional[dict] = None, arrays: Optional[dict] = None) -> Job:
        """Send a request; returns at once with a :class:`Job`."""
        if self._dead is not None:
            raise self._dead
        jid = self.next_id()
        inp = out = None
        assert self.tmpdir is not None
        if arrays:
            inp = os.path.join(self.tmpdir, f"in-{jid}.npz")
            np.savez(inp, **arrays)
        out = os.path.join(self.tmpdir, f"out-{jid}.npz")
        job = Job(self, jid, cmd, out, inp)
        self._jobs[jid] = job
        try:
            self.send({"id": jid, "cmd": cmd, "args": args or {}, "input": inp, "output": out})
        except WorkerError as exc:
            job.error, job.done = exc, True
            self._jobs.pop(jid, None)
        return job

    def call(self, cmd: str, args: Optional[dict] = None, arrays: Optional[dict] = None,
             timeout: Optional[float] = None, on_progress=None) -> tuple[dict, dict]:
        """Blocking request: ``(data, arrays)`` or :class:`WorkerError`."""
        return self.submit(cmd, args, arrays).wait(timeout=timeout, on_progress=on_progress)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit (frees its GPU memory); kill it if it does not."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.send({"id": self.next_id(), "cmd": "shutdown"})
                self.proc.wait(timeout=timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        if self._dead is None:
            self._dead = WorkerError("WorkerStopped", "engine worker was stopped")
        for job in self._jobs.values():
            if not job.done:
                job.error, job.done = self._dead, True
        self._jobs.clear()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
