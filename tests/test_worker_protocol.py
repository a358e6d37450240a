"""The engine worker protocol on its own: progress, cancel, errors, crashes, bad Pythons.

The worker runs as a real subprocess (``python -m engine.worker``) driven by
the add-on's client (loaded from its file, so bpy is not needed); the matcher
is swapped for the stand-ins in ``tests/test_worker_fakes.py``.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import stat
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_client_module():
    spec = importlib.util.spec_from_file_location("sw_worker_client", os.path.join(REPO, "blender_addon", "worker_client.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wc = _load_client_module()


def _client(impl: str | None = None):
    env = {"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    if impl:
        env["STABLEWRAP_MATCH_IMPL"] = f"tests.test_worker_fakes:{impl}"
    return wc.WorkerClient(sys.executable, env=env).start(timeout=60)


def _grid(n=6, z=0.0):
    """A small open quad grid, triangulated: (V (n*n,3), F (2(n-1)^2, 3))."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    V = np.stack([u.ravel(), v.ravel(), np.full(u.size, z) + 0.1 * np.sin(3 * u.ravel())], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    F = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return V.astype(np.float32), F.astype(np.int32)


def _match_arrays():
    sv, sf = _grid(6)
    tv, tf = _grid(8, z=0.05)
    return {"src_vertices": sv, "src_faces": sf, "tgt_vertices": tv, "tgt_faces": tf}


@pytest.fixture(scope="module")
def fake_worker():
    client = _client("nearest_vertex_match")
    yield client
    client.stop()


def test_ping_and_check_report_the_environment(fake_worker):
    data, arrays = fake_worker.call("check", timeout=60)
    assert arrays == {}
    assert data["python"] == sys.version.split()[0]
    assert data["executable"] == sys.executable
    assert data["device"] in ("cpu", "cuda", "mps")
    assert data["torch"]
    assert isinstance(data["models"], list)
    from engine.keypoints.pose_model import keypoint_backend, keypoints_status

    assert data["keypoints"] == (keypoint_backend() if keypoints_status()[0] else None)
    pong, _ = fake_worker.call("ping", timeout=10)
    assert pong["pong"] is True and pong["pid"] == fake_worker.proc.pid


def test_match_streams_progress_and_returns_arrays(fake_worker):
    seen = []
    data, out = fake_worker.call("match", {"quality": "fast", "features": "geometric"}, _match_arrays(),
                                 timeout=60, on_progress=lambda s, f: seen.append((s, f)))
    assert [s for s, _ in seen if s != "starting"][:1] == ["features"]
    assert {"features", "register", "map"} <= {s for s, _ in seen}
    fr = [f for _, f in seen]
    assert fr == sorted(fr)
    assert out["src_to_tgt_face"].shape == (36,) and out["src_to_tgt_face"].dtype == np.int32
    assert out["tgt_to_src_bary"].shape == (64, 3)
    assert out["fitted_vertices"].shape == (36, 3)
    assert data["meta"]["fake"] is True
    assert data["meta"]["options"] == {"quality": "fast", "features": "geometric"}
    # the result file was consumed: no payload left behind in the exchange folder
    leftovers = [f for f in os.listdir(fake_worker.tmpdir) if f.startswith("out-")]
    assert leftovers == []


def test_landmarks_and_exclusion_reach_the_matcher(fake_worker):
    arrays = _match_arrays()
    arrays["landmarks"] = np.array([[0, 0], [35, 63]], np.int32)
    exclude = np.zeros(36, bool)
    exclude[:6] = True
    arrays["exclude"] = exclude
    skin = np.zeros(36, bool)
    skin[10:] = True
    arrays["skin"] = skin
    data, out = fake_worker.call("match", {"keypoints": "off", "orientation": "as-is"}, arrays, timeout=60)
    assert data["meta"]["landmarks"] == 2
    assert data["meta"]["options"]["keypoints"] == "off" and data["meta"]["options"]["orientation"] == "as-is"
    np.testing.assert_array_equal(out["confidence"] == 0, exclude)
    assert data["meta"]["options"]["skin"].startswith("[False")  # the skin mask reached the matcher


