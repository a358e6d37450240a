"""``python -m engine batch``: rows from a CSV, a local pool of spawned processes, failures that stay
with their pair, atomic outputs, resuming, bad input.

Six generated pairs (small spheres written as OBJ files); a stand-in matcher (run in the child
processes through the ``call`` hook) crashes on meshes named ``crash*`` and hangs on ``hang*``;
the rest get a nearest-vertex map. One test runs the real engine on one pair.
"""
from __future__ import annotations

import csv
import os
import threading
import time

import numpy as np
import pytest
import trimesh

from engine import batch
from engine.correspondence import Correspondence
from engine.errors import InputError

HERE = "tests.batch_fakes"  # a light module: every spawned child imports it


def _sphere(path, subdivisions=1, scale=1.0):
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    trimesh.Trimesh(s.vertices * scale, s.faces, process=False).export(path)


@pytest.fixture
def pairs_csv(tmp_path):
    names = ["a", "b", "crash", "c", "hang", "d"]
    for n in names:
        _sphere(tmp_path / f"{n}.obj")
    _sphere(tmp_path / "target.obj", 2, 1.1)
    lines = ["source,target,name"] + [f"{n}.obj,target.obj,{n}_to_target" for n in names]
    p = tmp_path / "pairs.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _table(out):
    with open(out / batch.RESULTS_FILE) as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def test_a_crash_and_a_hang_fail_only_their_pairs_and_a_rerun_does_only_those(pairs_csv, tmp_path):
    out = tmp_path / "out"
    rows = batch.read_rows(pairs_csv)
    lines = []
    res = batch.run(rows, out, workers=2, threads=1, retries=1, timeout=3, call=f"{HERE}:fake_match", log=lines.append)
    status = {r.name: r.status for r in res}
    assert lines[0].startswith("batch: 6 pair(s) to run, 0 already done; 2 worker(s) x 1 thread(s)")
    assert len(lines) == 7 and lines[-1].startswith("[6/6] ") and "2 failed so far" in lines[-1]
    assert status == {"a_to_target": "done", "b_to_target": "done", "crash_to_target": "failed",
                      "c_to_target": "done", "hang_to_target": "failed", "d_to_target": "done"}
    by = {r.name: r for r in res}
    assert by["crash_to_target"].error == "worker exited with code 9 without a result" and by["crash_to_target"].attempts == 2
    assert by["hang_to_target"].error == "timed out after 3 s" and by["hang_to_target"].attempts == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [batch.RESULTS_FILE] + [f"{n}_to_target.npz" for n in "abcd"])  # no partial or temp file
    corr = Correspondence.load(out / "a_to_target.npz")
    assert corr.src_to_tgt_face.shape == (42,) and corr.meta["verdict"] == {"verdict": "good"}
    table = _table(out)
    assert table["a_to_target"]["status"] == "done" and float(table["a_to_target"]["peak_rss_mb"]) > 10
    assert table["a_to_target"]["verdict"] == "good" and table["crash_to_target"]["error"].startswith("worker exited")
    # the rerun redoes only the failed pairs (here: the crash now succeeds, the hang fails fast)
    (tmp_path / "crash.obj").rename(tmp_path / "fixed.obj")
    pairs_csv.write_text(pairs_csv.read_text().replace("crash.obj", "fixed.obj"))
    again = batch.run(batch.read_rows(pairs_csv), out, workers=2, threads=1, retries=0, timeout=3,
                      call=f"{HERE}:fake_match")
    assert {r.name: r.status for r in again} == {**status, "a_to_target": "skipped", "b_to_target": "skipped",
                                                  "c_to_target": "skipped", "d_to_target": "skipped",
                                                  "crash_to_target": "done"}
    assert {r.name: r.attempts for r in again}["hang_to_target"] == 1
    # an input newer than its output is redone; --force redoes everything
    os.utime(tmp_path / "a.obj", (time.time() + 5, time.time() + 5))
    third = batch.run(batch.read_rows(pairs_csv)[:2], out, workers=1, threads=1, call=f"{HERE}:fake_match")
    assert [r.status for r in third] == ["done", "skipped"]
    forced = batch.run(batch.read_rows(pairs_csv)[:2], out, workers=1, threads=1, force=True, call=f"{HERE}:fake_match")
    assert [r.status for r in forced] == ["done", "done"]


def test_a_stop_ends_running_matches_and_leaves_no_partial_file(pairs_csv, tmp_path):
    out = tmp_path / "out"
    rows = [r for r in batch.read_rows(pairs_csv) if r.name.startswith(("hang", "a_"))]
    stop, pressed = threading.Event(), []

    def press_ctrl_c():  # what Ctrl-C does, once the first pair is written and the hang has started
        t = time.monotonic()
        while not (out / "a_to_target.npz").exists() and time.monotonic() - t < 60:
            time.sleep(0.05)
        time.sleep(1.0)
        pressed.append(time.monotonic())
        stop.set()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    res = batch.run(rows, out, workers=1, threads=1, timeout=120, stop=stop, call=f"{HERE}:fake_match")
    assert pressed and time.monotonic() - pressed[0] < 5  # the running match ended at once
    assert {r.name: r.status for r in res} == {"a_to_target": "done", "hang_to_target": "stopped"}
    assert sorted(p.name for p in out.iterdir()) == sorted([batch.RESULTS_FILE, "a_to_target.npz"])
    assert _table(out)["hang_to_target"]["status"] == "stopped"


