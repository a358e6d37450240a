"""The fitted source (engine.register.surface_fit) and the mesh-quality measures it is judged by
(engine.geometry.mesh_quality): flips, folds, holes, excluded regions."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from engine.geometry.closest import SurfaceQuery
from engine.geometry.mesh_quality import OrientationCheck, edge_stretch, fit_quality
from engine.register.surface_fit import fit_surface


def _grid(n: int, lo: float, hi: float):
    xs = np.linspace(lo, hi, n)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    v = np.stack([X.ravel(), Y.ravel(), np.zeros(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    return v, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _projected(vertices, tv, tf):
    return SurfaceQuery(tv, tf).closest(vertices)[2]


def test_orientation_check_ignores_rigid_motion_and_bending_and_finds_a_turned_triangle():
    s = trimesh.creation.icosphere(subdivisions=2)
    v, f = s.vertices, s.faces
    check = OrientationCheck(v, f)
    R = trimesh.transformations.rotation_matrix(2.0, [1, 2, 3])[:3, :3]
    moved = 3.0 * v @ R.T + 5.0
    assert not check.flipped(moved).any() and len(check.new_folds(moved)) == 0
    # a smooth bend (a twist about the z axis growing with height) is no flip
    ang = 1.2 * v[:, 2]
    bent = np.stack([np.cos(ang) * v[:, 0] - np.sin(ang) * v[:, 1], np.sin(ang) * v[:, 0] + np.cos(ang) * v[:, 1], v[:, 2]], 1)
    assert not check.flipped(bent).any()
    # one corner moved across the opposite edge turns the triangle over (and only triangles at it)
    a, b, c = f[0]
    turned = v.copy()
    turned[a] = v[b] + v[c] - v[a]
    flips = check.flipped(turned)
    assert flips[0] and set(np.nonzero(flips)[0]) <= set(np.nonzero((f == a).any(axis=1))[0])
    assert len(check.new_folds(turned)) > 0


def test_the_flip_test_of_some_triangles_is_the_whole_tests_answer_for_them():
    """The surface fit's guarded steps re-test only the triangles near the vertices they moved."""
    s = trimesh.creation.icosphere(subdivisions=3)
    check = OrientationCheck(s.vertices, s.faces)
    moved = s.vertices + 0.15 * np.random.default_rng(2).normal(size=s.vertices.shape)
    full = check.flipped(moved)
    assert 0 < full.sum() < len(full)
    some = np.r_[np.nonzero(full)[0][:5], np.arange(0, len(full), 7)]
    np.testing.assert_array_equal(check.flipped(moved, some), full[some])


def _sphere_moved(seed: int, count: int, scale: float):
    """An icosphere, a noisy shape of it and that shape with ``count`` vertices moved by ``scale``:
    (sphere, before, moved mask, after)."""
    s = trimesh.creation.icosphere(subdivisions=3)
    rng = np.random.default_rng(seed)
    before = s.vertices + 0.05 * rng.normal(size=s.vertices.shape)
    moved = np.zeros(len(before), bool)
    moved[rng.choice(len(before), count, replace=False)] = True
    return s, before, moved, before + scale * moved[:, None] * rng.normal(size=before.shape)


def test_the_flip_test_after_moving_some_vertices_is_the_whole_tests_answer():
    """Re-testing only the triangles near the moved vertices gives the whole test's answer."""
    s, before, moved, after = _sphere_moved(5, 12, 0.4)
    check = OrientationCheck(s.vertices, s.faces)
    assert (check.flipped(after) != check.flipped(before)).any()
    np.testing.assert_array_equal(check.flipped_after_moving(check.flipped(before), after, moved), check.flipped(after))