def test_bad_request_payload_is_an_input_error_and_worker_survives(fake_worker):
    arrays = _match_arrays()
    del arrays["tgt_faces"]
    with pytest.raises(wc.WorkerError) as err:
        fake_worker.call("match", {}, arrays, timeout=60)
    assert err.value.type == "InputError"
    assert "tgt_faces" in err.value.message and "\n" not in err.value.message
    assert fake_worker.call("ping", timeout=10)[0]["pong"]


def test_unknown_command_is_a_protocol_error(fake_worker):
    with pytest.raises(wc.WorkerError) as err:
        fake_worker.call("frobnicate", timeout=10)
    assert err.value.type == "ProtocolError"


def test_release_gpu_answers_without_a_gpu(fake_worker):
    data, _ = fake_worker.call("release_gpu", timeout=30)
    assert data["freed_bytes"] >= 0


def test_engine_error_crosses_as_type_and_message():
    client = _client("failing_match")
    try:
        with pytest.raises(wc.WorkerError) as err:
            client.call("match", {}, _match_arrays(), timeout=60)
        assert err.value.type == "InputError"
        assert err.value.message.startswith("target: mesh has no faces")
        assert client.alive
    finally:
        client.stop()


def test_unexpected_exception_is_reported_as_internal_error_without_traceback():
    client = _client("buggy_match")
    try:
        with pytest.raises(wc.WorkerError) as err:
            client.call("match", {}, _match_arrays(), timeout=60)
        assert err.value.type == "ZeroDivisionError"
        assert err.value.message.startswith("internal error (ZeroDivisionError")
        assert "Traceback" not in err.value.message
        assert client.call("ping", timeout=10)[0]["pong"]
    finally:
        client.stop()


def test_cancel_stops_a_running_job_and_the_next_job_runs():
    client = _client("slow_match")
    try:
        job = client.submit("match", {}, _match_arrays())
        _wait_for_stage(job, "register")
        queued = client.submit("ping")  # ping is answered even while the job runs
        assert queued.wait(timeout=5)[0]["pong"]
        job.cancel()
        t1 = time.monotonic()
        with pytest.raises(wc.WorkerError) as err:
            job.wait(timeout=10)
        assert err.value.type == "Cancelled"
        assert time.monotonic() - t1 < 5
        # a queued job cancelled before it starts never runs
        j2 = client.submit("match", {}, _match_arrays())
        j2.cancel()
        with pytest.raises(wc.WorkerError) as err2:
            j2.wait(timeout=10)
        assert err2.value.type == "Cancelled"
        assert client.call("release_gpu", timeout=30)[0]["freed_bytes"] >= 0  # the queue moves on
    finally:
        client.stop()


def _wait_for_stage(job, stage, limit=30.0):
    t0 = time.monotonic()
    while job.stage != stage and time.monotonic() - t0 < limit:
        job.poll()
        time.sleep(0.01)
    assert job.stage == stage and not job.done


def test_a_cancel_the_worker_cannot_answer_stops_the_worker_and_leaves_no_files():
    client = _client("stuck_match")
    try:
        job = client.submit("match", {}, _match_arrays())
        _wait_for_stage(job, "align")
        folder = client.tmpdir
        job.cancel()
        t1 = time.monotonic()
        with pytest.raises(wc.WorkerError) as err:
            job.wait(timeout=20)
        assert err.value.type == "Cancelled" and time.monotonic() - t1 < wc.CANCEL_GRACE_S + 2
        assert not client.alive  # the next job gets a fresh worker instead of queueing behind this one
        assert not os.path.exists(folder)  # the request folder went with it
    finally:
        client.stop()


def test_a_new_job_right_after_a_stuck_cancel_does_not_queue_behind_it():
    client = _client("stuck_match")
    try:
        job = client.submit("match", {}, _match_arrays())
        _wait_for_stage(job, "align")
        job.cancel()
        t1 = time.monotonic()
        client.settle_cancels()  # what the add-on calls before sending the next job
        assert time.monotonic() - t1 < wc.CANCEL_GRACE_S + 2 and not client.alive
    finally:
        client.stop()


def test_finished_jobs_leave_no_request_files(fake_worker):
    for _ in range(3):
        fake_worker.call("match", {}, _match_arrays(), timeout=60)
    with pytest.raises(wc.WorkerError):
        fake_worker.call("match", {}, {"src_vertices": np.zeros((0, 3), np.float32)}, timeout=60)
    assert not [f for f in os.listdir(fake_worker.tmpdir) if f.endswith(".npz")]


