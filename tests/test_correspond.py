"""Spectral correspondence pieces: functional maps, ZoomOut, filters, guidance, map selection."""
import numpy as np
import pytest
import trimesh

from engine.correspond.filters import bicyclic_consistent, cycle_consistent
from engine.correspond.functional_map import fit_functional_map, nearest_rows, nearest_rows_both_ways, zoomout
from engine.correspond.selection import MapScorer, farthest_point_sample
from engine.correspond.vertex_nn import VertexFeatureGuidance
from engine.features.geometric import geometric_descriptors, wks
from engine.geometry.spectral import SpectralBasis
from engine.mesh import Mesh, prepare_mesh
from engine.geometry.main_part import SpectralPart


def _creature():
    """A non-symmetric blob: a sphere with three bumps of different sizes."""
    m = trimesh.creation.icosphere(3)
    v = m.vertices.copy()
    for d, h in (([1, 0, 0], 0.6), ([0, 1, 0], 0.35), ([0, 0.6, 0.8], 0.2)):
        d = np.asarray(d, float) / np.linalg.norm(d)
        v += h * np.exp(-8 * np.linalg.norm(v - d, axis=1) ** 2)[:, None] * v
    return prepare_mesh(v, m.faces, "creature").mesh


def test_nearest_rows_matches_brute_force():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(300, 40)), rng.normal(size=(200, 40))
    ref = np.argmin(((q[:, None] - p[None]) ** 2).sum(-1), axis=1)
    assert np.array_equal(nearest_rows(q, p, chunk=64), ref)


def test_nearest_rows_both_ways_equals_two_one_way_searches():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 40)), rng.normal(size=(250, 40))
    a2b, b2a = nearest_rows_both_ways(a, b, chunk=64)  # several chunks: the running minimum over them
    assert np.array_equal(a2b, np.argmin(((a[:, None] - b[None]) ** 2).sum(-1), axis=1))
    assert np.array_equal(b2a, np.argmin(((b[:, None] - a[None]) ** 2).sum(-1), axis=1))


def test_nearest_rows_from_a_gram_matrix_equal_those_of_the_joined_features(monkeypatch):
    """The registration's feature guidance keeps its features' Gram matrix and adds the moving
    positions' part at each update: the same maps as the joined [feature, w * position] rows
    (brute force), and as the blocked products that larger pairs take."""
    import torch

    from engine.correspond import vertex_nn
    from engine.correspond.functional_map import nearest_rows_both_ways_gram
    from engine.mesh import Mesh

    rng = np.random.default_rng(2)
    fa, fb = rng.normal(size=(300, 20)), rng.normal(size=(250, 20))
    xa, xb = rng.normal(size=(300, 3)), rng.normal(size=(250, 3))
    w = 1.7
    ja, jb = np.concatenate([fa, w * xa], 1), np.concatenate([fb, w * xb], 1)
    d = ((ja[:, None] - jb[None]) ** 2).sum(-1)
    Fa, Fb = torch.tensor(fa, dtype=torch.float32), torch.tensor(fb, dtype=torch.float32)
    a2b, b2a = nearest_rows_both_ways_gram(Fa @ Fb.T, (Fa * Fa).sum(1), (Fb * Fb).sum(1), xa,
                                           torch.tensor(xb, dtype=torch.float32), w * w, chunk=64)
    assert np.array_equal(a2b, d.argmin(axis=1)) and np.array_equal(b2a, d.argmin(axis=0))
    guidance = vertex_nn.VertexFeatureGuidance(fa, fb, w_pos=(w, w))
    guidance.prepare(Mesh(xa, np.array([[0, 1, 2]])), Mesh(xb, np.array([[0, 1, 2]])))
    with_gram = guidance.current_maps(xa, 0.5)
    monkeypatch.setattr(vertex_nn, "GRAM_MAX_ENTRIES", 0)
    blocked = guidance.current_maps(xa, 0.5)
    for got in (with_gram, blocked):
        assert np.array_equal(got[0], a2b) and np.array_equal(got[1], b2a)


def test_descriptors_from_a_larger_basis_equal_those_of_their_own_basis():
    """The registration hands its eigenpairs (any count >= 100) to the part matcher: the
    descriptors must be those the part matcher would compute from 100 eigenpairs itself."""
    mesh = _creature()
    own = geometric_descriptors(mesh)
    shared = geometric_descriptors(mesh, SpectralBasis(mesh, k=140))
    assert shared.shape == own.shape and shared.dtype == np.float32
    np.testing.assert_allclose(shared, own, atol=1e-4)


def test_zoomout_recovers_the_identity_on_a_permuted_copy():
    mesh = _creature()
    perm = np.random.default_rng(1).permutation(mesh.n_vertices)
    inv = np.argsort(perm)
    other = Mesh(mesh.vertices[perm], inv[mesh.faces])
    bs, bt = SpectralBasis(mesh, 40), SpectralBasis(other, 40)
    ds, dt = wks(bs, 32), wks(bt, 32)
    C0 = fit_functional_map(bs, bt, np.c_[ds, mesh.vertices], np.c_[dt, other.vertices], k=15)
    t2s, C = zoomout(bs, bt, None, 15, 40, 5, mesh.vertices, other.vertices, 0.3, C0=C0)
    # target vertex i is source vertex perm[i]
    assert np.mean(t2s == perm) > 0.95
    # the functional map is close to a signed permutation/rotation: near-orthogonal
    assert np.allclose(C.T @ C, np.eye(C.shape[0]), atol=0.35)


