"""Run one call in a fresh Python process: a crash, a hang or an exception fails that call only.

``run_isolated("package.module:function", args, kwargs, timeout=...)`` starts a child
interpreter, calls the function there and returns a plain dict: ``ok``, ``value`` (the function's
return, picklable), ``error`` (one line) on failure, ``seconds`` (the call's wall time),
``peak_rss`` (the child's peak resident memory, bytes) and ``peak_gpu`` (CUDA bytes torch
allocated at most; NaN without CUDA). A crash (a signal, ``os._exit``), a ``timeout`` (counted
from the call, after the child's start and imports, which get ``STARTUP_TIMEOUT_S`` at least) or a
``stop`` event set by the caller (Ctrl-C) ends the child and becomes ``ok=False`` with a
description. The benchmark runner, the batch command and large decimations use it.

The child is a plain ``python -c`` that gets the caller's ``sys.path`` and imports only the
call's module, not the caller's script: multiprocessing's spawn runs the main script again in
its child, so a pipeline script without an ``if __name__ == "__main__"`` guard did all its work
twice (a match on a 1M-vertex scan from such a script matched it a second time in the child
that was to decimate it) and a script read from stdin could not start one at all. Requests and
replies are pickles over the child's stdin and a duplicate of its stdout; what the call prints
goes to the child's stderr, which is the caller's.
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable, Optional

from .memory import peak_rss_bytes


def resolve(target: str) -> Callable:
    """``"package.module:attr.attr"`` -> the object."""
    import importlib

    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def one_line(exc: BaseException) -> str:
    """``Type: first line``; an unexpected exception (a bug) also says where it came from."""
    msg = str(exc).strip().splitlines()
    text = f"{exc.__class__.__name__}: {msg[0] if msg else ''}".rstrip(": ")
    from .errors import StableWrapError

    if not isinstance(exc, StableWrapError):
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            frame = tb[-1]
            text += f" (at {os.path.basename(frame.filename)}:{frame.lineno})"
    return text


def peak_gpu_bytes() -> float:
    """Peak CUDA memory allocated by torch in this process (NaN when CUDA was not used)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return float(torch.cuda.max_memory_allocated())
    except Exception:
        pass
    return float("nan")


def describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            return f"worker killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with code {code} without a result"


STARTED = {"started": True}
# a fresh process imports numpy, torch and the engine before the call: seconds when the machine is
# idle, tens of seconds when it is loaded; one that has not started in this long is stuck
STARTUP_TIMEOUT_S = 120.0


# set in the child's environment: a call running there is already isolated (a batch or benchmark
# match); it does its own work in place instead of starting children of its own
CHILD_ENV = "STABLEWRAP_ISOLATED_CHILD"
# the child: the caller's sys.path first (the call's module may live beside the caller's script),
# then engine.isolated from it; nothing of the caller's __main__
_BOOT = ("import sys, pickle; requests = sys.stdin.buffer; sys.path[:] = pickle.load(requests); "
         "from engine.isolated import _child_main; _child_main(requests)")

_LIVE: "set[subprocess.Popen]" = set()
_LIVE_LOCK = threading.Lock()


def in_child() -> bool:
    """Whether this process is a child started by :func:`run_isolated`."""
    return os.environ.get(CHILD_ENV) == "1"


def live_children() -> list:
    """The children of :func:`run_isolated` still running in this process (subprocess.Popen)."""
    with _LIVE_LOCK:
        return [p for p in _LIVE if p.poll() is None]


def child_python() -> Optional[str]:
    """The Python executable a child process runs (``sys.executable``), or None where that is
    not a Python (Blender, another embedding host)."""
    exe = sys.executable or ""
    return exe if os.path.basename(exe).lower().startswith("python") else None


