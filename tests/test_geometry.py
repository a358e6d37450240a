"""Geometry operators against references: gradient, cotan Laplacian, Poisson solve (+ gradcheck),
closest points, heat geodesics, spectral basis, rigid alignment."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from engine.geometry.closest import SurfaceQuery
from engine.geometry.geodesic import GeodesicSolver
from engine.geometry.operators import cotan_laplacian, gradient_operator, jacobians
from engine.geometry.poisson import PoissonSolver, poisson_solve
from engine.geometry.spectral import SpectralBasis
from engine.mesh import Mesh, prepare_mesh


def bumpy_sphere(subdiv=2, seed=0):
    s = trimesh.creation.icosphere(subdivisions=subdiv)
    rng = np.random.default_rng(seed)
    v = np.asarray(s.vertices) * [1.3, 0.9, 0.7]
    v = v * (1 + 0.05 * rng.standard_normal((len(v), 1)))
    return v, np.asarray(s.faces)


def test_gradient_is_exact_on_linear_functions():
    v, f = bumpy_sphere()
    G = gradient_operator(v, f)
    a = np.array([0.3, -1.2, 2.0])
    grad = (G @ (v @ a + 4.0)).reshape(-1, 3)
    n = Mesh(v, f).face_normals
    expected = a - (n @ a)[:, None] * n  # tangential part of a on every face
    np.testing.assert_allclose(grad, expected, atol=1e-10)
    # constants have zero gradient
    np.testing.assert_allclose(G @ np.ones(len(v)), 0, atol=1e-10)


def test_cotan_laplacian_matches_libigl():
    igl = pytest.importorskip("igl")
    v, f = bumpy_sphere()
    L = cotan_laplacian(v, f)
    ref = -igl.cotmatrix(v, f)  # igl's is negative semi-definite
    np.testing.assert_allclose(L.toarray(), ref.toarray(), atol=1e-10)
    np.testing.assert_allclose(L @ np.ones(len(v)), 0, atol=1e-10)


def _multi_component_mesh_with_sliver():
    a_v, a_f = bumpy_sphere(2, seed=1)
    b = trimesh.creation.icosphere(subdivisions=1)
    b_v = np.asarray(b.vertices) * 0.5 + [3.0, 0.5, -1.0]
    b_f = np.asarray(b.faces)
    # a near-degenerate sliver: pull one vertex of a face almost onto its opposite edge
    i0, i1, i2 = a_f[0]
    a_v = a_v.copy()
    a_v[i2] = 0.5 * (a_v[i0] + a_v[i1]) + 1e-5 * (a_v[i2] - 0.5 * (a_v[i0] + a_v[i1]))
    v = np.vstack([a_v, b_v])
    f = np.vstack([a_f, b_f + len(a_v)])
    return v, f


def test_poisson_reproduces_the_mesh_from_its_own_jacobians():
    v, f = _multi_component_mesh_with_sliver()
    assert Mesh(v, f).n_components == 2
    x = poisson_solve(v, f, jacobians(v, f))
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(x, v, atol=2e-5)  # 1e-9 mass regularisation + the sliver


def test_poisson_translations_move_components():
    v, f = _multi_component_mesh_with_sliver()
    solver = PoissonSolver(v, f)
    shift = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        x = solver.solve(solver.source_jacobians, shift).numpy()
    labels = solver.components.numpy()
    expected = v + shift.numpy()[labels]
    np.testing.assert_allclose(x, expected, atol=2e-5)


def test_poisson_solve_gradcheck():
    s = trimesh.creation.icosphere(subdivisions=0)  # 12 vertices, 20 faces
    v = np.asarray(s.vertices) * [1.0, 0.8, 0.6]
    solver = PoissonSolver(v, s.faces)
    gen = torch.Generator().manual_seed(0)
    J = (solver.source_jacobians + 0.1 * torch.randn(solver.source_jacobians.shape, generator=gen, dtype=torch.float64))
    J.requires_grad_(True)
    t = torch.zeros(solver.n_components, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda j, tt: solver.solve(j, tt), (J, t), eps=1e-6, atol=1e-6)


def test_one_poisson_factor_solves_from_many_threads_as_from_one():
    """Raced registrations share a source's factor and solve from worker threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    v, f = bumpy_sphere(3)
    solver = PoissonSolver(v, f)
    gen = torch.Generator().manual_seed(1)
    Js = [solver.source_jacobians + 0.2 * torch.randn(solver.source_jacobians.shape, generator=gen, dtype=torch.float64)
          for _ in range(8)]
    with torch.no_grad():
        alone = [solver.solve(J).numpy() for J in Js]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda J: [solver.solve(J).numpy() for _ in range(20)][-1], Js))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def _brute_force_distances(v, f, pts):
    """Distance from every point to every triangle, minimum over triangles: each point's closest
    point on each triangle is the best of the in-plane projection (when it falls inside) and the
    closest points on the three edge segments."""
    a, b, c = (v[f[:, k]][None] for k in range(3))  # (1, m, 3)
    p = pts[:, None, :]  # (n, 1, 3)

    def on_segment(s0, s1):
        d = s1 - s0
        t = np.clip(np.einsum("nmc,nmc->nm", p - s0, np.broadcast_to(d, (len(pts),) + d.shape[1:]))
                    / np.einsum("nmc,nmc->nm", d, d), 0.0, 1.0)
        return np.linalg.norm(p - (s0 + t[..., None] * d), axis=-1)

    best = np.minimum(np.minimum(on_segment(a, b), on_segment(b, c)), on_segment(c, a))
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    h = np.einsum("nmc,nmc->nm", p - a, np.broadcast_to(n, (len(pts),) + n.shape[1:]))
    q = p - h[..., None] * n  # projection onto each triangle's plane
    inside = np.ones(h.shape, bool)
    for s0, s1 in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("nmc,nmc->nm", np.cross(s1 - s0, q - s0), np.broadcast_to(n, q.shape)) >= 0
    best = np.where(inside, np.minimum(best, np.abs(h)), best)
    return best.min(axis=1)