def test_the_fits_checks_after_moving_some_vertices_are_the_whole_checks():
    """The surface fit's per-face checks (flips, new folds, areas) redone only near the moved
    vertices equal the checks of the whole shape, bit for bit, and so do the bad triangles;
    the fold test on a subset of pairs is the whole test's answer there."""
    from engine.register.surface_fit import SurfaceFitConfig, SurfaceFitter

    s, before, moved, after = _sphere_moved(6, 20, 0.5)
    fitter = SurfaceFitter(s.vertices, s.faces)
    whole = fitter._checks(after)
    assert whole.folds.any() and whole.flipped.any()  # the move turned some over and folded some
    step = fitter._checks_after_moving(fitter._checks(before), after, moved)
    for name in ("flipped", "folds", "area"):
        np.testing.assert_array_equal(getattr(step, name), getattr(whole, name))
    cfg = SurfaceFitConfig()
    np.testing.assert_array_equal(fitter._bad(step, cfg), fitter._bad_faces(after, cfg))
    some = np.r_[np.nonzero(whole.folds)[0], np.arange(0, len(whole.folds), 5)]
    np.testing.assert_array_equal(fitter.check.new_fold_mask(after, some), whole.folds[some])
    near = fitter.check.faces_of(np.nonzero(moved)[0])
    assert set(near) == set(np.nonzero(moved[s.faces].any(axis=1))[0])