@pytest.mark.parametrize("text, message", [
    ("target\nx.obj\n", "missing column(s) source"),
    ("source,target,colour\na.obj,t.obj,red\n", "unknown column(s) colour"),
    ("source,target\nnope.obj,t.obj\n", "pairs.csv:2: source file 'nope.obj' not found"),
    ("source,target\na.obj,t.obj\na.obj,t.obj\n", "pairs.csv:3: output name 'a__t' is also line 2's"),
    ("source,target,config\na.obj,t.obj,{\"reg_steps\": 0}\n", "pairs.csv:2: config"),
    ("source,target,quality\na.obj,t.obj,ultra\n", "pairs.csv:2: quality: unknown preset 'ultra'"),
    ("source,target\n\n", "no pairs listed"),
])
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path, text, message):
    _sphere(tmp_path / "a.obj")
    _sphere(tmp_path / "t.obj")
    p = tmp_path / "pairs.csv"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        batch.read_rows(p)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_runs_the_real_engine_and_reports(tmp_path, capsys):
    from engine.cli import main

    _sphere(tmp_path / "a.obj", 2)
    _sphere(tmp_path / "t.obj", 2, 1.3)
    (tmp_path / "pairs.csv").write_text('source,target,quality,config\na.obj,t.obj,fast,"{""surface_fit_iterations"": 2}"\n')
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "pairs.csv"), "-o", str(out), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "batch: 1 done; table:" in err
    corr = Correspondence.load(out / "a__t.npz")
    assert corr.fitted_vertices.shape == (162, 3) and corr.meta["quality"] == "fast"
    assert main(["batch", str(tmp_path / "pairs.csv"), "-o", str(out)]) == 0
    assert "batch: 1 skipped" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "missing.csv"), "-o", str(out)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.csv'}: batch file not found"


def _uv_sphere(path, subdivisions=1, scale=1.0):
    """An icosphere with per-corner UVs (longitude / height) written as OBJ."""
    from engine.transfer.cli import write_obj

    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = s.vertices[s.faces]  # (m, 3, 3)
    uv = np.stack([(np.arctan2(v[..., 1], v[..., 0]) + np.pi) / (2 * np.pi), (v[..., 2] + 1) / 2], axis=-1)
    write_obj(str(path), s.vertices * scale, s.faces, corner_uv=uv)


def test_transfers_run_after_the_match_and_a_failed_one_leaves_none_of_its_row(tmp_path):
    """uv / texture / weights / morph columns write their files beside the match; a row whose
    texture cannot be baked (a target without UVs) fails with one line naming the transfer and
    leaves none of its files (not even the UV transfer that ran before it); a rerun redoes a row
    with one of its files missing."""
    from engine.transfer.cli import write_image

    _uv_sphere(tmp_path / "a.obj")
    _uv_sphere(tmp_path / "t.obj", 2, 1.1)
    _sphere(tmp_path / "plain.obj", 2, 1.1)
    write_image(str(tmp_path / "skin.png"), np.full((16, 16, 3), 200, np.uint8))
    ns = 42
    rng = np.random.default_rng(0)
    skin = rng.random((ns, 4))
    np.savez(tmp_path / "w.npz", skin=skin / skin.sum(1, keepdims=True), spine=rng.random(ns))
    (tmp_path / "pairs.csv").write_text(
        "source,target,name,uv,texture,weights,morph\n"
        "a.obj,t.obj,full,yes,skin.png,w.npz,3\n"
        "a.obj,plain.obj,nouv,yes,skin.png,,\n")
    out = tmp_path / "out"
    rows = batch.read_rows(tmp_path / "pairs.csv")
    res = {r.name: r for r in batch.run(rows, out, workers=1, threads=1, call=f"{HERE}:fake_match")}
    assert res["full"].status == "done", res["full"].error
    assert res["nouv"].status == "failed" and "texture transfer: plain.obj" in res["nouv"].error and "no UVs" in res["nouv"].error
    assert "\n" not in res["nouv"].error and res["nouv"].attempts == 1  # bad input: not retried
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [batch.RESULTS_FILE, "full.npz", "full.uv.obj", "full.texture.png", "full.weights.npz", "full.morph.npz"])
    uv_target = trimesh.load(out / "full.uv.obj", process=False)
    assert len(uv_target.vertices) == 162 and uv_target.visual.uv is not None
    from engine.transfer.cli import read_image

    assert read_image(str(out / "full.texture.png")).shape[:2] == (16, 16)
    with np.load(out / "full.weights.npz") as w:
        assert w["skin"].shape == (162, 4) and np.allclose(w["skin"].sum(1), 1, atol=1e-5)
        assert w["spine"].shape == (162,)
    with np.load(out / "full.morph.npz") as m:
        assert m["frames"].shape == (3, ns, 3)
    # complete rows are skipped; a row with a file missing is redone
    (out / "full.morph.npz").unlink()
    again = batch.run(rows[:1], out, workers=1, threads=1, call=f"{HERE}:fake_match")
    assert again[0].status == "done" and (out / "full.morph.npz").exists()
    assert batch.run(rows[:1], out, workers=1, threads=1, call=f"{HERE}:fake_match")[0].status == "skipped"


