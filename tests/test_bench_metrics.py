"""Benchmark evaluation: heat-method geodesics, the map error protocol, summaries, the cache.

Synthetic meshes only (a flat unit square where geodesic = Euclidean); no data set needed.
"""
import numpy as np
import pytest

from engine.bench import geodesics
from engine.bench.geodesics import geodesic_matrix, heat_geodesic_rows, mesh_key
from engine.bench.metrics import SWAP_THRESHOLD, cumulative_curve, map_errors, summarize, validate_map
from engine.errors import InputError


def flat_grid(n: int, size: float = 1.0):
    """n x n vertex grid on [0, size]^2 (z = 0): (n*n, 3) float64, (2(n-1)^2, 3) int64.

    Cell (i, j) has faces i*(n-1)+j (lower: x-fraction >= y-fraction) and that + (n-1)^2.
    """
    xs = np.linspace(0.0, size, n)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    V = np.stack([X.ravel(), Y.ravel(), np.zeros(n * n)], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    F = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return V, F


def locate_on_grid(V, F, n, P, size=1.0):
    """Face and barycentric weights of 2D points P (on the grid square)."""
    h = size / (n - 1)
    i = np.minimum((P[:, 0] / h).astype(int), n - 2)
    j = np.minimum((P[:, 1] / h).astype(int), n - 2)
    lower = (P[:, 0] / h - i) >= (P[:, 1] / h - j)
    face = np.where(lower, i * (n - 1) + j, i * (n - 1) + j + (n - 1) ** 2)
    T = V[F[face]][:, :, :2]
    A = np.stack([T[:, 1] - T[:, 0], T[:, 2] - T[:, 0]], axis=2)
    uv = np.linalg.solve(A, (P[:, :2] - T[:, 0])[:, :, None])[:, :, 0]
    return face, np.stack([1 - uv.sum(1), uv[:, 0], uv[:, 1]], axis=1)


def identity_map(V, F):
    """Every vertex mapped to itself: a face containing it with a one-hot weight."""
    face = np.full(len(V), -1, np.int64)
    bary = np.zeros((len(V), 3))
    for k in range(3):
        face[F[:, k]] = np.arange(len(F))
    for v in range(len(V)):
        bary[v, list(F[face[v]]).index(v)] = 1.0
    return face, bary


@pytest.fixture(scope="module")
def grid31():
    V, F = flat_grid(31)
    return V, F, heat_geodesic_rows(V, F)


def test_heat_geodesics_on_flat_square_match_euclidean(grid31):
    V, F, D = grid31
    assert D.shape == (len(V), len(V)) and D.dtype == np.float32
    assert np.all(np.diag(D) == 0)
    E = np.linalg.norm(V[:, None] - V[None], axis=2)  # area 1: normalised = Euclidean
    far = E > 0.1
    rel = np.abs(D[far] - E[far]) / E[far]
    assert rel.mean() < 0.04  # the heat method is within a few percent
    assert np.percentile(rel, 95) < 0.10


def test_distances_are_divided_by_sqrt_area():
    V, F = flat_grid(11)
    d1 = heat_geodesic_rows(V, F, sources=[0, 60])
    d3 = heat_geodesic_rows(V * 3.0, F, sources=[0, 60])  # 9x the area, 3x the lengths
    np.testing.assert_allclose(d1, d3, rtol=1e-4, atol=1e-6)
    E = np.linalg.norm(V[[0, 60]][:, None] - V[None], axis=2)
    assert abs(d1[0, -1] - E[0, -1]) / E[0, -1] < 0.05  # corner to corner ~ sqrt(2)


def test_identity_map_has_zero_error(grid31):
    V, F, D = grid31
    face, bary = identity_map(V, F)
    gt = np.arange(len(V))
    err = map_errors(D.astype(np.float16), F, face, bary, gt, gt)
    assert err.shape == (len(V),)
    assert np.all(err == 0)


def test_shifted_map_error_equals_the_shift(grid31):
    V, F, D = grid31
    shift = 0.2
    P = V.copy()
    P[:, 0] = np.minimum(P[:, 0] + shift, 1.0)
    face, bary = locate_on_grid(V, F, 31, P)
    gt = np.arange(len(V))
    err = map_errors(D.astype(np.float16), F, face, bary, gt, gt)
    inside = V[:, 0] <= 1.0 - shift + 1e-9  # points that really moved by `shift`
    assert abs(err[inside].mean() - shift) < 0.02
    assert np.all(np.abs(err[inside] - shift) < 0.2 * shift)
    # points pushed against the border moved by less
    border = ~inside
    np.testing.assert_allclose(err[border], 1.0 - V[border, 0], atol=0.05)


def test_map_errors_matches_a_naive_loop(grid31):
    """Vectorised gather + barycentric interpolation == per-point reference with fresh solves."""
    V, F, D = grid31
    rng = np.random.default_rng(0)
    na = 40  # a smaller "shape A" whose vertices map anywhere on B
    face = rng.integers(0, len(F), na)
    bary = rng.dirichlet(np.ones(3), na)
    gt_a = rng.permutation(na)[:25]
    gt_b = rng.integers(0, len(V), 25)
    got = map_errors(D, F, face, bary, gt_a, gt_b)
    for k in range(25):
        row = heat_geodesic_rows(V, F, sources=[gt_b[k]])[0]
        a = gt_a[k]
        expected = sum(bary[a, j] * row[F[face[a], j]] for j in range(3))
        assert got[k] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_map_errors_gt_pairs_follow_rows():
    """gt_a[i] <-> gt_b[i]: permuting the rows together changes nothing, separately does."""
    V, F = flat_grid(9)
    D = heat_geodesic_rows(V, F)
    face, bary = identity_map(V, F)
    gt = np.arange(len(V))
    perm = np.random.default_rng(1).permutation(len(V))
    assert np.all(map_errors(D, F, face, bary, gt[perm], gt[perm]) == 0)
    assert map_errors(D, F, face, bary, gt, gt[perm]).mean() > 0.1


def test_bad_maps_raise_one_line_input_errors(grid31):
    V, F, D = grid31
    face, bary = identity_map(V, F)
    gt = np.arange(len(V))
    bad_face = face.copy()
    bad_face[3] = len(F)
    with pytest.raises(InputError, match="out of range"):
        map_errors(D, F, bad_face, bary, gt, gt)
    nan_bary = bary.copy()
    nan_bary[5, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        map_errors(D, F, face, nan_bary, gt, gt)
    with pytest.raises(InputError, match="shape"):
        validate_map(face[:-1], bary, len(V), len(F))
    with pytest.raises(InputError, match="target vertex index"):
        map_errors(D, F, face, bary, gt, gt + 1)
    with pytest.raises(InputError, match="same length"):
        map_errors(D, F, face, bary, gt, gt[:-1])


def test_landing_on_another_component_costs_the_largest_distance():
    Va, Fa = flat_grid(6)
    Vb = Va + np.array([5.0, 0, 0])
    V = np.concatenate([Va, Vb])
    F = np.concatenate([Fa, Fa + len(Va)])
    D = heat_geodesic_rows(V, F)
    assert np.isinf(D[0, len(Va)]) and np.isfinite(D[0, 1])
    face, bary = identity_map(V, F)
    # vertex 0's image is put on the other component, at the copy of vertex 0
    face[0], bary[0] = face[len(Va)], bary[len(Va)]
    err = map_errors(D, F, face, bary, np.arange(len(V)), np.arange(len(V)))
    assert np.isfinite(err).all()
    assert err[0] == pytest.approx(np.max(D[np.isfinite(D)]))
    assert np.all(err[1:] == 0)


def test_summary_numbers():
    a = np.array([0.0, 0.02, 0.04, 0.06])  # pair mean 0.03
    b = np.array([0.2, 0.2])  # pair mean 0.2: a gross failure
    s = summarize([a, b])
    assert s.mean == pytest.approx(0.52 / 6)
    assert s.median == pytest.approx(0.05)
    assert s.frac_under[0.05] == pytest.approx(3 / 6)
    assert s.frac_under[0.10] == pytest.approx(4 / 6)
    assert s.pair_means == pytest.approx([0.03, 0.2])
    assert s.swaps == 1 and SWAP_THRESHOLD == 0.10
    assert s.n_points == 6
    assert summarize([]) is None and summarize([np.zeros(0)]) is None


def test_cumulative_curve():
    e = np.array([0.0, 0.01, 0.05, 0.3])
    t, frac = cumulative_curve(e, max_error=0.25, steps=26)
    assert t[0] == 0 and t[-1] == pytest.approx(0.25)
    assert frac[0] == 0.25  # the exact zero counts at t = 0
    assert frac[1] == 0.5  # t = 0.01
    assert frac[5] == 0.75 and frac[-1] == 0.75  # 0.3 never enters
    assert np.all(np.diff(frac) >= 0)
    _, empty = cumulative_curve(np.zeros(0))
    assert np.all(empty == 0)


def test_geodesic_cache_round_trip(tmp_path, monkeypatch):
    V, F = flat_grid(8)
    D = geodesic_matrix(V, F, cache_dir=tmp_path)
    assert D.dtype == np.float16 and D.shape == (64, 64)
    files = list(tmp_path.glob("geodesic-*.npy"))
    assert len(files) == 1 and mesh_key(V, F) in files[0].name
    np.testing.assert_allclose(D, heat_geodesic_rows(V, F), atol=2e-3)

    calls = []
    real = geodesics.heat_geodesic_rows
    monkeypatch.setattr(geodesics, "heat_geodesic_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    D2 = geodesic_matrix(V, F, cache_dir=tmp_path)  # served from disk
    assert calls == [] and np.array_equal(np.asarray(D2), np.asarray(D))
    # another mesh content -> another entry
    geodesic_matrix(V * 2.0, F, cache_dir=tmp_path)
    assert calls == [1] and len(list(tmp_path.glob("geodesic-*.npy"))) == 2
    # a corrupt entry is recomputed and replaced
    files[0].write_bytes(b"not an npy file")
    D3 = geodesic_matrix(V, F, cache_dir=tmp_path)
    assert calls == [1, 1] and np.array_equal(np.asarray(D3), np.asarray(D))
    assert not list(tmp_path.glob(".geo-*"))  # no temporary files left


def test_geodesic_input_errors():
    V, F = flat_grid(4)
    with pytest.raises(InputError, match="out of range"):
        heat_geodesic_rows(V, F + 100)
    Vn = V.copy()
    Vn[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        heat_geodesic_rows(Vn, F)
    with pytest.raises(InputError, match="source vertex"):
        heat_geodesic_rows(V, F, sources=[len(V)])
