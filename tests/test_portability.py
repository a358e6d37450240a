"""The engine on a platform without what only POSIX has (as on Windows): no ``/proc``, no
``resource`` / ``fcntl`` / ``termios`` modules, no ``os.fork``. A match from the command line,
the worker's start and a batch row run in Pythons that a sitecustomize strips so (the child
processes they start inherit it through PYTHONPATH)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.samples import make_pair, write_obj

REPO = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = '''\
import builtins, io, os, sys
for name in ("resource", "fcntl", "termios"):
    sys.modules[name] = None  # import fails, as on Windows
for name in ("fork", "forkpty", "wait3", "wait4"):
    if hasattr(os, name):
        delattr(os, name)
_open, _exists = builtins.open, os.path.exists

def _posix_only(path):
    try:
        p = os.fsdecode(os.fspath(path))
    except TypeError:  # a file descriptor
        return False
    return p == "/proc" or p.startswith("/proc/")

def _guarded_open(file, *args, **kwargs):
    if _posix_only(file):
        raise FileNotFoundError(2, "No such file or directory (no /proc on this platform)", str(file))
    return _open(file, *args, **kwargs)

builtins.open = io.open = _guarded_open
os.path.exists = lambda p: False if _posix_only(p) else _exists(p)
'''


@pytest.fixture(scope="module")
def foreign_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("foreign")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    env["STABLEWRAP_CACHE"] = str(site / "cache")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _python(env, code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_simulation_hides_what_it_should(foreign_env, tmp_path):
    out = _python(foreign_env, "import os, importlib.util as u\n"
                               "from engine.memory import peak_rss_bytes, available_bytes\n"
                               "print(os.path.exists('/proc/self/status'), hasattr(os, 'fork'), peak_rss_bytes(), available_bytes())\n"
                               "import resource\n", tmp_path)
    assert out.stdout.split() == ["False", "False", "None", "None"]
    assert "ModuleNotFoundError" in out.stderr or "ImportError" in out.stderr


def test_a_match_from_the_command_line(foreign_env, tmp_path):
    pair = make_pair(source_subdivisions=3, target_vertices=1200)
    sv = pair.source_vertices
    write_obj(str(tmp_path / "a.obj"), pair.source_vertices, pair.source_faces)
    write_obj(str(tmp_path / "b.obj"), pair.target_vertices, pair.target_faces)
    out = subprocess.run([sys.executable, "-m", "engine", "match", "a.obj", "b.obj", "-o", "out.npz", "--quality", "fast"],
                         capture_output=True, text=True, env=foreign_env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with np.load(tmp_path / "out.npz") as z:
        meta = json.loads(str(z["meta"]))
        assert z["src_to_tgt_face"].shape == (len(sv),)
    assert meta["peak_rss_mb"] is None  # no portable figure here: left out, not made up


def _worker_client_module():
    spec = importlib.util.spec_from_file_location("sw_worker_client_foreign", REPO / "blender_addon" / "worker_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_worker_starts_and_answers(foreign_env):
    wc = _worker_client_module()
    client = wc.WorkerClient(sys.executable, env={"PYTHONPATH": foreign_env["PYTHONPATH"], "OMP_NUM_THREADS": "1"})
    client.start(timeout=120)
    try:
        pong, _ = client.call("ping", timeout=60)
        assert pong["pong"] is True and pong["pid"] == client.proc.pid
        info, _ = client.call("check", timeout=120)
        assert info["python"] == sys.version.split()[0] and info["device"] in ("cpu", "cuda", "mps")
    finally:
        client.stop()


def test_a_batch_row(foreign_env, tmp_path):
    pair = make_pair(source_subdivisions=2, target_vertices=600)
    write_obj(str(tmp_path / "a.obj"), pair.source_vertices, pair.source_faces)
    write_obj(str(tmp_path / "b.obj"), pair.target_vertices, pair.target_faces)
    (tmp_path / "pairs.csv").write_text('source,target,quality,config\na.obj,b.obj,fast,"{""surface_fit_iterations"": 2}"\n')
    out = subprocess.run([sys.executable, "-m", "engine", "batch", "pairs.csv", "-o", "out", "--workers", "1"],
                         capture_output=True, text=True, env=foreign_env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "batch: 1 done" in out.stderr and (tmp_path / "out" / "a__b.npz").is_file()