def test_cycle_and_bicyclic_filters_keep_consistent_and_drop_inconsistent_matches():
    pts = np.random.default_rng(2).normal(size=(50, 3))
    s2t = np.arange(50)
    t2s = np.arange(50).copy()
    t2s[10] = 40  # one broken round trip
    ok = cycle_consistent(s2t, t2s, pts, tau=1e-6)
    assert ok.sum() == 49 and not ok[10]
    ok2 = bicyclic_consistent(s2t, t2s, pts, pts, 1e-6, 1e-6)
    assert not ok2[10] and ok2.sum() == 49


def test_vertex_feature_guidance_pulls_towards_matching_features():
    import torch

    mesh = _creature()
    feats = geometric_descriptors(mesh)
    target = Mesh(mesh.vertices + np.array([0.2, 0, 0]), mesh.faces)
    g = VertexFeatureGuidance(feats, feats, w_pos=(0.0, 0.0), tau=0.05)
    g.prepare(mesh, target)
    g.update(mesh.vertices, 0, 0.0)
    idx, pts, w = g.matches()
    assert len(idx) > 0.5 * mesh.n_vertices
    x = torch.tensor(mesh.vertices, requires_grad=True)
    loss = g.loss(x)
    loss.backward()
    # the gradient points from the source towards the (translated) target
    assert loss.item() > 0 and x.grad[idx, 0].mean() < 0


def test_map_scorer_prefers_the_true_map_over_a_shuffled_and_a_displaced_one():
    mesh = _creature()
    scorer = MapScorer(mesh, mesh, n_samples=24)
    ident = np.arange(mesh.n_vertices)
    shuffled = np.random.default_rng(3).permutation(mesh.n_vertices)
    assert scorer.score(ident) < 1e-9
    assert scorer.score(shuffled) > 0.3
    fps = farthest_point_sample(mesh.vertices, 10)
    assert len(np.unique(fps)) == 10


def test_spectral_part_uses_the_largest_component_and_extends_values():
    a = trimesh.creation.icosphere(3)
    b = trimesh.creation.icosphere(1)
    b.vertices = b.vertices * 0.2 + [2.0, 0, 0]
    v = np.vstack([a.vertices, b.vertices])
    f = np.vstack([a.faces, b.faces + len(a.vertices)])
    mesh = prepare_mesh(v, f, "two").mesh
    part = SpectralPart(mesh)
    assert part.mesh.n_vertices == len(a.vertices)
    vals = np.arange(part.mesh.n_vertices, dtype=float)
    ext = part.extend(vals)
    assert ext.shape == (mesh.n_vertices,)
    np.testing.assert_array_equal(part.restrict(ext), vals)


def test_fit_scorer_ranks_a_left_right_mirror_below_the_right_map():
    """On a mirror-symmetric shape the mirror map is an isometry that keeps every descriptor, so
    distortion and WKS mismatch cannot tell it from the right map: the orientation term must (the
    whole turned share, so a half turned by a one-sided mirror counts too), and it must leave
    the right map's score as the first two terms give it."""
    from engine.correspond.fit_score import FitScorer, turned_share
    from engine.pair_context import MeshContext
    from engine.samples import icosphere
    from scipy.spatial import cKDTree

    v, f = icosphere(3)
    v = v * [1.0, 1.6, 0.7]
    v[:, 1] += 0.4 * np.clip(v[:, 2], 0, None) ** 2  # no symmetry but the x mirror
    mesh = Mesh(v, f)
    dist, mirror = cKDTree(v).query(v * [-1.0, 1.0, 1.0])
    assert dist.max() < 1e-9 and (mirror != np.arange(len(v))).sum() > len(v) // 2
    ctx = MeshContext(mesh, 30)
    scorer = FitScorer(ctx, ctx)
    right = np.arange(len(v))
    assert turned_share(mesh, mesh, right) == 0.0
    assert turned_share(mesh, mesh, mirror) > 0.95
    right_score, right_distortion = scorer.score(right)
    mirror_score, mirror_distortion = scorer.score(mirror)
    assert mirror_distortion == pytest.approx(right_distortion, abs=0.02)  # blind to it
    wks_right = float((scorer.w_area * np.linalg.norm(ctx.wks - ctx.wks[right], axis=1)).sum())
    assert right_score == pytest.approx(right_distortion + wks_right)
    assert mirror_score > right_score + 0.8
    # one side mirrored onto the other (a leg on its counterpart): its share counts in full
    side = np.where(v[:, 0] > 0, mirror, right)
    share = turned_share(mesh, mesh, side)
    assert 0.3 < share < 0.7
    side_score, side_distortion = scorer.score(side)
    wks_side = float((scorer.w_area * np.linalg.norm(ctx.wks - ctx.wks[side], axis=1)).sum())
    assert side_score == pytest.approx(side_distortion + wks_side + share)