def test_progress_callback_returning_false_cancels():
    client = _client("slow_match")
    try:
        with pytest.raises(wc.WorkerError) as err:
            client.call("match", {}, _match_arrays(), timeout=30, on_progress=lambda s, f: s != "register")
        assert err.value.type == "Cancelled"
    finally:
        client.stop()


def test_worker_crash_fails_the_job_with_a_clear_message():
    client = _client("crashing_match")
    try:
        with pytest.raises(wc.WorkerError) as err:
            client.call("match", {}, _match_arrays(), timeout=60)
        assert err.value.type == "WorkerDied"
        assert "exit code 3" in err.value.message
        assert "simulated crash" in err.value.message
        assert not client.alive
        with pytest.raises(wc.WorkerError):
            client.submit("ping").wait(timeout=5)
    finally:
        client.stop()


def test_stdout_noise_from_libraries_does_not_break_the_protocol():
    client = _client("chatty_match")
    try:
        _, out = client.call("match", {}, _match_arrays(), timeout=60)
        assert out["fitted_vertices"].shape == (36, 3)
        assert "hello from a library" in open(client.log_path).read()
    finally:
        client.stop()


def test_missing_python_is_reported():
    with pytest.raises(wc.WorkerError) as err:
        wc.WorkerClient("/nonexistent/bin/python").start()
    assert err.value.type == "EngineNotFound"
    with pytest.raises(wc.WorkerError) as err:
        wc.WorkerClient("").start()
    assert err.value.type == "EngineNotConfigured"


def test_broken_python_is_reported(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'No module named engine' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(wc.WorkerError) as err:
        wc.WorkerClient(str(fake)).start(timeout=20)
    assert err.value.type == "WorkerStartFailed"
    assert "No module named engine" in err.value.message and "exit code 1" in err.value.message


def test_a_worker_started_without_waiting_answers_what_was_sent_before_it_was_ready(tmp_path):
    """The UI starts the worker without waiting for torch to load: requests queue in its input."""
    env = {"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    client = wc.WorkerClient(sys.executable, env=env).start(wait=False)
    try:
        job = client.submit("check")
        assert time.monotonic() - t0 < 1.0 and not job.done  # nothing waited for the worker
        info, _ = job.wait(timeout=120)
        assert info["engine"] and client.info
    finally:
        client.stop()
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'No module named engine' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broken = wc.WorkerClient(str(fake)).start(wait=False)
    try:
        with pytest.raises(wc.WorkerError) as err:
            broken.submit("check").wait(timeout=20)
        assert err.value.type in ("WorkerStartFailed", "WorkerDied") and "No module named engine" in err.value.message
    finally:
        broken.stop()


def test_stop_ends_the_process():
    client = _client()
    proc = client.proc
    client.stop()
    assert proc.poll() is not None
    assert not client.alive


def test_worker_in_process_rejects_garbage_lines():
    from engine.worker import Worker

    out = io.StringIO()
    w = Worker(io.StringIO(), out)
    assert w.handle_line("not json") is True
    assert w.handle_line("[1, 2]") is True
    assert w.handle_line('{"id": "1", "cmd": "shutdown"}') is False
    msgs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["error"]["type"] for m in msgs[:2]] == ["ProtocolError", "ProtocolError"]
    assert msgs[2]["data"] == {"bye": True}


def test_worker_speaks_the_same_protocol_over_a_socket():
    import socket
    import subprocess

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(60)
    port = server.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=REPO, STABLEWRAP_MATCH_IMPL="tests.test_worker_fakes:nearest_vertex_match")
    proc = subprocess.Popen([sys.executable, "-m", "engine.worker", "--connect", f"127.0.0.1:{port}"], env=env)
    try:
        conn, _ = server.accept()
        conn.settimeout(60)
        rf, wf = conn.makefile("r"), conn.makefile("w")
        assert json.loads(rf.readline())["type"] == "ready"
        wf.write(json.dumps({"id": "1", "cmd": "ping"}) + "\n")
        wf.flush()
        reply = json.loads(rf.readline())
        assert reply["id"] == "1" and reply["data"]["pong"] is True
        wf.write(json.dumps({"id": "2", "cmd": "shutdown"}) + "\n")
        wf.flush()
        assert json.loads(rf.readline())["data"] == {"bye": True}
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
