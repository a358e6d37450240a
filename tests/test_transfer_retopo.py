"""Retopology finish: hugging the target without folds, rigid regions carried with their surroundings."""
import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from engine.errors import InputError
from engine.transfer import synthetic
from engine.transfer.retopo import fit_retopology, similarity_transform


@pytest.fixture(scope="module")
def spheres():
    t = trimesh.creation.icosphere(3)
    s = trimesh.creation.icosphere(2)
    return np.asarray(s.vertices), np.asarray(s.faces), np.asarray(t.vertices), np.asarray(t.faces)


def test_hug_puts_every_vertex_on_the_target(spheres):
    sv, sf, tv, tf = spheres
    rng = np.random.default_rng(0)
    fitted = sv * (1 + 0.05 * rng.standard_normal((len(sv), 1)))
    res = fit_retopology(0.5 * sv, sf, tv, tf, fitted)
    assert res.on_surface.all()
    assert res.distance.max() < 1e-6
    assert len(res.flipped_faces) == 0
    no_hug = fit_retopology(0.5 * sv, sf, tv, tf, fitted, hug=False)
    np.testing.assert_allclose(no_hug.vertices, fitted, atol=1e-6)


def test_hug_never_folds_a_triangle(spheres):
    _, _, tv, tf = spheres
    gv, gf = synthetic.grid(6, 6)
    fitted = (gv - [0.5, 0.5, 0.0]) * 0.3  # a small flat patch inside the sphere: projections fan out and would fold
    res = fit_retopology(gv, gf, tv, tf, fitted)
    x = res.vertices.astype(np.float64)
    cr = np.cross(x[gf[:, 1]] - x[gf[:, 0]], x[gf[:, 2]] - x[gf[:, 0]])
    assert (cr[:, 2] > 0).all()  # same orientation as the fitted patch everywhere
    assert 0 < res.on_surface.sum() < len(gv)


def test_rigid_region_follows_its_surroundings(spheres):
    sv, sf, _, _ = spheres
    R = Rotation.from_rotvec([0.2, 0.5, 0.1]).as_matrix()
    target = 1.7 * sv @ R.T + [1.0, 0.0, 0.0]
    mask = sv[:, 2] > 0.7
    fitted = target.copy()
    fitted[mask] += 0.3  # the match got the region wrong (a missing eye on the scan, say)
    res = fit_retopology(sv, sf, target, sf, fitted, keep_rigid_mask=mask)
    np.testing.assert_allclose(res.vertices, target, atol=1e-5)


def test_rigid_separate_component_uses_nearest_surroundings():
    head_v, head_f = np.asarray(trimesh.creation.icosphere(2).vertices), np.asarray(trimesh.creation.icosphere(2).faces)
    eye = trimesh.creation.icosphere(1)
    eye_v = np.asarray(eye.vertices) * 0.1 + [0.0, 0.0, 0.85]
    sv = np.vstack([head_v, eye_v])
    sf = np.vstack([head_f, np.asarray(eye.faces) + len(head_v)])
    mask = np.r_[np.zeros(len(head_v), bool), np.ones(len(eye_v), bool)]
    R = Rotation.from_rotvec([0.3, -0.2, 0.4]).as_matrix()
    target = sv @ R.T * 1.2 + [0.0, 1.0, 0.0]
    fitted = target.copy()
    fitted[mask] = target[mask].mean(0)  # collapsed eye
    res = fit_retopology(sv, sf, target[: len(head_v)], head_f, fitted, keep_rigid_mask=mask)
    np.testing.assert_allclose(res.vertices[mask], target[mask], atol=1e-5)


def test_similarity_transform_recovers_scale_rotation_translation():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 3))
    R = Rotation.from_rotvec([1.0, 0.2, -0.3]).as_matrix()
    Y = 2.5 * X @ R.T + [1, 2, 3]
    s, R2, t = similarity_transform(X, Y)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(R2, R, atol=1e-10)
    np.testing.assert_allclose(t, [1, 2, 3], atol=1e-10)


def test_retopo_input_errors(spheres):
    sv, sf, tv, tf = spheres
    with pytest.raises(InputError, match="fitted shape"):
        fit_retopology(sv, sf, tv, tf, sv[:-1])
    with pytest.raises(InputError, match="keep_rigid_mask"):
        fit_retopology(sv, sf, tv, tf, sv, keep_rigid_mask=np.ones(3, bool))
    with pytest.raises(InputError, match="every vertex"):
        fit_retopology(sv, sf, tv, tf, sv, keep_rigid_mask=np.ones(len(sv), bool))