def start_child(code: str, args: tuple = (), env: Optional[dict] = None, stderr=None) -> subprocess.Popen:
    """``python -c code *args`` with pipes on its stdin and stdout (no console window on Windows);
    ``stderr`` as subprocess.Popen takes it (None: the caller's). OSError where no Python can run here."""
    exe = child_python()
    if exe is None:
        raise OSError("no Python executable to start a child process with (embedded interpreter)")
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    return subprocess.Popen([exe, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr, env=env, creationflags=flags)


def reply_stream(stdout_to: Optional[int] = 2):
    """In a child: a binary stream on a duplicate of its stdout for the replies; the stdout itself
    then goes to ``stdout_to`` (a descriptor; None: the null device), so that what the libraries
    print cannot break the replies."""
    reply = os.fdopen(os.dup(1), "wb")
    if stdout_to is None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    else:
        os.dup2(stdout_to, 1)
    return reply


def _child_main(requests) -> None:
    """The child: import the call (and ``preload``), say STARTED, read the arguments, run the
    call and send a plain dict back."""
    reply = reply_stream(2)

    def send(msg) -> None:
        pickle.dump(msg, reply, protocol=pickle.HIGHEST_PROTOCOL)
        reply.flush()

    result: dict = {"ok": False}
    t0 = None
    try:
        call, preload = pickle.load(requests)
        fn = resolve(call)
        for target in preload:  # what the call will import, imported before its clock starts
            resolve(target)
        send(STARTED)  # the timeout counts from here: imports on a busy machine are not the call's time
        args, kwargs = pickle.load(requests)
        t0 = time.perf_counter()
        result["value"] = fn(*args, **kwargs)
        result["seconds"] = time.perf_counter() - t0
        result["ok"] = True
    except BaseException as exc:  # everything is reported as this call's failure
        if t0 is not None:
            result["seconds"] = time.perf_counter() - t0
        result["error"] = one_line(exc)
    peak = peak_rss_bytes()
    result["peak_rss"] = float("nan") if peak is None else peak
    result["peak_gpu"] = peak_gpu_bytes()
    try:
        send(result)
    except Exception as exc:  # noqa: BLE001  (a value that does not pickle: that is the failure)
        if result.get("ok"):
            send({**result, "ok": False, "value": None, "error": f"the call's result cannot be sent back ({one_line(exc)})"})


def _read_replies(stream, out: "queue.Queue") -> None:
    """Reader thread: every pickle from the child's reply pipe into ``out``; None at its end."""
    while True:
        try:
            out.put(pickle.load(stream))
        except (EOFError, OSError, pickle.UnpicklingError, ValueError):
            out.put(None)
            return


def run_isolated(call: str, args: tuple = (), kwargs: dict | None = None, *, timeout: float = 600.0,
                 threads: Optional[int] = None, stop: threading.Event | None = None, preload: tuple = ()) -> dict:
    """Call ``call`` (``"package.module:function"``) with ``args`` / ``kwargs`` in a fresh Python
    process (see the module docstring); ``stop``: an event that ends the child early; ``preload``:
    more ``"package.module:attr"`` targets the call will use, imported before the timeout starts.
    Raises OSError where no child can start (no Python executable: an embedded interpreter)."""
    env = dict(os.environ)
    env[CHILD_ENV] = "1"
    if threads:  # before any library starts its pools (torch's follows OMP_NUM_THREADS)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    proc = start_child(_BOOT, env=env)
    with _LIVE_LOCK:
        _LIVE.add(proc)
    replies: "queue.Queue" = queue.Queue()
    start = time.perf_counter()
    result: Optional[dict] = None
    failure = ""
    ended_early = started = False
    try:
        try:  # small: the pipe's buffer takes them even before the child reads
            for msg in (list(sys.path), (call, tuple(preload))):
                pickle.dump(msg, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: its exit says why below
        threading.Thread(target=_read_replies, args=(proc.stdout, replies), daemon=True).start()
        while True:
            try:
                msg = replies.get(timeout=0.2)
            except queue.Empty:
                msg = False
            if msg is None:  # the pipe closed without a result
                failure = describe_exit(wait_exit(proc, 5))
                break
            if msg == STARTED:  # imported and calling: the timeout counts from here
                try:  # the meshes (megabytes): the child reads them as soon as it has said STARTED
                    pickle.dump((tuple(args), dict(kwargs or {})), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    proc.stdin.close()
                except OSError:  # it died reading them: its exit (the pipe's end) says why
                    pass
                start, started = time.perf_counter(), True
                continue
            if msg is not False:
                result = msg
                break
            if started and time.perf_counter() - start > timeout:
                failure, ended_early = f"timed out after {timeout:g} s", True
                break
            if not started and time.perf_counter() - start > max(timeout, STARTUP_TIMEOUT_S):
                failure, ended_early = f"worker did not start within {max(timeout, STARTUP_TIMEOUT_S):g} s", True
                break
            if stop is not None and stop.is_set():
                failure, ended_early = "stopped", True
                break
    except BaseException:  # Ctrl-C (or any error) in this process while waiting: the child goes at once
        ended_early = True
        raise
    finally:
        if ended_early:
            proc.terminate()
        end_child(proc)
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    if result is None:
        return {"ok": False, "error": failure, "seconds": time.perf_counter() - start, "peak_rss": float("nan"),
                "peak_gpu": float("nan")}
    return result


def wait_exit(proc: subprocess.Popen, seconds: float) -> Optional[int]:
    """The child's exit code once it has ended, None if it still runs after ``seconds``."""
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


def end_child(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Close a child's pipes and make sure it is gone: it ends by itself once its stdin closes or
    it has replied; one still running after ``grace`` seconds is terminated, then killed."""
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    if wait_exit(proc, grace) is None:
        proc.terminate()
        if wait_exit(proc, 5) is None:
            proc.kill()
            proc.wait()
