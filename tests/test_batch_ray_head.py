"""A real Ray head as a separate process, as a studio runs one: ``ray start --head`` on 127.0.0.1
with its own port and temp dir and token authentication (Ray's default from 2.59 on). The batch
joins it with the head's token and gives the local pool's outputs; without the token it stops
with one line naming what is missing. The head is stopped by its processes' ids at the end."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import trimesh

from engine import batch
from engine.correspondence import Correspondence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = "tests.batch_fakes:fake_match"  # a light stand-in matcher (nearest vertex)
DRIVER = ("import sys, json; from engine import batch; "
          "res = batch.run(batch.read_rows(sys.argv[1]), sys.argv[2], workers=2, threads=1, retries=0, timeout=60, "
          f"cluster='ray', call='{FAKE}'); print('RESULT', json.dumps({{r.name: r.status for r in res}}))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(temp: str) -> None:
    """End every process of the head started in ``temp`` (its daemons name it on their command
    lines; their workers are their children), then remove the folder."""
    import psutil

    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in part for part in (p.info["cmdline"] or [])):
                procs += [p] + p.children(recursive=True)
        except psutil.Error:
            continue
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    pytest.importorskip("ray", reason="ray is not installed (the [cluster] extra)")
    ray_exe = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_exe):
        pytest.skip("no ray command beside this Python")
    # a short folder: Ray's socket paths under it must stay within the system's limit
    temp = tempfile.mkdtemp(prefix="swray", dir="/tmp" if os.path.isdir("/tmp") else None)
    token = os.path.join(temp, "token")
    with open(token, "w") as fh:
        fh.write(secrets.token_hex(32))
    port = _free_port()
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    try:
        res = subprocess.run([ray_exe, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                              f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        _stop(temp)
        pytest.skip("the Ray head did not start within 2 minutes")
    if res.returncode != 0:
        _stop(temp)
        pytest.skip(f"the Ray head did not start: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        _stop(temp)


@pytest.fixture
def two_pairs(tmp_path):
    for name, scale in (("a", 1.0), ("b", 0.8), ("target", 1.1)):
        s = trimesh.creation.icosphere(subdivisions=1 if name != "target" else 2)
        trimesh.Trimesh(s.vertices * scale, s.faces, process=False).export(tmp_path / f"{name}.obj")
    p = tmp_path / "pairs.csv"
    p.write_text("source,target,name\na.obj,target.obj,a_to_target\nb.obj,target.obj,b_to_target\n")
    return p


def test_a_batch_joins_a_real_head_with_its_token_and_gives_the_local_pools_outputs(ray_head, two_pairs, tmp_path):
    address, head_env = ray_head
    env = dict(head_env, RAY_ADDRESS=address)  # the driver holds the head's token (RAY_AUTH_TOKEN_PATH)
    res = subprocess.run([sys.executable, "-c", DRIVER, str(two_pairs), str(tmp_path / "ray")], env=env,
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads(line[len("RESULT "):]) == {"a_to_target": "done", "b_to_target": "done"}
    local = batch.run(batch.read_rows(two_pairs), tmp_path / "local", workers=1, threads=1, call=FAKE)
    assert [r.status for r in local] == ["done", "done"]
    for name in ("a_to_target", "b_to_target"):
        ray_c, local_c = (Correspondence.load(tmp_path / d / f"{name}.npz") for d in ("ray", "local"))
        for field in ("src_to_tgt_face", "src_to_tgt_bary", "tgt_to_src_face", "fitted_vertices"):
            np.testing.assert_array_equal(getattr(ray_c, field), getattr(local_c, field))


def test_a_driver_without_the_heads_token_gets_one_line_saying_so(ray_head, two_pairs, tmp_path):
    address, head_env = ray_head
    env = {k: v for k, v in head_env.items() if not k.startswith("RAY_AUTH")}
    env["RAY_ADDRESS"] = address
    env["HOME"] = str(tmp_path)  # no token in the default place (~/.ray/auth_token) either
    env["RAY_NUM_REDIS_GET_RETRIES"] = "3"  # ray's own retries of a refused connection (20 s by default)
    res = subprocess.run([sys.executable, "-m", "engine", "batch", str(two_pairs), "-o", str(tmp_path / "out"),
                          "--cluster", "ray"], env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert res.returncode != 0
    err = [x for x in res.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "RAY_AUTH_MODE=token" in err[0] and "ray get-auth-token" in err[0], res.stderr[-2000:]
    assert not (tmp_path / "out").exists()