@pytest.mark.parametrize("cells, message", [
    ("uv\nmaybe", "pairs.csv:2: uv must be yes or no"),
    ("morph\n1", "pairs.csv:2: morph must be a frame count of 2 or more"),
    ("weights\nw.txt", "pairs.csv:2: weights file 'w.txt' not found"),
    ("texture\nnone.png", "pairs.csv:2: texture file 'none.png' not found"),
])
def test_bad_transfer_cells_are_one_line_errors(tmp_path, cells, message):
    _sphere(tmp_path / "a.obj")
    head, value = cells.split("\n")
    (tmp_path / "pairs.csv").write_text(f"source,target,{head}\na.obj,a.obj,{value}\n")
    with pytest.raises(InputError) as e:
        batch.read_rows(tmp_path / "pairs.csv")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (the [cluster] extra)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})  # the workers import tests.test_batch
    yield ray
    ray.shutdown()


def test_the_same_rows_on_a_local_ray_instance_give_the_same_outputs(pairs_csv, tmp_path, local_ray):
    """Through Ray each pair is a task that gets its meshes as bytes and runs as the local pool
    does: the crash and the hang fail with the local pool's one-line reasons, the other pairs'
    match files equal the local pool's, nothing partial is left."""
    rows = batch.read_rows(pairs_csv)
    res = batch.run(rows, tmp_path / "ray", workers=2, threads=1, retries=0, timeout=3, cluster="ray",
                    call=f"{HERE}:fake_match")
    by = {r.name: r for r in res}
    assert {n: r.status for n, r in by.items()} == {"a_to_target": "done", "b_to_target": "done", "crash_to_target": "failed",
                                                    "c_to_target": "done", "hang_to_target": "failed", "d_to_target": "done"}, \
        [r.error for r in res]
    assert by["crash_to_target"].error == "worker exited with code 9 without a result"
    assert by["hang_to_target"].error == "timed out after 3 s"
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        [batch.RESULTS_FILE] + [f"{n}_to_target.npz" for n in "abcd"])
    local = batch.run([r for r in rows if r.name == "a_to_target"], tmp_path / "local", workers=1, threads=1,
                      call=f"{HERE}:fake_match")
    assert local[0].status == "done"
    ray_a, local_a = (Correspondence.load(tmp_path / d / "a_to_target.npz") for d in ("ray", "local"))
    for field in ("src_to_tgt_face", "src_to_tgt_bary", "tgt_to_src_face", "fitted_vertices"):
        np.testing.assert_array_equal(getattr(ray_a, field), getattr(local_a, field))


def test_an_unreachable_ray_cluster_is_a_one_line_error_in_seconds(pairs_csv, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (the [cluster] extra)")
    t = time.monotonic()
    with pytest.raises(InputError) as e:
        batch.run(batch.read_rows(pairs_csv), tmp_path / "out", cluster="ray://127.0.0.1:9", call=f"{HERE}:fake_match")
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert msg.startswith("--cluster ray://127.0.0.1:9: cannot reach the Ray cluster") and "\n" not in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="expected ray://HOST:PORT"):
        batch.run(batch.read_rows(pairs_csv), tmp_path / "out", cluster="ray://nohost", call=f"{HERE}:fake_match")


@pytest.mark.parametrize("raised, needle", [
    ("auth", "wants its auth token: run 'ray get-auth-token' on the head"),
    ("client", "needs the client package: pip install 'ray[client]'"),
])
def test_a_cluster_that_wants_a_token_or_the_client_package_says_which_in_one_line(pairs_csv, tmp_path, monkeypatch,
                                                                                   raised, needle):
    """Ray 2.59+ heads want a token (RAY_AUTH_MODE=token); a ray:// address needs ray[client]: the
    error names what is missing and how to give it, one line, nothing written."""
    import socket

    ray = pytest.importorskip("ray", reason="ray is not installed (the [cluster] extra)")

    def refuse(*args, **kwargs):
        if raised == "auth":
            raise ray.exceptions.AuthenticationError("InvalidAuthToken: the token is missing")
        raise RuntimeError("Ray Client requires pip package `ray[client]`. If you installed the minimal Ray ...")

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    try:
        with pytest.raises(InputError) as e:
            batch.run(batch.read_rows(pairs_csv), tmp_path / "out", cluster=f"ray://127.0.0.1:{port}", call=f"{HERE}:fake_match")
    finally:
        server.close()
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and not (tmp_path / "out").exists()
