"""The worker's detect_landmarks command: the real MediaPipe pose model on two generated figures.

Runs ``python -m engine.worker`` as a subprocess driven by the add-on's client
(as tests/test_worker_protocol.py does); detections are cached in a temporary
folder (``STABLEWRAP_CACHE``), never in the user's cache.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.keypoints.pose_model import mediapipe_status
from tests.test_worker_protocol import REPO, wc

pytestmark = pytest.mark.skipif(not mediapipe_status()[0], reason="mediapipe is not installed")
trimesh = pytest.importorskip("trimesh")


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sw-cache")
    client = wc.WorkerClient(sys.executable, env={"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1",
                                                  "STABLEWRAP_CACHE": str(cache)}).start(timeout=60)
    yield client
    client.stop()


@pytest.fixture(scope="module")
def figures():
    from engine.samples import humanoid

    sv, sf = humanoid()
    tv, tf = humanoid(left_arm_raise_deg=60.0)
    # the caller's vertex order differs from the engine's clean order: reversed vertices, plus an
    # unreferenced vertex in front (the reply must use the caller's indices)
    tv = np.concatenate([[[5.0, 5.0, 5.0]], tv[::-1]])
    tf = (len(tv) - 1 - tf)[:, ::-1]
    return sv.astype(np.float32), sf.astype(np.int32), tv.astype(np.float32), tf.astype(np.int32)


def test_detect_landmarks_returns_named_pairs_on_the_right_side(worker, figures):
    sv, sf, tv, tf = figures
    seen = []
    data, out = worker.call("detect_landmarks", {"source_name": "Template", "target_name": "Scan"},
                            {"src_vertices": sv, "src_faces": sf, "tgt_vertices": tv, "tgt_faces": tf},
                            timeout=300, on_progress=lambda s, f: seen.append((s, f)))
    assert "keypoints" in {s for s, _ in seen}
    pairs, conf, names = out["pairs"], out["confidence"], data["names"]
    assert pairs.dtype == np.int64 and pairs.shape == (len(names), 2) and conf.shape == (len(names),)
    assert len(names) >= 15 and len(set(names)) == len(names)
    assert {"left_wrist", "right_wrist", "left_knee", "right_knee", "nose"} <= set(names)
    assert conf.min() > 0.2 and conf.max() <= 1.0
    assert pairs[:, 0].max() < len(sv) and pairs[:, 1].min() >= 1 and pairs[:, 1].max() < len(tv)
    assert data["source_views"] >= 4 and data["target_views"] >= 4
    ps, pt = sv[pairs[:, 0]], tv[pairs[:, 1]]
    where = {n: (ps[i], pt[i]) for i, n in enumerate(names)}
    # the figures face +Z with their left towards +X; the target's left arm is raised
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for part in ("wrist", "elbow", "knee", "ankle"):
            s, t = where[f"{side}_{part}"]
            assert sign * s[0] > 0.05 and sign * t[0] > 0.05, f"{side}_{part} on the wrong side"
    assert where["left_wrist"][1][1] > where["left_wrist"][0][1] + 0.15  # raised on the target only
    assert abs(where["right_wrist"][1][1] - where["right_wrist"][0][1]) < 0.1
    # unchanged parts of the two figures land on (nearly) the same places
    assert np.linalg.norm(where["right_knee"][0] - where["right_knee"][1]) < 0.08


def test_a_mesh_without_a_body_is_an_input_error_naming_it(worker, figures):
    sv, sf, _, _ = figures
    box = trimesh.creation.box()
    with pytest.raises(wc.WorkerError) as err:
        worker.call("detect_landmarks", {"source_name": "Template", "target_name": "Crate"},
                    {"src_vertices": sv, "src_faces": sf, "tgt_vertices": np.asarray(box.vertices),
                     "tgt_faces": np.asarray(box.faces)}, timeout=300)
    assert err.value.type == "InputError"
    assert "no body found on the target mesh 'Crate'" in err.value.message and "\n" not in err.value.message
    assert worker.call("ping", timeout=10)[0]["pong"]


def test_detect_landmarks_can_be_cancelled(worker):
    from engine.samples import humanoid

    v, f = humanoid(right_knee_bend_deg=25.0)  # not cached yet: detection runs
    with pytest.raises(wc.WorkerError) as err:
        worker.call("detect_landmarks", {}, {"src_vertices": v, "src_faces": f, "tgt_vertices": v, "tgt_faces": f},
                    timeout=300, on_progress=lambda s, fr: s != "keypoints")
    assert err.value.type == "Cancelled"
    assert worker.call("ping", timeout=10)[0]["pong"]


def test_missing_arrays_are_an_input_error(worker, figures):
    sv, sf, _, _ = figures
    with pytest.raises(wc.WorkerError) as err:
        worker.call("detect_landmarks", {}, {"src_vertices": sv, "src_faces": sf}, timeout=60)
    assert err.value.type == "InputError" and "tgt_vertices" in err.value.message
