"""Batch rows as Ray tasks: ``python -m engine batch ... --cluster ray|ray://HOST:PORT``.

Each pair is one Ray task that declares its resources (``threads`` CPUs, ``gpus_per_job`` GPUs)
so that Ray places it on a node with room. The task receives the row's input files as bytes
(through the object store: the nodes need no shared file system), runs the pair exactly as the
local pool does (``engine.isolated``: a fresh process per match, the timeout counted from its
start, a crash reported as the local pool reports it) and returns the output files as bytes;
the driver writes them into OUTDIR atomically, the match file last. Retries, skipping, the
table and Ctrl-C are the batch's own (engine.batch), whichever runs the pairs.

The nodes need this engine installed (``pip install stablewrap-engine[cluster]``, the same
version as the driver). ``--cluster ray`` joins the cluster this machine belongs to
(``RAY_ADDRESS`` or the one ``ray start`` left running here); ``ray://HOST:PORT`` connects
through the Ray Client port of a remote head (10001 by default).
"""
from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

from .batch_transfers import outputs
from .errors import InputError

CONNECT_TIMEOUT_S = 5.0  # a head that does not answer a TCP connect in this long is unreachable


def connect(cluster: str) -> None:
    """Join the Ray cluster ``cluster`` names ("ray" or "ray://HOST:PORT") unless this process
    already has; one-line InputErrors when ray is missing or the cluster cannot be reached."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--cluster {cluster}: ray is not installed (pip install 'stablewrap-engine[cluster]')") from None
    if cluster.startswith("ray://"):
        host, _, port = cluster[len("ray://"):].rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"--cluster {cluster}: expected ray://HOST:PORT")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise InputError(f"--cluster {cluster}: cannot reach the Ray cluster ({exc.strerror or exc})") from None
        address = cluster
    elif cluster == "ray":
        address = os.environ.get("RAY_ADDRESS") or "auto"
    else:
        raise InputError(f"--cluster: unknown cluster {cluster!r}; use local, ray or ray://HOST:PORT")
    if ray.is_initialized():  # this process joined a cluster already (or started a local instance)
        return
    auth_error = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # ray wraps what went wrong (a ConnectionError caused by the real error)
        if auth_error is not None and any(isinstance(e, auth_error) for e in _causes(exc)):
            # Ray 2.52+ with RAY_AUTH_MODE=token on the head (the default from 2.59 on)
            raise InputError(f"--cluster {cluster}: the Ray cluster wants its auth token: run 'ray get-auth-token' on the "
                             "head and give it here as RAY_AUTH_TOKEN (or its file as RAY_AUTH_TOKEN_PATH), with "
                             "RAY_AUTH_MODE=token; on a trusted network start every node with RAY_AUTH_MODE=disabled") from None
        if not isinstance(exc, (ConnectionError, RuntimeError, ValueError, ImportError)):
            raise
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if cluster.startswith("ray://") and "ray[client]" in str(exc):  # ray's own install hint, kept
            raise InputError(f"--cluster {cluster}: a Ray Client address needs the client package: "
                             "pip install 'ray[client]' (the same Ray version as the head's)") from None
        # a driver with no token at all is only refused (ray retries, then gives up): say what a
        # head with token authentication wants when this driver has none set up
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a head with token authentication (Ray 2.59+) wants RAY_AUTH_MODE=token and its token "
                "('ray get-auth-token' on the head) as RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")
        raise InputError(f"--cluster {cluster}: cannot join the Ray cluster ({first}); start one with "
                         f"'ray start --head' or give ray://HOST:PORT{hint}") from None


def _causes(exc: BaseException) -> list:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def cluster_cpus() -> float:
    """CPUs the joined Ray cluster has in all."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def run_pair(row, out: Path, *, call: str, timeout: float, threads: int, gpus: float,
             stop: threading.Event) -> dict:
    """One attempt at ``row`` (engine.batch.BatchRow) as a Ray task; writes its files into ``out``
    on success. Returns what engine.isolated.run_isolated returns (ok, value / error, seconds,
    peak_rss)."""
    import ray

    from .isolated import one_line

    files = {p: Path(p).read_bytes() for p in dict.fromkeys(row.inputs)}
    task = ray.remote(_task).options(num_cpus=threads, num_gpus=gpus, max_retries=0)
    ref = task.remote(call, row.name, files, row.source, row.target, row.options, row.transfers, timeout, threads)
    while True:
        ready, _ = ray.wait([ref], timeout=0.5)
        if ready:
            break
        if stop.is_set():
            ray.cancel(ref)  # a KeyboardInterrupt in the task: its match process is ended, not orphaned
            return {"ok": False, "error": "stopped"}
    try:
        got = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        return {"ok": False, "error": one_line(exc.cause if exc.cause is not None else exc)}
    except ray.exceptions.RayError as exc:  # the worker or its node died: worth another try
        return {"ok": False, "error": f"worker exited on the Ray cluster ({exc.__class__.__name__})"}
    if got.get("ok"):
        _write_outputs(out, got.pop("files"))
    return got


def _write_outputs(out: Path, files: dict) -> None:
    """Write a pair's files atomically, in the given order (the match file comes last)."""
    from .fileio import atomic_path

    for name, data in files.items():
        with atomic_path(out / name, Path(name).suffix) as tmp:
            Path(tmp).write_bytes(data)


def _task(call: str, name: str, files: dict, source: str, target: str, options: dict, transfers: dict,
          timeout: float, threads: int) -> dict:
    """(On a Ray worker) write the inputs to a temporary folder, run the pair in its own process,
    return the result with the output files' bytes (in engine.batch_transfers.outputs order)."""
    from .isolated import run_isolated

    with tempfile.TemporaryDirectory(prefix="stablewrap-ray-") as tmp:
        local = {}
        for i, (path, data) in enumerate(files.items()):  # each in a folder of its own: names kept
            os.mkdir(os.path.join(tmp, str(i)))
            local[path] = os.path.join(tmp, str(i), os.path.basename(path))
            Path(local[path]).write_bytes(data)

        def here(value):
            return local.get(value, value) if isinstance(value, str) else value

        out = Path(tmp) / "out"
        out.mkdir()
        args = (call, local[source], local[target], os.fspath(out / f"{name}.npz"),
                {k: here(v) for k, v in options.items()}, {k: here(v) for k, v in transfers.items()})
        got = run_isolated("engine.batch:match_row", args, timeout=timeout, threads=threads, preload=(call,))
        if got.get("ok"):
            got["files"] = {p.name: p.read_bytes() for p in outputs(out, name, transfers)}
        return got
