"""Morphs in Jacobian space: a bending cylinder keeps its length; ends and rigid motions are exact."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engine.errors import InputError
from engine.transfer import synthetic
from engine.transfer.morph import morph_sequence, polar

N_AROUND, N_ALONG, LENGTH = 12, 16, 4.0


def axis_length(x):
    rings = x.reshape(N_AROUND, N_ALONG + 1, 3).mean(axis=0)
    return np.linalg.norm(np.diff(rings, axis=0), axis=1).sum()


@pytest.fixture(scope="module")
def bent():
    v, f, _ = synthetic.cylinder(N_AROUND, N_ALONG, radius=0.3, length=LENGTH)
    return v, f, synthetic.bent_cylinder(v, LENGTH, np.pi)


def test_bent_cylinder_keeps_its_length_where_a_linear_blend_shrinks(bent):
    v, f, fit = bent
    ref = axis_length(v)
    jac = morph_sequence(v, f, fit, 3, method="jacobian")
    lin = morph_sequence(v, f, fit, 3, method="linear")
    assert abs(axis_length(jac[1]) / ref - 1) < 0.01
    assert axis_length(lin[1]) / ref < 0.8
    # half-way means half the bend: the end tangent turns by about 90 degrees
    rings = jac[1].reshape(N_AROUND, N_ALONG + 1, 3).mean(axis=0)
    t0, t1 = rings[1] - rings[0], rings[-1] - rings[-2]
    angle = np.degrees(np.arccos(t0 @ t1 / np.linalg.norm(t0) / np.linalg.norm(t1)))
    assert 80 < angle < 100


def test_ends_are_exact_and_output_shape(bent):
    v, f, fit = bent
    frames = morph_sequence(v, f, fit, 4)
    assert frames.shape == (4, len(v), 3) and frames.dtype == np.float32
    np.testing.assert_allclose(frames[0], v, atol=1e-6)
    np.testing.assert_allclose(frames[-1], fit, atol=1e-6)


def test_rigid_motion_morphs_through_rigid_shapes():
    v, f, _ = synthetic.cylinder(8, 4, radius=0.5, length=2.0)
    R = Rotation.from_rotvec([0.4, 1.9, -0.6]).as_matrix()
    fit = v @ R.T + [1.0, -2.0, 0.5]
    frames = morph_sequence(v, f, fit, 5)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    rest = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    for k, t in enumerate(np.linspace(0, 1, 5)):
        x = frames[k]
        np.testing.assert_allclose(np.linalg.norm(x[e[:, 0]] - x[e[:, 1]], axis=1), rest, atol=1e-5)
        # the centroid moves linearly
        np.testing.assert_allclose(x.mean(0), (1 - t) * v.mean(0) + t * fit.mean(0), atol=1e-5)


def test_polar_decomposition():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 3, 3))
    R, S = polar(A)
    np.testing.assert_allclose(R @ S, A, atol=1e-10)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-10)
    np.testing.assert_allclose(S, np.swapaxes(S, 1, 2), atol=1e-10)


def test_morph_input_errors(bent):
    v, f, fit = bent
    with pytest.raises(InputError, match="at least 2"):
        morph_sequence(v, f, fit, 1)
    with pytest.raises(InputError, match="vertices"):
        morph_sequence(v, f, fit[:-1], 3)
    with pytest.raises(InputError, match="method"):
        morph_sequence(v, f, fit, 3, method="spline")
    with pytest.raises(InputError, match="NaN"):
        morph_sequence(v, f, np.full_like(fit, np.nan), 3)