def test_closest_point_matches_brute_force():
    v, f = bumpy_sphere(2, seed=3)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 3)) * 1.2
    face, bary, point, dist = SurfaceQuery(v, f).closest(pts)
    ref_dist = _brute_force_distances(v, f, pts)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-9)
    np.testing.assert_allclose(np.einsum("nk,nkc->nc", bary, v[f[face]]), point, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(point - pts, axis=1), dist, atol=1e-9)
    assert bary.min() >= -1e-12 and np.allclose(bary.sum(1), 1)


def test_heat_geodesics_on_a_flat_grid_match_euclidean():
    n = 41
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], axis=-1).reshape(-1, 4)
    f = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    center = idx[n // 2, n // 2]
    solver = GeodesicSolver(Mesh(v, f))
    assert solver.method == "heat"
    d = solver.distances(center)
    exact = np.linalg.norm(v - v[center], axis=1)
    far = exact > 0.1
    rel = np.abs(d[far] - exact[far]) / exact[far]
    assert rel.mean() < 0.03 and rel.max() < 0.1


def test_spectral_basis_is_mass_orthonormal():
    v, f = bumpy_sphere(2)
    basis = SpectralBasis(Mesh(v, f), k=20)
    gram = basis.evecs.T @ (basis.mass[:, None] * basis.evecs)
    np.testing.assert_allclose(gram, np.eye(basis.k), atol=1e-6)
    assert np.all(np.diff(basis.evals) >= -1e-9) and abs(basis.evals[0]) < 1e-6 and basis.evals[1] > 1e-3
    # projection of an eigenvector gives a unit coefficient vector
    np.testing.assert_allclose(basis.project(basis.evecs[:, 3]), np.eye(basis.k)[3], atol=1e-6)


@pytest.mark.parametrize("euler", [(120.0, 0.0, 0.0), (30.0, 120.0, -45.0)])
def test_rigid_align_recovers_rotation_and_100x_scale(euler):
    from engine.geometry.align import rigid_align
    from engine.samples import creature, icosphere

    q, f = icosphere(3)
    v = creature(q)  # no mirror symmetry (one horn on one side)
    R = Rotation.from_euler("zyx", euler, degrees=True).as_matrix()
    src = prepare_mesh(v, f, "src")
    tgt = prepare_mesh(100.0 * v @ R.T + [50.0, -30.0, 8.0], f, "tgt")
    T = rigid_align(src.mesh, tgt.mesh, n_samples=400)
    moved = T.apply(src.mesh.vertices)[src.orig_to_clean]  # back in the caller's vertex order
    want = tgt.mesh.vertices[tgt.orig_to_clean]
    assert np.linalg.norm(moved - want, axis=1).max() < 1e-3 * tgt.mesh.bbox_diagonal
    angle = np.degrees(np.arccos(np.clip((np.trace(T.rotation.T @ R) - 1) / 2, -1, 1)))
    assert angle < 0.5 and T.scale == pytest.approx(1.0, abs=1e-3)


def test_rigid_align_candidates_start_with_the_chosen_alignment_and_are_distinct():
    from engine.geometry.align import rigid_align, rigid_align_candidates
    from engine.samples import creature, icosphere

    q, f = icosphere(3)
    v = creature(q)
    R = Rotation.from_euler("zyx", (30.0, 120.0, -45.0), degrees=True).as_matrix()
    src = prepare_mesh(v, f, "src")
    tgt = prepare_mesh(v @ R.T, f, "tgt")
    cands = rigid_align_candidates(src.mesh, tgt.mesh, n_samples=400, min_separation_deg=60.0)
    first = rigid_align(src.mesh, tgt.mesh, n_samples=400)
    assert len(cands) >= 2
    np.testing.assert_allclose(cands[0].rotation, first.rotation, atol=1e-12)
    for i in range(len(cands)):
        for j in range(i):
            rel = cands[i].rotation @ cands[j].rotation.T
            assert np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))) > 60.0


