"""The keypoint models (either back end of ``engine.keypoints.pose_model``) in a child process of
their own.

Importing mediapipe and building its graph costs about 0.3 s of Python work in a fresh process,
all of it under Python's lock: on a helper thread it stalled the match's own renders by as much
(a fresh 5k pair's first render 0.18 -> 0.46 s). In a child it runs beside the match on the
other core, and the detections wait in the child too. The child also keeps a crash in
mediapipe's native code away from the match: it becomes a one-line error.

The parent starts the child when a model warms up: in the keypoint stage, when some mesh's
keypoints are not cached (started at the match's start instead, it gained nothing on a fresh
5k pair, whose renders and eigenbases outlast the child's start and detections, and cost 0.1 s
where both meshes were cached). It sends (model, images) and reads the detections back:
pickles over the child's stdin and a duplicate of its stdout; the child's own stdout and
stderr go to the null device, with the graphs' native logging. One child per process, shared
by the pose and hand models, one request at a time; it ends when the parent closes its stdin
(or dies). Where no child can run (no Python executable: an embedded interpreter; a child that
cannot import the engine) the models run in the calling process, as before.
``STABLEWRAP_POSE_PROCESS=0`` keeps them there.
"""
from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading

from ..errors import BackendUnavailable

ENV_SWITCH = "STABLEWRAP_POSE_PROCESS"


class NotStarted(Exception):
    """The child could not start or import the engine: run the models in this process."""


class PoseServer:
    """Parent side: the child process and its pipes."""

    def __init__(self) -> None:
        from ..isolated import start_child

        env = dict(os.environ)
        env[ENV_SWITCH] = "0"  # the child runs the models itself
        engine_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = start_child(_CHILD_BOOT, (engine_dir,), env, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._ready = False

    def _receive(self):
        try:
            return pickle.load(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            return None

    def detect(self, model: str, min_detection: float, images):
        """The child's ``detect`` of ``images`` with the model class named ``model`` (pose_model's).
        Raises NotStarted when the child never came up, BackendUnavailable for what the model or
        the child's end reports (one line)."""
        with self._lock:
            if not self._ready:
                msg = self._receive()  # the child imports mediapipe and builds the pose graph first
                if msg is None:
                    raise NotStarted(f"the pose model's process ended at start ({_exit(self.proc)})")
                if msg[0] != "ready":
                    raise BackendUnavailable(msg[1])
                self._ready = True
            try:
                pickle.dump((model, float(min_detection), images), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.flush()
            except OSError:
                msg = None
            else:
                msg = self._receive()
        if msg is None:
            raise BackendUnavailable(f"keypoints: the pose model's process ended ({_exit(self.proc)})")
        if msg[0] != "ok":
            raise BackendUnavailable(msg[1])
        return msg[1]

    def close(self) -> None:
        """End the child: its stdin closes (it exits at once), then it is stopped if it lingers."""
        from ..isolated import end_child

        end_child(self.proc, grace=2.0)


# The child's start: this engine's package (argv[1]) without its __init__ (the public API's
# imports: scipy and the mesh code, 0.1 s the child does not need), then main()
_CHILD_BOOT = ("import sys, types; pkg = types.ModuleType('engine'); pkg.__path__ = [sys.argv[1]]; "
               "sys.modules['engine'] = pkg; from engine.keypoints.pose_server import main; main()")


def _exit(proc: subprocess.Popen) -> str:
    from ..isolated import wait_exit

    code = wait_exit(proc, 1.0)
    return "no reply" if code is None else f"exit code {code}"


_server: PoseServer | None = None
_failed = False  # a child could not start here once: the models run in this process from then on
_start_lock = threading.Lock()


def enabled() -> bool:
    """Whether the models go to a child process: allowed by ``STABLEWRAP_POSE_PROCESS`` (the
    child's own is 0), and ``sys.executable`` is a Python (not Blender or another host)."""
    from ..isolated import child_python

    if _failed or os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    return child_python() is not None


def server() -> PoseServer | None:
    """The running child, started on first use (None where none can run)."""
    global _server, _failed
    if not enabled():
        return None
    with _start_lock:
        if _server is not None and _server.proc.poll() is not None:  # it died: the next match gets a new one
            _server = None
        if _server is None:
            try:
                _server = PoseServer()
            except OSError:
                _failed = True
                return None
            atexit.register(_server.close)
        return _server


def detect(model: str, min_detection: float, images):
    """The detections of ``images`` by the child, or None where the models must run in this
    process (no child here, or it could not start: then never again in this process)."""
    global _failed, _server
    srv = server()
    if srv is None:
        return None
    try:
        return srv.detect(model, min_detection, images)
    except NotStarted:
        with _start_lock:
            _failed, _server = True, None
        return None
    except BackendUnavailable:
        if srv.proc.poll() is not None:
            with _start_lock:
                if _server is srv:
                    _server = None
        raise


def _stub_unused_modules() -> None:
    """Empty stand-ins, in the child only, for what mediapipe imports and the graphs never use:
    matplotlib (its drawing helpers) and the Tasks API. With the engine's __init__ left out
    (``_CHILD_BOOT``) the child is ready in 0.22 s instead of 0.45 s (0.36 against 0.70 CPU
    seconds, on the core the match's renders share)."""
    import types

    for name in ("matplotlib", "matplotlib.pyplot", "mediapipe.tasks", "mediapipe.tasks.python"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    sys.modules["mediapipe.tasks"].python = sys.modules["mediapipe.tasks.python"]


def main() -> None:
    """The child: load the chosen back end's body model, say ready, then answer requests until
    stdin closes."""
    from ..isolated import reply_stream

    reply = reply_stream(None)  # stray prints of the libraries go nowhere
    requests = sys.stdin.buffer

    def send(msg) -> None:
        pickle.dump(msg, reply, protocol=pickle.HIGHEST_PROTOCOL)
        reply.flush()

    _stub_unused_modules()
    from . import pose_model
    from ..isolated import one_line

    models: dict = {}

    def model_of(name: str, min_detection: float):
        key = (name, min_detection)
        if key not in models:
            models[key] = pose_model.served_model_class(name)(min_detection)
        return models[key]

    try:
        first = pose_model.body_model(0.5)
        with first._lock:
            model_of(type(first).__name__, 0.5)._load()
    except Exception as exc:  # noqa: BLE001  (the back end missing or broken: every request would fail so)
        send(("error", str(exc) if isinstance(exc, BackendUnavailable) else f"keypoints: {one_line(exc)}"))
        return
    send(("ready", None))
    while True:
        try:
            name, min_detection, images = pickle.load(requests)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        try:
            send(("ok", model_of(name, min_detection).detect(images)))
        except Exception as exc:  # noqa: BLE001  (reported to the parent, which raises it)
            send(("error", str(exc) if isinstance(exc, BackendUnavailable) else f"keypoints: {one_line(exc)}"))
