"""Where the engine runs: the worker's Python, the managed environment, the shared worker client.

The engine (torch and friends) never enters Blender's Python. It lives in a
separate environment: a managed venv the extension creates (venv + pip
install of the bundled engine wheel), or any Python the user points to. The
environment variable ``STABLEWRAP_ENGINE_PYTHON`` overrides both (pipelines,
tests).
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from typing import Optional

import bpy

from .worker_client import WorkerClient, WorkerError, _unlink

ENV_VAR = "STABLEWRAP_ENGINE_PYTHON"
PACKAGE = __package__
# the project's pinned torch (pyproject / scripts/dev), installed before the engine wheel so that
# no dependency pulls in another build; the CPU build where no NVIDIA GPU is present
TORCH_PIN = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# the keypoint models' reference back end (engine.keypoints.pose_model): mediapipe without its
# declared dependencies (jax, opencv-contrib...), whose run-time needs the engine's "keypoints"
# extra brings; it has wheels up to CPython 3.12 only. Every Python gets the model runner and
# its model files instead (``python -m engine models install``: copied from an installed
# mediapipe, else taken from the wheel pip downloads, for any platform: the files are data).
MEDIAPIPE_PIN = "mediapipe==0.10.14"
MEDIAPIPE_PYTHONS = ((3, 11), (3, 12))
# the Pythons the engine serves: torch 2.13 and the runner (ai-edge-litert) have wheels for them
ENGINE_PYTHONS = ((3, 11), (3, 12), (3, 13))
# a finished managed environment holds this file (written after the last install step): a folder
# without it is a set-up that did not finish, never used as the engine
READY_STAMP = "stablewrap-env-ready.json"
# approximate downloads (GB) shown before the set-up starts: PyTorch's CPU and CUDA builds, the
# engine's other dependencies (numpy, scipy, trimesh, libigl, mediapipe with opencv...) and the
# semantic-feature extras (transformers, diffusers)
DOWNLOAD_GB = {"torch_cpu": 0.2, "torch_cuda": 5.7, "engine": 0.45, "features": 0.1}

_client: Optional[WorkerClient] = None


def get_prefs():
    """The add-on preferences, or None when the package is not registered as an add-on (tests)."""
    addon = bpy.context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon is not None else None


def default_env_dir() -> str:
    try:
        return bpy.utils.extension_path_user(PACKAGE, path="engine-env", create=False)
    except (ValueError, RuntimeError, TypeError):
        # not installed as an extension (running from source): keep it in the user config folder
        return os.path.join(bpy.utils.user_resource("CONFIG"), "stablewrap", "engine-env")


def env_python(env_dir: str) -> str:
    if sys.platform == "win32":
        return os.path.join(env_dir, "Scripts", "python.exe")
    return os.path.join(env_dir, "bin", "python")


def managed_env_dir(prefs=None) -> str:
    prefs = prefs if prefs is not None else get_prefs()
    custom = getattr(prefs, "env_dir", "") if prefs is not None else ""
    return bpy.path.abspath(custom) if custom else default_env_dir()


def resolve_python(prefs=None) -> str:
    """The worker's Python: env var, else the preferences' choice ('' when nothing is set up)."""
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        return override
    prefs = prefs if prefs is not None else get_prefs()
    if prefs is None:
        py = env_python(default_env_dir())
        return py if os.path.isfile(py) else ""
    if prefs.python_mode == "EXISTING":
        return bpy.path.abspath(prefs.python_path) if prefs.python_path else ""
    return env_python(managed_env_dir(prefs))


def env_ready(env_dir: str) -> bool:
    """True when the managed environment's set-up finished (its stamp is there)."""
    return os.path.isfile(os.path.join(env_dir, READY_STAMP))