@pytest.mark.parametrize("with_qdldl", [True, False])
def test_shifted_factor_solves_laplacian_plus_each_new_diagonal(monkeypatch, with_qdldl):
    """The fit's repeated systems: one analysis, then each new diagonal refactored; every solve
    matches a direct sparse solve of that system, with qdldl and without it (the CHOLMOD path)."""
    import builtins

    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    from engine.geometry import mesh_quality
    from engine.geometry.shifted_factor import ShiftedFactor

    if not with_qdldl:
        real_import = builtins.__import__

        def no_qdldl(name, *args, **kwargs):
            if name == "qdldl":
                raise ImportError("no qdldl here")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_qdldl)
    m = Mesh(*bumpy_sphere(3))
    A = mesh_quality.vertex_adjacency(m.edges, m.n_vertices)
    lap = (sp.diags(np.asarray(A.sum(axis=1)).ravel()) - A).tocsr()
    solver = ShiftedFactor(lap)
    assert solver.refactors == with_qdldl
    rng = np.random.default_rng(3)
    for scale in (0.3, 30.0, 3000.0):
        d = scale * rng.random(m.n_vertices) + 1e-6
        d[rng.random(m.n_vertices) < 0.2] = 1e-6  # released vertices: no data weight
        b = rng.normal(size=(m.n_vertices, 3))
        want = spsolve((lap + sp.diags(d)).tocsc(), b)
        got = solver.factor(d).solve(b)
        assert np.abs(got - want).max() <= 1e-8 * np.abs(want).max()
        assert np.allclose(solver.solve(b[:, 0]), want[:, 0], rtol=0, atol=1e-8 * np.abs(want).max())
    with pytest.raises(ValueError, match=r"diagonal needs shape"):
        solver.factor(np.ones(3))
    with pytest.raises(RuntimeError, match="factor"):
        ShiftedFactor(lap).solve(b)
