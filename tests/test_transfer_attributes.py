"""Attribute transfer: identity and affine maps are exact, skin weights stay normalised, labels vote,
low-confidence regions are inpainted harmonically."""
import numpy as np
import pytest

from engine.errors import InputError
from engine.geometry.closest import SurfaceQuery
from engine.transfer import synthetic
from engine.transfer.attributes import (transfer_face_labels, transfer_skin_weights, transfer_vertex_attributes,
                                        transfer_vertex_labels)
from engine.transfer.inpaint import harmonic_fill


def plane_pair():
    sv, sf = synthetic.grid(6, 6)
    tv, tf = synthetic.grid(9, 8, jitter=0.3, seed=3)
    face, bary, _, _ = SurfaceQuery(sv, sf).closest(tv)
    return sv, sf, tv, tf, face, bary


def test_identity_map_returns_values_exactly():
    v, f, _ = synthetic.cylinder(10, 3)
    face, bary = synthetic.identity_map(f, len(v))
    vals = np.random.default_rng(0).random((len(v), 4))
    np.testing.assert_array_equal(transfer_vertex_attributes(vals, f, face, bary), vals)
    ints = np.arange(len(v), dtype=np.int16)
    out = transfer_vertex_attributes(ints, f, face, bary, mode="nearest")
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, ints)


def test_affine_attributes_follow_exactly():
    sv, sf, tv, tf, face, bary = plane_pair()
    M = np.array([[1.0, -2.0, 0.0], [0.5, 0.25, 0.0]])
    vals = sv @ M.T + [3.0, -1.0]  # a vector field affine in the position
    out = transfer_vertex_attributes(vals, sf, face, bary)
    np.testing.assert_allclose(out, tv @ M.T + [3.0, -1.0], atol=1e-12)


def test_nearest_mode_picks_the_heaviest_corner():
    sf = np.array([[0, 1, 2]])
    out = transfer_vertex_attributes(np.array([10, 20, 30]), sf, np.array([0, 0]), np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]), mode="nearest")
    np.testing.assert_array_equal(out, [20, 30])


def test_skin_weights_stay_normalised_and_bad_sums_are_refused():
    sv, sf, tv, tf, face, bary = plane_pair()
    rng = np.random.default_rng(1)
    w = rng.random((len(sv), 5))
    w[w < 0.5] = 0
    w[np.arange(len(sv)), rng.integers(0, 5, len(sv))] += 0.1
    w /= w.sum(1, keepdims=True)
    out = transfer_skin_weights(w, sf, face, bary)
    assert out.shape == (len(tv), 5)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)
    assert (out >= 0).all()
    with pytest.raises(InputError, match="do not sum to 1"):
        transfer_skin_weights(w * 1.5, sf, face, bary)
    again = transfer_skin_weights(w * 1.5, sf, face, bary, renormalize_input=True)
    np.testing.assert_allclose(again, out, atol=1e-12)
    # unweighted vertices (all zero) are allowed and stay zero where nothing weighted is near
    w0 = w.copy()
    w0[:] = 0
    np.testing.assert_array_equal(transfer_skin_weights(w0, sf, face, bary), 0)


def test_vertex_labels_vote_by_barycentric_weight():
    sf = np.array([[0, 1, 2]])
    labels = np.array([4, 7, 7])
    out = transfer_vertex_labels(labels, sf, np.array([0, 0]), np.array([[0.6, 0.2, 0.2], [0.4, 0.35, 0.25]]))
    np.testing.assert_array_equal(out, [4, 7])  # 0.6 > 0.4 for label 4; 0.6 > 0.4 for label 7


def test_face_labels_follow_the_majority_of_corners():
    sv, sf, tv, tf, face, bary = plane_pair()
    # label source triangles by the half of the square they lie in
    src_lab = (sv[sf].mean(1)[:, 0] > 0.5).astype(np.int32)
    out = transfer_face_labels(src_lab, sf, tf, face, bary)
    cx = tv[tf].mean(1)[:, 0]
    far = np.abs(cx - 0.5) > 0.2
    np.testing.assert_array_equal(out[far], (cx[far] > 0.5).astype(np.int32))
    face_id, bary_id = synthetic.identity_map(sf, len(sv))
    np.testing.assert_array_equal(transfer_face_labels(src_lab, sf, sf, face_id, bary_id), src_lab)


def test_harmonic_fill_reproduces_a_linear_function_on_a_flat_mesh():
    v, f = synthetic.grid(8, 8, jitter=0.2, seed=4)
    truth = 2.0 * v[:, 0] - 3.0 * v[:, 1] + 1.0
    known = (v[:, 0] < 0.2) | (v[:, 0] > 0.8) | (v[:, 1] < 0.2) | (v[:, 1] > 0.8)
    vals = np.where(known, truth, 100.0)
    out = harmonic_fill(v, f, vals, known)
    np.testing.assert_allclose(out, truth, atol=1e-6)
    np.testing.assert_array_equal(out[known], truth[known])


def test_low_confidence_target_vertices_are_inpainted_from_surroundings():
    sv, sf, tv, tf, face, bary = plane_pair()
    vals = sv[:, 0] + sv[:, 1]
    wrong = vals.copy()
    bad_src = np.linalg.norm(sv[:, :2] - 0.5, axis=1) < 0.2
    wrong[bad_src] = 50.0  # garbage where the match is unsure
    conf = np.where(bad_src, 0.0, 1.0)
    out = transfer_vertex_attributes(wrong, sf, face, bary, confidence=conf, fill_below=1 - 1e-9,
                                     tgt_vertices=tv, tgt_faces=tf)
    np.testing.assert_allclose(out, tv[:, 0] + tv[:, 1], atol=1e-6)
    plain = transfer_vertex_attributes(wrong, sf, face, bary)
    assert np.abs(plain - (tv[:, 0] + tv[:, 1])).max() > 10  # without the fill, the garbage shows


def test_attribute_input_errors():
    sv, sf, tv, tf, face, bary = plane_pair()
    vals = np.zeros(len(sv))
    with pytest.raises(InputError, match="rows"):
        transfer_vertex_attributes(vals[:-3], sf, face, bary)
    with pytest.raises(InputError, match="rows"):
        transfer_vertex_attributes(vals, sf, face, bary, n_src_vertices=len(sv) + 1)
    with pytest.raises(InputError, match="mode"):
        transfer_vertex_attributes(vals, sf, face, bary, mode="cubic")
    with pytest.raises(InputError, match="NaN"):
        transfer_vertex_attributes(np.full(len(sv), np.nan), sf, face, bary)
    with pytest.raises(InputError, match="target mesh"):
        transfer_vertex_attributes(vals, sf, face, bary, confidence=np.ones(len(sv)), fill_below=0.5)
    with pytest.raises(InputError, match="out of range"):
        transfer_vertex_attributes(vals, sf, face + len(sf), bary)
    with pytest.raises(InputError, match="one label per source triangle"):
        transfer_face_labels(np.zeros(3, int), sf, tf, face, bary)