def _adopt_unstamped(python: str, env_dir: str) -> bool:
    """True when the managed environment is ready: stamped, or (made before stamps existed) its
    Python imports the engine, which then earns it the stamp."""
    if env_ready(env_dir):
        return True
    try:
        ok = subprocess.run([python, "-c", "import engine"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    if ok:
        try:
            with open(os.path.join(env_dir, READY_STAMP), "w", encoding="utf-8") as fh:
                fh.write("{}")
        except OSError:
            pass
    return ok


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver on this machine (then the CUDA build of torch is worth its download)."""
    import shutil

    return bool(shutil.which("nvidia-smi")) or os.path.exists("/proc/driver/nvidia/version")


def torch_build(gpu: Optional[bool] = None) -> str:
    """"cuda" or "cpu": the PyTorch build the managed environment gets on this machine."""
    if sys.platform == "darwin":
        return "cpu"  # macOS wheels are CPU (+ MPS) builds
    return "cuda" if (has_nvidia_gpu() if gpu is None else gpu) else "cpu"


def download_estimate(extras: str, gpu: Optional[bool] = None) -> str:
    """One line for the preferences: about how much the set-up downloads, and why."""
    build = torch_build(gpu)
    gb = DOWNLOAD_GB["torch_" + build] + DOWNLOAD_GB["engine"] + (DOWNLOAD_GB["features"] if extras else 0.0)
    why = "NVIDIA GPU found: PyTorch with CUDA" if build == "cuda" else "no NVIDIA GPU: PyTorch's CPU build"
    return f"Downloads about {gb:.1f} GB ({why})"


def online_access_allowed() -> bool:
    """Blender's "Allow Online Access" (Blender 4.2+; older versions have no such setting)."""
    return bool(getattr(bpy.app, "online_access", True))


def bundled_engine_wheel() -> Optional[str]:
    """The engine wheel shipped in the extension's ``wheels/`` folder (not installed into Blender)."""
    found = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "wheels", "stablewrap_engine-*.whl")))
    return found[-1] if found else None


def client(start: bool = True, wait: bool = True) -> Optional[WorkerClient]:
    """The shared worker client, (re)started when its Python changed or it died (``wait``: block
    until a new worker is ready; the UI passes False and polls its job instead)."""
    global _client
    python = resolve_python()
    if _client is not None:
        _client.settle_cancels()  # a job cancelled a moment ago: its worker must be free (or gone)
    env = worker_env()
    if _client is not None and (not _client.alive or _client.python != python or _client.extra_env != env):
        _client.stop()
        _client = None
    if _client is None and start:
        prefs = get_prefs()
        if (not os.environ.get(ENV_VAR, "").strip() and prefs is not None and prefs.python_mode == "MANAGED"
                and os.path.isfile(python) and not _adopt_unstamped(python, managed_env_dir(prefs))):
            raise WorkerError("EngineNotReady", f"the engine environment in {managed_env_dir(prefs)} did not finish "
                                                "its set-up: create it again in the StableWrap preferences")
        if not python:
            raise WorkerError("EngineNotConfigured",
                              "no engine set up: open Preferences > Add-ons > StableWrap and create the engine environment "
                              f"or point to a Python (or set {ENV_VAR})")
        if not os.path.isfile(python):
            raise WorkerError("EngineNotFound",
                              f"engine Python not found: {python} (create the environment in the StableWrap preferences)")
        _client = WorkerClient(python, env=env).start(wait=wait)
    return _client


def worker_env(prefs=None) -> dict:
    """Environment the worker gets from the preferences: its thread cap (engine.threads)."""
    prefs = prefs if prefs is not None else get_prefs()
    n = int(getattr(prefs, "threads", 0) or 0) if prefs is not None else 0
    return {"STABLEWRAP_THREADS": str(n)} if n > 0 else {}


def stop_worker() -> bool:
    """Stop the worker process (frees its GPU memory). True when one was running."""
    global _client
    if _client is None:
        return False
    was_alive = _client.alive
    _client.stop()
    _client = None
    return was_alive


