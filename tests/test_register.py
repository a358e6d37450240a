"""Registration: polar factor, NJF deformation recovering known deformations, exclusion, landmarks."""
import numpy as np
import pytest
import torch
import trimesh

from engine.geometry.closest import SurfaceQuery
from engine.mesh import Mesh, prepare_mesh
from engine.register.njf import RegistrationConfig, polar_rotation, register


def test_polar_rotation_matches_svd_and_is_a_rotation():
    """The closest rotation: U V^T where det A > 0, with the smallest singular direction flipped
    where A is a reflection (an inverted face)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(500, 3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    R = polar_rotation(A)
    U, _, Vh = torch.linalg.svd(A)
    d = torch.sign(torch.linalg.det(U @ Vh))
    assert (d < 0).sum() > 5 and (d > 0).sum() > 300  # both kinds are tested
    Vh = Vh.clone()
    Vh[:, 2] *= d[:, None]
    assert torch.allclose(R, U @ Vh, atol=1e-9)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-10)
    assert torch.allclose(torch.linalg.det(R), torch.ones(500, dtype=torch.float64), atol=1e-10)


def _sphere(sub=3):
    m = trimesh.creation.icosphere(sub)
    return prepare_mesh(m.vertices, m.faces, "sphere").mesh


def test_registration_fits_an_anisotropic_scaling_with_chamfer_alone():
    src = _sphere(3)
    tgt_v = src.vertices * np.array([1.3, 0.8, 1.0])
    tgt = Mesh(tgt_v, src.faces)
    query = SurfaceQuery(tgt.vertices, tgt.faces)
    before = query.closest(src.vertices)[3].mean()
    res = register(src, tgt, None, RegistrationConfig(steps=150, lr=0.02))
    assert np.isfinite(res.vertices).all()
    # Chamfer alone fits the surface (vertices may slide along it)
    after = query.closest(res.vertices)[3].mean()
    assert after < 0.25 * before


def test_excluded_vertices_get_no_data_term_and_landmarks_pull():
    from engine.register.njf import Registration

    src = _sphere(2)
    tgt = Mesh(src.vertices + np.array([0.3, 0.0, 0.0]), src.faces)
    # everything excluded except a few vertices: the rest follows only through the regularisers
    exclude = np.ones(src.n_vertices, bool)
    exclude[:4] = False
    res = register(src, tgt, None, RegistrationConfig(steps=60, w_chamfer=1.0), exclude_vertices=exclude)
    assert np.isfinite(res.vertices).all()
    # exactly the excluded vertices lose the data term: a one-vertex-wide band is not eroded away
    band = np.zeros(src.n_vertices, bool)
    band[np.abs(src.vertices[:, 1]) < 0.05] = True
    run = Registration(src, tgt, None, RegistrationConfig(steps=1), exclude_vertices=band)
    assert np.array_equal(run.data_mask.numpy() == 0, band)
    # landmarks alone move the shape onto the translated copy
    lm = np.stack([np.arange(0, src.n_vertices, 7), np.arange(0, src.n_vertices, 7)], axis=1)
    res2 = register(src, tgt, None, RegistrationConfig(steps=120, w_chamfer=0.0, w_normal=0.0), landmarks=lm)
    err = np.linalg.norm(res2.vertices - tgt.vertices, axis=1).mean()
    assert err < 0.05


def test_registration_handles_several_components():
    a = trimesh.creation.icosphere(2)
    b = trimesh.creation.icosphere(2)
    b.vertices += [3.0, 0, 0]
    v = np.vstack([a.vertices, b.vertices])
    f = np.vstack([a.faces, b.faces + len(a.vertices)])
    src = prepare_mesh(v, f, "two").mesh
    tgt = Mesh(src.vertices + np.array([0.0, 0.1, 0.0]), src.faces)
    res = register(src, tgt, None, RegistrationConfig(steps=100))
    assert np.isfinite(res.vertices).all()
    assert np.linalg.norm(res.vertices - tgt.vertices, axis=1).mean() < 0.03


def test_registration_advanced_in_pieces_equals_one_run():
    """A race stops registrations part-way and finishes one: the split must not change the result."""
    from engine.correspond.vertex_nn import VertexFeatureGuidance
    from engine.register.njf import Registration

    src = _sphere(2)
    tgt = Mesh(src.vertices * np.array([1.2, 0.9, 1.0]), src.faces)
    cfg = RegistrationConfig(steps=40, update_every=10)

    def guidance():
        g = VertexFeatureGuidance(src.vertices, tgt.vertices, w_pos=(0.5, 2.0))
        g.prepare(src, tgt)
        return g

    whole = register(src, tgt, guidance(), cfg).vertices
    run = Registration(src, tgt, guidance(), cfg)
    for until in (7, 10, 23, 40, 55):  # past the end: stops at cfg.steps
        run.advance(until)
    assert run.step == 40
    np.testing.assert_allclose(run.result().vertices, whole, atol=1e-12)


def test_registration_leaves_the_global_torch_seed_alone():
    import torch

    from engine.register.njf import Registration

    src = _sphere(1)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    Registration(src, src, None, RegistrationConfig(steps=2, seed=7)).advance(2)
    assert torch.equal(torch.rand(3), expected)
