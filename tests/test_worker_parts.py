"""The worker's part-matching commands return what engine.parts returns when called directly."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from tests.test_worker_protocol import REPO, wc

import engine.parts  # noqa: F401  (the engine's own module: an import error fails, not skips)
trimesh = pytest.importorskip("trimesh")


@pytest.fixture(scope="module")
def worker():
    client = wc.WorkerClient(sys.executable, env={"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}).start(timeout=60)
    yield client
    client.stop()


def _blob(sub=2, bump=(0.0, 0.0, 1.0), scale=1.0):
    """An icosphere with a nose-like bump: (V (n, 3) float64, F (m, 3) int64)."""
    s = trimesh.creation.icosphere(subdivisions=sub)
    u = np.asarray(s.vertices)
    d = np.asarray(bump, float)
    r = 1.0 + 0.6 * np.exp(-((np.arccos(np.clip(u @ d, -1, 1)) / 0.4) ** 2))
    return u * r[:, None] * scale, np.asarray(s.faces, np.int64)


def _pair_arrays():
    sv, sf = _blob(2)
    tv, tf = _blob(2, scale=1.2)
    part = np.nonzero(sv[:, 2] > 1.0)[0].astype(np.int32)  # the bump
    return sv, sf, tv, tf, part


def test_match_part_matches_the_engine(worker):
    from engine.parts import match_part

    sv, sf, tv, tf, part = _pair_arrays()
    data, out = worker.call("match_part", {"k": 50}, {"src_vertices": sv, "src_faces": sf, "tgt_vertices": tv,
                                                      "tgt_faces": tf, "part": part}, timeout=120)
    ref = match_part((sv, sf), part, (tv, tf), k=50).arrays()
    assert set(out) == {"target_vertices", "bsb_vertex", "score"}
    assert out["target_vertices"].dtype == np.int32 and out["bsb_vertex"].dtype == np.int32
    np.testing.assert_array_equal(out["target_vertices"], ref["target_vertices"])
    assert int(out["bsb_vertex"]) == int(ref["bsb_vertex"]) == data["bsb_vertex"]
    np.testing.assert_allclose(out["score"], ref["score"], atol=1e-6)
    assert data["matched"] and data["n_target_vertices"] == len(ref["target_vertices"]) > 0
    # the bump on the source lands on the bump of the target
    assert np.mean(tv[out["target_vertices"], 2] > 1.0) > 0.5


@pytest.mark.parametrize("part, message", [(np.zeros(0, np.int32), "empty"), (None, "whole mesh"),
                                           (np.array([10 ** 6], np.int32), "out of range")])
def test_match_part_bad_groups_are_input_errors(worker, part, message):
    sv, sf, tv, tf, _ = _pair_arrays()
    if part is None:
        part = np.arange(len(sv), dtype=np.int32)
    with pytest.raises(wc.WorkerError) as err:
        worker.call("match_part", {}, {"src_vertices": sv, "src_faces": sf, "tgt_vertices": tv, "tgt_faces": tf,
                                       "part": part}, timeout=60)
    assert err.value.type == "InputError" and message in err.value.message and "\n" not in err.value.message


def test_match_part_rejects_a_bad_option(worker):
    sv, sf, tv, tf, part = _pair_arrays()
    with pytest.raises(wc.WorkerError) as err:
        worker.call("match_part", {"k": "many"}, {"src_vertices": sv, "src_faces": sf, "tgt_vertices": tv,
                                                  "tgt_faces": tf, "part": part}, timeout=60)
    assert err.value.type == "InputError" and "'k'" in err.value.message


def _image():
    img = np.zeros((40, 60, 4), np.float32)
    img[10:30, 10:50] = [0.8, 0.3, 0.3, 1.0]
    img[10:30, 30:50, :3] = [0.2, 0.4, 0.9]
    return img


def test_match_image_part_click_outside_the_image_is_an_input_error(worker):
    tv, tf = _blob(1)
    with pytest.raises(wc.WorkerError) as err:
        worker.call("match_image_part", {"click": [70, 5]}, {"image": _image(), "tgt_vertices": tv, "tgt_faces": tf},
                    timeout=60)
    assert err.value.type == "InputError" and "outside the 60x40 image" in err.value.message


def test_match_image_part_without_dino_is_backend_unavailable(worker):
    from engine.features import semantic

    if semantic.available("dino")[0]:
        pytest.skip("DINOv2 is installed here; the missing-model path cannot be exercised")
    tv, tf = _blob(1)
    with pytest.raises(wc.WorkerError) as err:
        worker.call("match_image_part", {"click": [20, 15], "cache": False},
                    {"image": _image(), "tgt_vertices": tv, "tgt_faces": tf}, timeout=60)
    assert err.value.type == "BackendUnavailable" and "\n" not in err.value.message


def test_match_image_part_with_the_tiny_test_backbone_matches_the_engine():
    """The test-only switch STABLEWRAP_TEST_TINY_BACKBONE drives the full image path with a random tiny DINOv2."""
    from engine.features.testing import tiny_backbones
    from engine.parts import match_image_part
    from engine.parts.distill import DistillSettings

    tv, tf = _blob(1)
    img = _image()
    env = {"PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "STABLEWRAP_TEST_TINY_BACKBONE": "1"}
    client = wc.WorkerClient(sys.executable, env=env).start(timeout=60)
    try:
        data, out = client.call("match_image_part", {"click": [20, 15]},
                                {"image": img, "tgt_vertices": tv, "tgt_faces": tf}, timeout=120)
    finally:
        client.stop()
    ref = match_image_part(img, (tv, tf), click=(20, 15), backbone=tiny_backbones("dino").dino, views=2,
                           resolution=32, grid=16, cache_dir=False,
                           distill_settings=DistillSettings(layers=2, width=16, n_freqs=2, steps=5)).arrays()
    assert int(out["bsb_vertex"]) == int(ref["bsb_vertex"]) == data["bsb_vertex"]
    np.testing.assert_array_equal(out["target_vertices"], ref["target_vertices"])
    np.testing.assert_allclose(out["score"], ref["score"], atol=1e-5)