def install_commands(env_dir: str, extras: str, wheel: Optional[str], pip_args: tuple = (),
                     gpu: Optional[bool] = None, python: Optional[tuple] = None) -> list[list[str]]:
    """The commands that create the managed environment: a venv, the pinned torch (the CPU build
    where no NVIDIA GPU is present: ``gpu`` None detects), pip install of the engine wheel, the
    mediapipe package where it has a wheel for ``python`` (default: the Python running this,
    Blender's, which the venv copies), then the keypoint model files.

    The wheel's folder is a ``--find-links`` source, so a studio without
    internet can drop every dependency's wheel (the mediapipe 0.10.14 wheel
    included, for the model files) next to it and pass ``pip_args=("--no-index",)``.
    """
    version = tuple(python or sys.version_info[:2])[:2]
    if version not in ENGINE_PYTHONS:
        supported = ", ".join(f"{a}.{b}" for a, b in ENGINE_PYTHONS)
        raise WorkerError("UnsupportedPython", f"this Blender's Python {version[0]}.{version[1]} cannot run the StableWrap "
                                               f"engine (it needs Python {supported}); point the add-on to an existing "
                                               "Python with the engine in its preferences")
    py = env_python(env_dir)
    if wheel is None:
        raise WorkerError("NoEngineWheel", "this build of the extension bundles no engine wheel; point to an existing Python with the engine instead")
    wanted = ["keypoints"] + [e for e in extras.split(",") if e and e != "keypoints"]
    spec = wheel + f"[{','.join(wanted)}]"
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--find-links", os.path.dirname(wheel), *pip_args]
    offline = "--no-index" in pip_args
    torch_index = ["--index-url", TORCH_CPU_INDEX] if torch_build(gpu) == "cpu" and sys.platform != "darwin" and not offline else []
    commands = [
        [sys.executable, "-m", "venv", env_dir],
        pip + torch_index + [TORCH_PIN],
        pip + [spec],
    ]
    if version in MEDIAPIPE_PYTHONS:
        commands.append(pip + ["--no-deps", MEDIAPIPE_PIN])
    models = [py, "-m", "engine", "models", "install", "--find-links", os.path.dirname(wheel)]
    commands.append(models + (["--no-index"] if offline else []))
    return commands


class EnvInstaller:
    """Runs :func:`install_commands` one after the other without blocking (poll ``step()``)."""

    def __init__(self, env_dir: str, extras: str = "", wheel: Optional[str] = None, pip_args: tuple = (),
                 gpu: Optional[bool] = None) -> None:
        self.env_dir = env_dir
        if "--no-index" not in pip_args and not online_access_allowed():
            raise WorkerError("Offline", "Blender's online access is off (Preferences > System > Network): the engine "
                                         "set-up downloads PyTorch; allow it, or point to an existing Python with the engine")
        self.commands = install_commands(env_dir, extras, wheel or bundled_engine_wheel(), tuple(pip_args), gpu)
        self.existed = os.path.exists(env_dir)
        _unlink(os.path.join(env_dir, READY_STAMP))  # not ready until this set-up finishes
        parent = os.path.dirname(os.path.abspath(env_dir))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError:  # the venv step reports the problem; keep the log somewhere writable
            import tempfile

            parent = tempfile.gettempdir()
        self.log_path = os.path.join(parent, "stablewrap-engine-env-install.log")
        # the steps run from this folder, not Blender's working directory: ``python -m engine``
        # there would import whatever "engine" folder the directory Blender started in holds
        self.cwd = parent
        # and without PYTHONPATH / PYTHONHOME: the environment being built must stand on its own
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.index = -1
        self.proc: Optional[subprocess.Popen] = None
        self.error: Optional[str] = None
        self.done = False

    def step(self) -> bool:
        """Advance; True once finished (check ``error``)."""
        if self.done:
            return True
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                return False
            if code != 0:
                step = " ".join(os.path.basename(c) for c in self.commands[self.index][:4])
                self.error = f"'{step}' failed (exit code {code}): {_last_line(self.log_path)} (log: {self.log_path})"
                self._abandon()
                return True
        self.index += 1
        if self.index >= len(self.commands):
            self._mark_ready()
            return True
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(self.commands[self.index], stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                             env=self.env)
            except OSError as exc:
                self.error = f"cannot run {self.commands[self.index][0]} ({exc.strerror or exc})"
                self._abandon()
                return True
        return False

    def _mark_ready(self) -> None:
        import json

        try:
            with open(os.path.join(self.env_dir, READY_STAMP), "w", encoding="utf-8") as fh:
                json.dump({"torch": TORCH_PIN, "commands": [c[3:] for c in self.commands[1:]]}, fh)
        except OSError as exc:
            self.error = f"cannot finish the environment in {self.env_dir} ({exc.strerror or exc})"
        self.done = True

    def _abandon(self) -> None:
        """A failed set-up leaves no half-built environment that would later fail as the engine."""
        if not self.existed:
            import shutil

            shutil.rmtree(self.env_dir, ignore_errors=True)
        self.done = True

    @property
    def fraction(self) -> float:
        return max(0.0, self.index) / len(self.commands)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
