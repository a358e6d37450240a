"""Run one call in a fresh spawned process: a crash, a hang or an exception fails that call only.

``run_isolated("package.module:function", args, kwargs, timeout=...)`` starts a spawned child,
calls the function there and returns a plain dict: ``ok``, ``value`` (the function's return,
picklable), ``error`` (one line) on failure, ``seconds`` (the call's wall time), ``peak_rss``
(the child's peak resident memory, bytes) and ``peak_gpu`` (CUDA bytes torch allocated at most;
NaN without CUDA). A crash (a signal, ``os._exit``), a ``timeout`` (counted from the call,
after the child's start and imports, which get ``STARTUP_TIMEOUT_S`` at least) or a ``stop``
event set by the caller (Ctrl-C) ends the child and becomes ``ok=False`` with a description.
The benchmark runner and the batch command use it: one match per process, so memory is measured per match and a
failure stays with its pair.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
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


def _child_main(conn, inputs, call: str, threads: Optional[int], preload: tuple = ()) -> None:
    """Entry point of the child: run the call on the arguments read from ``inputs``, send a plain
    dict back on ``conn``."""
    result: dict = {"ok": False}
    t0 = None
    try:
        if threads:  # before any library starts its pools (torch's follows OMP_NUM_THREADS): no torch import here
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = str(threads)
        fn = resolve(call)
        for target in preload:  # what the call will import, imported before its clock starts
            resolve(target)
        conn.send(STARTED)  # the timeout counts from here: imports on a busy machine are not the call's time
        args, kwargs = inputs.recv()
        inputs.close()
        t0 = time.perf_counter()
        result["value"] = fn(*args, **kwargs)
        result["seconds"] = time.perf_counter() - t0
        result["ok"] = True
    except BaseException as exc:  # everything is reported as this call's failure
        if t0 is not None:
            result["seconds"] = time.perf_counter() - t0
        result["error"] = one_line(exc)
    result["peak_rss"] = peak_rss_bytes()
    result["peak_gpu"] = peak_gpu_bytes()
    try:
        conn.send(result)
    finally:
        conn.close()


def run_isolated(call: str, args: tuple = (), kwargs: dict | None = None, *, timeout: float = 600.0,
                 threads: Optional[int] = None, stop: threading.Event | None = None, preload: tuple = ()) -> dict:
    """Call ``call`` (``"package.module:function"``) with ``args`` / ``kwargs`` in a fresh spawned
    process (see the module docstring); ``stop``: an event that ends the child early; ``preload``:
    more ``"package.module:attr"`` targets the call will use, imported before the timeout starts."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    # the arguments (meshes: megabytes) go over a pipe of their own once the child runs: passed to
    # Process they are written while the child starts, and a child that dies starting (a script
    # read from stdin it cannot re-run, a broken import) leaves that write blocked for good
    in_recv, in_send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(send, in_recv, call, threads, tuple(preload)), daemon=True)
    start = time.perf_counter()
    proc.start()
    send.close()
    in_recv.close()
    result: Optional[dict] = None
    failure = ""
    ended_early = started = False
    try:
        while True:
            if recv.poll(0.2):
                try:
                    result = recv.recv()
                except (EOFError, OSError):
                    proc.join(5)
                    failure = describe_exit(proc.exitcode)
                    break
                if result == STARTED:  # imported and calling: the timeout counts from here
                    result = None
                    try:
                        in_send.send((tuple(args), dict(kwargs or {})))
                    except (BrokenPipeError, EOFError, OSError):  # it died reading them
                        proc.join(5)
                        failure = describe_exit(proc.exitcode)
                        break
                    in_send.close()
                    start, started = time.perf_counter(), True
                    continue
                break
            if not proc.is_alive():
                if recv.poll(0.5):
                    continue
                failure = describe_exit(proc.exitcode)
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
        recv.close()
        in_send.close()
        if ended_early:
            proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if result is None:
        return {"ok": False, "error": failure, "seconds": time.perf_counter() - start, "peak_rss": float("nan"),
                "peak_gpu": float("nan")}
    return result
