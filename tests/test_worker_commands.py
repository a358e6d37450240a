"""The worker's transfer commands return what the engine functions return when called directly."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_worker_protocol import _client, _grid, wc


@pytest.fixture(scope="module")
def worker():
    client = _client()
    yield client
    client.stop()


def _map(nt, ms, seed=0):
    rng = np.random.default_rng(seed)
    face = rng.integers(0, ms, nt).astype(np.int32)
    bary = rng.dirichlet([1, 1, 1], nt).astype(np.float32)
    return face, bary


def test_transfer_weights_matches_the_engine(worker):
    from engine.transfer import attributes
    sv, sf = _grid(6)
    tv, tf = _grid(8)
    face, bary = _map(len(tv), len(sf))
    values = np.random.default_rng(2).uniform(0, 1, (len(sv), 3)).astype(np.float32)
    _, out = worker.call("transfer_weights", {"mode": "barycentric", "normalize": True},
                         {"values": values, "src_faces": sf, "tgt_to_src_face": face, "tgt_to_src_bary": bary}, timeout=60)
    ref = attributes.transfer_vertex_attributes(values, sf, face, bary, mode="barycentric", normalize=True)
    np.testing.assert_allclose(out["values"], ref, atol=1e-6)
    np.testing.assert_allclose(out["values"].sum(1), 1.0, atol=1e-5)


def test_transfer_uvs_matches_the_engine(worker):
    from engine.transfer import uv
    sv, sf = _grid(6)
    tv, tf = _grid(8)
    face, bary = _map(len(tv), len(sf), 1)
    corner = sv[sf][..., :2].astype(np.float32)  # planar UVs
    data, out = worker.call("transfer_uvs", {}, {"src_faces": sf, "src_corner_uv": corner, "tgt_faces": tf,
                                                 "tgt_to_src_face": face, "tgt_to_src_bary": bary}, timeout=60)
    ref = uv.transfer_uvs(sf, corner, tf, face, bary)
    np.testing.assert_allclose(out["corner_uv"], ref.corner_uv, atol=1e-6)
    assert out["corner_uv"].shape == (len(tf), 3, 2)
    assert data["seam_faces"] == len(ref.seam_faces)


def test_make_morph_matches_the_engine(worker):
    from engine.transfer import morph
    sv, sf = _grid(6)
    fitted = sv * np.float32(1.5) + np.float32(0.2)
    times = [0.25, 0.5, 1.0]
    _, out = worker.call("make_morph", {"times": times, "method": "linear"},
                         {"src_vertices": sv, "src_faces": sf, "fitted_vertices": fitted}, timeout=60)
    ref = morph.morph_sequence(sv, sf, fitted, method="linear", times=times)
    assert out["frames"].shape == (3, len(sv), 3)
    np.testing.assert_allclose(out["frames"], ref, atol=1e-6)
    np.testing.assert_allclose(out["frames"][-1], fitted, atol=1e-5)


def test_bake_texture_matches_the_engine(worker):
    from engine.transfer import texture
    sv, sf = _grid(6)
    tv, tf = _grid(8)
    face, bary = _map(len(tv), len(sf), 3)
    s_uv = sv[sf][..., :2].astype(np.float32)
    t_uv = tv[tf][..., :2].astype(np.float32)
    img = np.random.default_rng(4).uniform(0, 1, (16, 16, 4)).astype(np.float32)
    arrays = {"src_faces": sf, "src_corner_uv": s_uv, "src_image": img, "tgt_faces": tf, "tgt_corner_uv": t_uv,
              "tgt_to_src_face": face, "tgt_to_src_bary": bary}
    _, out = worker.call("bake_texture", {"size": [12, 12], "padding": 2}, arrays, timeout=60)
    ref = texture.bake_texture(sf, s_uv, img, tf, t_uv, face, bary, size=(12, 12), padding=2)
    assert out["image"].shape == (12, 12, 4)
    np.testing.assert_allclose(out["image"], ref, atol=1e-6)


def test_engine_input_errors_cross_as_input_error(worker):
    import engine.transfer.morph  # noqa: F401  (the engine's own module: an import error fails, not skips)
    sv, sf = _grid(4)
    with pytest.raises(wc.WorkerError) as err:
        worker.call("make_morph", {"n": 1}, {"src_vertices": sv, "src_faces": sf, "fitted_vertices": sv[:-1]}, timeout=60)
    assert err.value.type == "InputError" and "\n" not in err.value.message
