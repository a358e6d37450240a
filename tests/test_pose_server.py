"""The pose model's child process (engine.keypoints.pose_server): the same detections as in this
process, the fallback where no child can start, and a one-line error when it dies mid-way."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from engine.errors import BackendUnavailable
from engine.keypoints import pose_server
from engine.keypoints.detect import KeypointSettings, _render
from engine.keypoints.pose_model import MediaPipeHands, MediaPipePose, mediapipe_status
from engine.samples import humanoid

pytestmark = pytest.mark.skipif(not mediapipe_status()[0], reason="mediapipe is not installed")


@pytest.fixture()
def fresh(monkeypatch):
    """No child from earlier tests; the ones started here are closed at the end."""
    monkeypatch.setattr(pose_server, "_server", None)
    monkeypatch.setattr(pose_server, "_failed", False)
    monkeypatch.delenv(pose_server.ENV_SWITCH, raising=False)
    yield
    if pose_server._server is not None:
        pose_server._server.close()


@pytest.fixture(scope="module")
def images():
    v, f = humanoid(left_arm_raise_deg=80.0)
    return _render(v, f, "y", KeypointSettings(views=4, resolution=256))[0]


def test_the_child_finds_what_this_process_finds_for_both_models(fresh, images, monkeypatch):
    got = MediaPipePose().detect(images)
    srv = pose_server._server
    assert srv is not None and srv.proc.poll() is None  # it ran in the child, which stays up for the next call
    hands = MediaPipeHands().detect(images[:1])
    assert pose_server._server is srv and len(hands) == 1
    monkeypatch.setenv(pose_server.ENV_SWITCH, "0")  # now in this process
    want = MediaPipePose().detect(images)
    assert pose_server._server is srv  # (left running, unused)
    assert [g is None for g in got] == [w is None for w in want] and sum(g is not None for g in got) >= 3
    for g, w in zip(got, want):
        if g is not None:
            assert np.allclose(g.xy, w.xy, atol=1e-6) and np.allclose(g.visibility, w.visibility, atol=1e-6)


def test_a_child_that_cannot_start_leaves_the_model_in_this_process(fresh, images, monkeypatch):
    real = subprocess.Popen

    def broken(cmd, **kw):  # a Python that cannot import the engine
        return real([sys.executable, "-c", "import sys; sys.exit(3)"], **kw)

    monkeypatch.setattr(pose_server.subprocess, "Popen", broken)
    dets = MediaPipePose().detect(images)
    assert sum(d is not None for d in dets) >= 3
    assert pose_server._failed and pose_server._server is None
    assert pose_server.server() is None  # not tried again in this process


def test_no_child_under_a_host_that_is_not_python(fresh, monkeypatch):
    monkeypatch.setattr(pose_server.sys, "executable", "/opt/blender/blender")
    assert not pose_server.enabled() and pose_server.server() is None


def test_a_child_that_dies_is_a_one_line_error_and_the_next_call_starts_another(fresh, images, monkeypatch):
    srv = pose_server.server()
    MediaPipePose().detect(images[:1])
    srv.proc.kill()
    srv.proc.wait()
    # dead during a request: the match fails with one line
    with monkeypatch.context() as m:
        m.setattr(pose_server, "server", lambda: srv)
        with pytest.raises(BackendUnavailable, match=r"^keypoints: the pose model's process ended \(exit code -9\)$"):
            MediaPipePose().detect(images[:1])
    assert pose_server._server is None  # forgotten: the next call starts another
    assert len(MediaPipePose().detect(images[:1])) == 1
    assert pose_server._server is not None and pose_server._server is not srv


def test_the_child_ends_when_its_parent_closes_it(fresh):
    srv = pose_server.server()
    srv.close()
    assert srv.proc.poll() is not None