def test_fast_rotations_match_the_svd_reference_including_reflections_and_singular_ones():
    from engine.geometry.rotations import _rotations_svd, rotations_from_covariances

    rng = np.random.default_rng(3)
    C = rng.normal(size=(500, 3, 3))  # about half have a reflection as polar factor
    C[:20, :, 2] *= 1e-6  # near singular
    C[20:25] = 0.0
    R = rotations_from_covariances(C)
    np.testing.assert_allclose(R[25:], _rotations_svd(C[25:]), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.einsum("kji,kjl->kil", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)


def test_rotations_of_flat_neighbourhoods_match_the_svd_reference():
    """A flat rest neighbourhood (a subdivided or a planar patch) has a rank-2 covariance whose
    determinant's sign is noise: about half come out of the Newton iterations as reflections and
    take the flat-array fix; all must be the reference's proper rotations, and the flat entry API
    is the (k, 3, 3) one's."""
    from engine.geometry.rotations import _rotations_svd, best_rotations_flat, rotations_from_covariances

    rng = np.random.default_rng(11)
    k, pts = 400, 12
    rest = rng.normal(size=(k, pts, 3)) * [1.0, 0.7, 1e-7]  # coplanar up to noise
    rot = _rotations_svd(rng.normal(size=(k, 3, 3)))
    cur = np.einsum("kij,kpj->kpi", rot, rest) + 1e-3 * rng.normal(size=(k, pts, 3))
    rest -= rest.mean(axis=1, keepdims=True)
    cur -= cur.mean(axis=1, keepdims=True)
    C = np.einsum("kpi,kpj->kij", rest, cur)
    assert 50 < int((np.linalg.det(C) < 0).sum()) < 350
    R = rotations_from_covariances(C)
    np.testing.assert_allclose(R, _rotations_svd(C), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    np.testing.assert_array_equal(best_rotations_flat(C.reshape(k, 9).T), R.reshape(k, 9).T)


def test_rotations_in_blocks_are_the_rotations_of_one_call(monkeypatch):
    """Large batches run the Newton iterations in cache-sized blocks: every matrix is handled on
    its own, so the blocks give the very same rotations (bit for bit), reflections and singular
    matrices included, whatever the block boundaries cut."""
    from engine.geometry import rotations

    rng = np.random.default_rng(5)
    C = rng.normal(size=(1000, 3, 3))
    C[::7, :, 2] *= 1e-6
    C[::11] = 0.0
    whole = rotations.rotations_from_covariances(C)
    monkeypatch.setattr(rotations, "_POLAR_BLOCK", 97)
    assert np.array_equal(rotations.rotations_from_covariances(C), whole)


def test_the_fits_sparse_local_and_global_operators_match_the_per_edge_sums():
    """The surface fit's covariances (two rings of rest edge x current edge products) and the
    shape term's right side are precomputed sparse operators: they give the per-edge sums."""
    from engine.geometry.rotations import rotations_from_covariances
    from engine.register.surface_fit import SurfaceFitter

    s = trimesh.creation.icosphere(subdivisions=3)
    rng = np.random.default_rng(4)
    fitter = SurfaceFitter(s.vertices * [1.0, 0.8, 0.6], s.faces)
    x = fitter.rest * 1.3 + 0.05 * rng.normal(size=fitter.rest.shape)
    n, (i, j) = len(x), fitter.edges.T
    r, cur = fitter.rest_edges, x[i] - x[j]
    C = np.zeros((n, 3, 3))
    np.add.at(C, i, r[:, :, None] * cur[:, None, :])
    np.add.at(C, j, r[:, :, None] * cur[:, None, :])
    C = (fitter.ring @ C.reshape(n, 9)).reshape(n, 3, 3)
    R = rotations_from_covariances(C)
    sq = np.zeros(n)
    np.add.at(sq, i, (r ** 2).sum(1))
    np.add.at(sq, j, (r ** 2).sum(1))
    scale = np.einsum("kij,kji->k", R, C) / (fitter.ring @ sq)
    T = fitter._similarities(x)
    np.testing.assert_allclose(T, scale[:, None, None] * R, atol=1e-10)
    T = T + 0.1 * rng.normal(size=T.shape)
    v = 0.5 * np.einsum("kab,kb->ka", T[i] + T[j], r)
    b = np.zeros((n, 3))
    np.add.at(b, i, v)
    np.add.at(b, j, -v)
    np.testing.assert_allclose(fitter._shape_rhs(T), b, atol=1e-12)


def test_edge_stretch_is_one_under_uniform_scaling():
    v, f = _grid(6, 0, 1)
    np.testing.assert_allclose(edge_stretch(v, 2.5 * v, f), 1.0)


def test_a_template_with_a_leaning_fin_fitted_onto_a_smooth_blob_keeps_every_triangles_orientation():
    """Detail the target lacks (an overhanging fin) is kept in the template's shape; projecting
    every vertex instead folds it onto the blob."""
    s = trimesh.creation.icosphere(subdivisions=4)
    v, f = s.vertices.copy(), s.faces
    fin = (np.abs(v[:, 2]) < 0.06) & (v[:, 0] > 0.2)
    h = np.where(fin, 0.25, 0.0)
    v = v * (1 + h)[:, None]
    v[:, 2] += h  # the fin leans over one side
    t = trimesh.creation.icosphere(subdivisions=3)
    tv, tf = t.vertices * np.array([1.1, 0.95, 1.0]), t.faces
    check = OrientationCheck(v, f)
    naive = _projected(v, tv, tf)
    assert len(check.new_folds(naive)) > 20
    r = fit_surface(v, f, v, tv, tf)
    assert r.flipped == 0 and not check.flipped(r.vertices).any()
    assert len(check.new_folds(r.vertices)) <= 2
    d = SurfaceQuery(tv, tf).closest(r.vertices)[3]
    off = r.support < 0.5
    assert off.mean() < 0.1 and np.percentile(d[~off], 99) < 1e-3
    assert np.median(d[fin]) > 0.05  # the fin stands off the blob


def test_a_crumpled_patch_on_a_tight_bend_takes_the_templates_shape_blended_into_its_rim():
    """A tangle the shape steps left (a crumpled disc on a sheet wrapped round a thin cylinder)
    takes the template's shape again: pasted rigidly, the flat patch cannot meet its bent rim
    (7 bad triangles stay); blended into the rim, none stay, and nothing far from it moves."""
    from engine.register.surface_fit import SurfaceFitConfig, SurfaceFitter

    v, f = _grid(31, -1, 1)
    radius = 0.35  # the sheet (2 wide) goes 5.7 radians round: tight, but not onto itself
    ang = v[:, 0] / radius
    x = np.stack([radius * np.sin(ang), v[:, 1], radius * (1 - np.cos(ang))], 1)
    r = np.linalg.norm(v[:, :2] - [0.3, 0.0], axis=1)
    disc = r < 0.4
    x[disc] += np.random.default_rng(0).normal(scale=0.05, size=(disc.sum(), 3))
    fitter, cfg = SurfaceFitter(v, f), SurfaceFitConfig()
    assert fitter._bad_faces(x, cfg).sum() > 100
    y, replaced = fitter._replace_tangles(x, cfg)
    assert fitter._bad_faces(y, cfg).sum() == 0
    assert replaced[disc].all()
    np.testing.assert_array_equal(y[r > 0.9], x[r > 0.9])
    # each replaced patch is the template's shape up to a similarity: its edges keep their ratios
    e = fitter.edges[replaced[fitter.edges].all(axis=1) & disc[fitter.edges].all(axis=1)]
    ratio = np.linalg.norm(y[e[:, 0]] - y[e[:, 1]], axis=1) / np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    assert ratio.std() / ratio.mean() < 0.1


def test_a_target_with_a_concave_crease_does_not_fold_the_fit():
    """A sheet reaching a valley from inside: projection crowds it onto the crease line."""
    v, f = _grid(30, -0.8, 0.8)
    v[:, 2] = -0.1
    tv, tf = _grid(41, -1.0, 1.0)
    tv[:, 2] = 0.5 * np.abs(tv[:, 0])
    check = OrientationCheck(v, f)
    naive = _projected(v, tv, tf)
    assert check.flipped(naive).sum() > 10
    r = fit_surface(v, f, v, tv, tf)
    assert r.flipped == 0 and r.folds == 0
    assert SurfaceQuery(tv, tf).closest(r.vertices)[3].max() < 1e-3
    assert r.support.min() > 0.5


def test_a_hole_in_the_target_is_bridged_flat_and_reported():
    tv, tf = _grid(41, -1.0, 1.0)
    tf = tf[~np.all(np.linalg.norm(tv[tf][:, :, :2], axis=2) < 0.35, axis=1)]
    v, f = _grid(25, -0.8, 0.8)
    v[:, 2] = 0.05
    r = fit_surface(v, f, v.copy(), tv, tf)
    over = np.linalg.norm(v[:, :2], axis=1) < 0.25
    assert r.flipped == 0 and r.folds == 0
    np.testing.assert_allclose(r.vertices[:, 2], 0.0, atol=1e-3)  # flat across the hole too
    assert r.support[over].max() == 0.0
    assert 0.05 < r.no_surface < 0.2
    # vertices over the hole stay spread (no crowding onto its rim)
    assert np.linalg.norm(r.vertices[over, :2] - v[over, :2], axis=1).max() < 0.02


def test_excluded_vertices_follow_their_surroundings():
    v, f = _grid(21, -1.0, 1.0)
    tv, tf = _grid(31, -1.5, 1.5)
    tv[:, 2] = 0.3 + 0.2 * tv[:, 0]  # a tilted plane above the sheet
    excluded = np.linalg.norm(v[:, :2], axis=1) < 0.4
    r = fit_surface(v, f, v.copy(), tv, tf, fixed_weight=(~excluded).astype(float))
    plane = 0.3 + 0.2 * r.vertices[:, 0]
    assert np.abs(r.vertices[excluded, 2] - plane[excluded]).max() < 0.02
    assert r.flipped == 0 and r.support[excluded].max() == 0.0


def test_fit_quality_counts_against_the_projection():
    v, f = _grid(30, -0.8, 0.8)
    v[:, 2] = -0.1
    tv, tf = _grid(41, -1.0, 1.0)
    tv[:, 2] = 0.5 * np.abs(tv[:, 0])
    naive = _projected(v, tv, tf)
    q = fit_quality(v, naive, f, np.zeros(len(v)), 2.0, supported=np.ones(len(v), bool))
    assert q["flipped"] > 0 and q["flipped_pct"] == pytest.approx(100 * q["flipped"] / len(f), abs=1e-3)
    assert q["dist_p99_pct"] == 0.0 and q["supported_pct"] == 100.0
