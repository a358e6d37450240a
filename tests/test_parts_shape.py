"""Shape-to-shape part matching, 3D segmentation and part guidance on synthetic 'creatures'.

A creature is a sphere with smooth protrusions (head, two identical arms on
opposite sides, a tail); it is one connected surface, so the intrinsic
descriptors behave as on real bodies, and the two arms can only be told apart
by their side.
"""
import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.geometry.align import RigidTransform
from engine.mesh import Mesh
from engine.parts import PartMatcher, match_part
from engine.parts.guidance import PartGuidance, extremity_parts
from engine.parts.segment import MeshSegmenter, edge_dihedral, random_walker

LIMBS = {
    "head": ([0, 0, 1], 0.5, 0.35),
    "arm_left": ([1, 0, 0.2], 0.9, 0.22),
    "arm_right": ([-1, 0, 0.2], 0.9, 0.22),
    "tail": ([0, -1, -0.5], 0.7, 0.2),
}
IDENTITY = RigidTransform(np.eye(3), np.zeros(3), 1.0)


def creature(limbs=LIMBS, sub=3, stretch=1.0):
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=sub)
    u = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    r = np.full(len(u), 0.5)
    lab = np.zeros(len(u), int)
    for i, (d, a, w) in enumerate(limbs.values()):
        d = np.asarray(d, float) / np.linalg.norm(d)
        bump = a * np.exp(-((np.arccos(np.clip(u @ d, -1, 1)) / w) ** 2))
        r += bump
        lab[bump > 0.15 * a] = i + 1
    v = u * r[:, None]
    v[:, 2] *= stretch
    return v, np.asarray(s.faces), lab, ["body"] + list(limbs)


@pytest.fixture(scope="module")
def pair():
    vs, fs, ls, names = creature()
    vt, ft, lt, _ = creature(stretch=1.15)
    return (vs, fs, ls), (vt, ft, lt), names


@pytest.fixture(scope="module")
def matcher(pair):
    (vs, fs, _), (vt, ft, _), _ = pair
    return PartMatcher((vs, fs), (vt, ft), transform=IDENTITY)


@pytest.mark.parametrize("part", ["head", "arm_left", "arm_right"])
def test_each_limb_matches_the_same_limb_left_and_right_included(pair, matcher, part):
    (_, _, ls), (_, _, lt), names = pair
    i = names.index(part)
    r = matcher.match(np.nonzero(ls == i)[0])
    assert r.matched and lt[r.bsb_vertex] == i
    assert 0 < r.score <= 1
    # the grown target part is mostly the right limb and contains the buddy
    tv = r.target_vertices
    assert r.bsb_vertex in tv
    assert np.mean(lt[tv] == i) > 0.6


def test_missing_tail_gives_no_match(pair):
    (vs, fs, ls), _, names = pair
    no_tail = {k: v for k, v in LIMBS.items() if k != "tail"}
    vt, ft, lt, _ = creature(no_tail, stretch=1.15)
    r = PartMatcher((vs, fs), (vt, ft), transform=IDENTITY).match(np.nonzero(ls == names.index("tail"))[0])
    assert not r.matched and r.bsb_vertex == -1 and len(r.target_vertices) == 0
    assert r.arrays()["bsb_vertex"] == -1 and r.arrays()["bsb_vertex"].dtype == np.int32


def test_bad_vertex_groups_have_clear_messages(pair, matcher):
    (vs, fs, _), _, _ = pair
    with pytest.raises(InputError, match="empty"):
        matcher.match(np.zeros(0, int))
    with pytest.raises(InputError, match="whole mesh"):
        matcher.match(np.arange(len(vs)))
    with pytest.raises(InputError, match="out of range"):
        matcher.match(np.array([0, len(vs) + 5]))
    with pytest.raises(InputError, match="empty"):
        match_part((vs, fs), [], (vs, fs))  # fails before any feature work


def test_random_walker_matches_a_dense_reference_solve():
    # path graph 0-1-2-3-4 with a weak edge between 2 and 3
    w = np.array([1.0, 1.0, 0.01, 1.0])
    import scipy.sparse as sp

    i = np.arange(4)
    W = sp.coo_matrix((np.r_[w, w], (np.r_[i, i + 1], np.r_[i + 1, i])), shape=(5, 5)).tocsr()
    x = random_walker(W, np.array([0]), np.array([4]))
    L = np.diag(W.toarray().sum(1)) - W.toarray()
    free = [1, 2, 3]
    ref = np.linalg.solve(L[np.ix_(free, free)], -L[np.ix_(free, [0])] @ np.ones(1))
    assert np.allclose(x[free], ref, atol=1e-6)
    assert x[2] > 0.9 and x[3] < 0.1  # the weak edge is the boundary


def test_concave_edges_are_detected_on_a_creature(pair):
    (vs, fs, ls), _, _ = pair
    m = Mesh(vs, fs)
    edges, cos_angle, concave = edge_dihedral(m)
    assert len(edges) == len(m.edges) and np.all(cos_angle <= 1.0)
    # the sphere itself is convex; concave edges sit where limbs join the body
    near_limb = (ls[edges[:, 0]] > 0) | (ls[edges[:, 1]] > 0)
    assert concave.sum() > 0
    assert concave[~near_limb].mean() < concave[near_limb].mean()


def test_segmenter_grows_the_limb_around_a_seed(pair):
    (vs, fs, ls), _, names = pair
    from engine.parts.features import descriptors

    m = Mesh(vs, fs)
    seg = MeshSegmenter(m, descriptors(m))
    i = names.index("head")
    tip = int(np.argmax(vs[:, 2]))
    mask = seg.grow(tip)
    assert mask[tip] and mask.sum() < 0.5 * len(vs)
    assert np.mean(ls[mask] == i) > 0.5
    with pytest.raises(InputError, match="out of range"):
        seg.grow(len(vs))


def test_extremity_parts_find_the_long_limbs(pair):
    (vs, fs, ls), _, names = pair
    parts = extremity_parts(Mesh(vs, fs), count=4)
    assert 2 <= len(parts) <= 4
    assert all(0 < len(p) < len(vs) for p in parts)
    found = {int(np.bincount(ls[p]).argmax()) for p in parts}
    # the two arms are the farthest extremities: each gets its own part
    assert {names.index("arm_left"), names.index("arm_right")} <= found


def test_part_guidance_loss_pulls_parts_together_and_has_exact_gradient(pair):
    (vs, fs, ls), (vt, ft, lt), names = pair
    groups = [np.nonzero(ls == names.index(n))[0] for n in ("arm_left", "arm_right")]
    g = PartGuidance(parts=groups)
    g.prepare(Mesh(vs, fs), Mesh(vt, ft))
    assert len(g.pairs) == 2
    s_idx, t_pts, w = g.matches()
    assert len(s_idx) == len(t_pts) == len(w) > 0
    x = torch.tensor(vs, dtype=torch.float64, requires_grad=True)
    loss = g.loss(x)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(x.grad).all()
    # the gradient only touches the vertices of the matched parts
    touched = np.nonzero(x.grad.abs().sum(1).numpy() > 0)[0]
    assert set(touched) <= set(np.concatenate(groups))
    # finite-difference check of one coordinate
    j = int(groups[0][0])
    eps = 1e-6
    xp = x.detach().clone(); xp[j, 0] += eps
    xm = x.detach().clone(); xm[j, 0] -= eps
    fd = (g.loss(xp) - g.loss(xm)).item() / (2 * eps)
    assert fd == pytest.approx(x.grad[j, 0].item(), rel=1e-4, abs=1e-8)
    # moving the source arms onto their matched target parts lowers the loss
    moved = x.detach().clone()
    for s, t in g.pairs:
        moved[s] += torch.as_tensor(vt[t].mean(0) - vs[s].mean(0))
    assert g.loss(moved).item() < loss.item()


def test_combined_guidance_sums_losses_and_concatenates_matches(pair):
    from engine.parts.guidance import CombinedGuidance

    (vs, fs, ls), (vt, ft, lt), names = pair
    a = PartGuidance(pairs=[(np.nonzero(ls == 1)[0], np.nonzero(lt == 1)[0])], parts=[])
    b = PartGuidance(pairs=[(np.nonzero(ls == 2)[0], np.nonzero(lt == 2)[0])], parts=[])
    c = CombinedGuidance([(a, 1.0), (b, 2.0)])
    c.prepare(Mesh(vs, fs), Mesh(vt, ft))
    x = torch.tensor(vs)
    assert c.loss(x).item() == pytest.approx(a.loss(x).item() + 2.0 * b.loss(x).item())
    s_idx, pts, w = c.matches()
    assert len(s_idx) == (ls == 1).sum() + (ls == 2).sum() == len(pts) == len(w)
    c.update(vs + 0.01, 10, 0.5)
    assert c.loss(x).item() > 0


def test_rendered_source_as_the_image_gives_the_same_limbs(pair):
    """elements="renders": the source's renders (pixels with interpolated features) are the query side."""
    (vs, fs, ls), (vt, ft, lt), names = pair
    m = PartMatcher((vs, fs), (vt, ft), transform=IDENTITY, elements="renders", views=6, resolution=48)
    assert len(m.pix_face) > 0 and m.pix_features.shape[1] == m.features.source.shape[1]
    for part in ("arm_left", "arm_right"):
        i = names.index(part)
        r = m.match(np.nonzero(ls == i)[0])
        assert r.matched and lt[r.bsb_vertex] == i
        assert 0 <= r.details.element < len(m.pix_face)


def test_bad_features_and_options_are_rejected(pair):
    (vs, fs, _), (vt, ft, _), _ = pair
    with pytest.raises(InputError, match="source features"):
        PartMatcher((vs, fs), (vt, ft), source_features=np.zeros((3, 4)), target_features=np.zeros((len(vt), 4)))
    with pytest.raises(InputError, match="NaN"):
        PartMatcher((vs, fs), (vt, ft), source_features=np.full((len(vs), 4), np.nan), target_features=np.zeros((len(vt), 4)),
                    transform=IDENTITY)
    with pytest.raises(InputError, match="query"):
        PartMatcher((vs, fs), (vt, ft), query="nearest")


def test_orientation_check_undoes_a_half_turn():
    from engine.parts.features import descriptors, orientation_check

    limbs = dict(LIMBS, tail=([0, -1, 0], 0.9, 0.3))  # a long tail straight back: front != back
    vs, fs, _, _ = creature(limbs)
    src = tgt = Mesh(vs, fs)
    # a half turn about the vertical (z) axis through the centroid (as an aligner that
    # matched the silhouettes would leave it) puts the tail in front and swaps the arms
    c = (vs * src.vertex_areas[:, None]).sum(0) / src.vertex_areas.sum()
    R = np.diag([-1.0, -1.0, 1.0])
    turn = RigidTransform(R, c - R @ c, 1.0, kind="test")
    fixed = orientation_check(src, tgt, turn, descriptors(src), descriptors(tgt))
    assert "half-turn" in fixed.kind
    err_turn = np.linalg.norm(turn.apply(vs) - vs, axis=1).mean()
    err_fixed = np.linalg.norm(fixed.apply(vs) - vs, axis=1).mean()
    assert err_fixed < 0.15 * err_turn  # back to (about) the identity
    same = orientation_check(src, tgt, IDENTITY, descriptors(src), descriptors(tgt))
    assert same is IDENTITY


def test_part_guidance_respects_the_registration_frame(pair):
    """The meshes come aligned in one frame: moving both together must not change the pairs."""
    (vs, fs, ls), (vt, ft, lt), names = pair
    groups = [np.nonzero(ls == names.index(n))[0] for n in ("arm_left", "arm_right")]
    shift = np.array([0.3, -0.2, 0.5])
    g = PartGuidance(parts=groups)
    g.prepare(Mesh(vs * 1.3 + shift, fs), Mesh(vt * 1.3 + shift, ft))
    assert len(g.pairs) == 2
    for (s, t), n in zip(g.pairs, ("arm_left", "arm_right")):
        assert np.mean(lt[t] == names.index(n)) > 0.6


def _tip(v, lab, names, part):
    """The vertex of a limb farthest from the body centre."""
    idx = np.nonzero(lab == names.index(part))[0]
    return idx[np.argmax(np.linalg.norm(v[idx], axis=1))]


def test_geodesic_side_is_antisymmetric_across_the_mirror_plane(pair):
    from engine.parts.features import descriptors, intrinsic_side

    (vs, fs, ls), _, names = pair
    mesh = Mesh(vs, fs)
    s = intrinsic_side(mesh, descriptors(mesh))
    assert s is not None and s.shape == (len(vs),)
    left, right, head = (_tip(vs, ls, names, p) for p in ("arm_left", "arm_right", "head"))
    assert s[left] * s[right] < 0 and min(abs(s[left]), abs(s[right])) > 0.5
    assert abs(s[head]) < 0.2
    # the creature is mirror-symmetric across x = 0: the side of a vertex's mirror image is minus its own
    from scipy.spatial import cKDTree

    _, mirror = cKDTree(vs).query(vs * [-1.0, 1.0, 1.0])
    assert np.corrcoef(s, s[mirror])[0, 1] < -0.95


def test_geodesic_side_follows_an_arm_crossed_over_to_the_other_side(pair):
    """The left arm of the target reaches over to the right (x < 0): the mirror plane puts its
    tip on the right, the geodesic side keeps it on the left, as on the source."""
    from engine.parts.features import descriptors, geodesic_sides

    (vs, fs, ls), _, names = pair
    crossed = dict(LIMBS, arm_left=([-0.35, 1, 0.2], 0.9, 0.22))
    vt, ft, lt, _ = creature(crossed)
    S, T = Mesh(vs, fs), Mesh(vt, ft)
    ss, st = geodesic_sides(S, T, descriptors(S), descriptors(T), vs)
    tip_s, tip_t = _tip(vs, ls, names, "arm_left"), _tip(vt, lt, names, "arm_left")
    assert np.sign(vs[tip_s, 0]) != np.sign(vt[tip_t, 0])  # the plane would swap it
    assert ss[tip_s] * st[tip_t] > 0 and abs(st[tip_t]) > 0.5
    other_s, other_t = _tip(vs, ls, names, "arm_right"), _tip(vt, lt, names, "arm_right")
    assert ss[other_s] * st[other_t] > 0 and st[tip_t] * st[other_t] < 0


def test_mirror_pairs_are_mutual_alike_twins_ordered_by_side():
    from engine.parts.features import l2_rows, mirror_pairs

    # extremities: 0 left hand, 1 right hand, 2 head, 3 right foot, 4 left foot
    hand, foot, head = np.array([1.0, 0.1, 0.0]), np.array([0.1, 1.0, 0.0]), np.array([0.0, 0.3, 1.0])
    desc = l2_rows(np.stack([hand, hand + [0, 0.01, 0], head, foot, foot + [0.01, 0, 0]]))
    # geodesic distances: same-side hand-foot 2.0, across 2.3, hand-hand 1.6, foot-foot 1.2, head 1.0 / 1.5
    d = np.array([[0.0, 1.6, 1.0, 2.3, 2.0],
                  [1.6, 0.0, 1.0, 2.0, 2.3],
                  [1.0, 1.0, 0.0, 1.5, 1.5],
                  [2.3, 2.0, 1.5, 0.0, 1.2],
                  [2.0, 2.3, 1.5, 1.2, 0.0]])
    pairs = mirror_pairs(desc, d)
    assert pairs == [(0, 1), (4, 3)]  # the head has no twin; the left foot comes first, like the left hand
    assert mirror_pairs(desc, d, min_similarity=1.0) == []
    assert mirror_pairs(desc[:1], d[:1, :1]) == []
    # a front and a back paw of one side taken for twins: the head (no twin) lies far off their
    # midline, so the pair is dropped; 0 front-left, 1 back-left, 2 head
    paw, head2 = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    desc4 = l2_rows(np.stack([paw, paw + [0, 0.01, 0], head2]))
    d4 = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 2.6], [1.0, 2.6, 0.0]])
    assert mirror_pairs(desc4, d4) == []
    assert mirror_pairs(desc4, d4, max_midline=1.0) == [(0, 1)]


def test_auto_side_keeps_the_mirror_plane_unless_it_is_not_the_left_right_plane(pair, monkeypatch):
    from engine.parts import features as pf

    (vs, fs, _), (vt, ft, _), _ = pair
    S, T = Mesh(vs, fs), Mesh(vt, ft)
    assert pf.pair_features(S, T, transform=IDENTITY, side="auto").side_method == "plane"
    assert pf.pair_features(S, T, transform=IDENTITY, side="geodesic").side_method == "geodesic"
    assert pf.pair_features(S, T, transform=IDENTITY, side="plane").side_method == "plane"
    # a mirror plane search that lands on the frontal plane (y), as on some people in faust5k
    monkeypatch.setattr(pf, "lateral_axis", lambda mesh, desc=None: (np.zeros(3), np.array([0.0, 1.0, 0.0])))
    assert pf.pair_features(S, T, transform=IDENTITY, side="auto").side_method == "geodesic"
    with pytest.raises(InputError, match="side"):
        pf.pair_features(S, T, transform=IDENTITY, side="left")


def test_mutual_nn_rate_matches_a_brute_force_cosine_reference():
    from engine.parts.features import l2_rows, mutual_nn_rate

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 12))
    for b in (a[rng.permutation(300)] + 0.3 * rng.normal(size=(300, 12)), rng.normal(size=(450, 12))):
        s = l2_rows(a) @ l2_rows(b).T
        ref = np.mean(s.argmax(0)[s.argmax(1)] == np.arange(len(a)))
        assert mutual_nn_rate(a, b) == pytest.approx(ref)
    assert mutual_nn_rate(a, a) == 1.0
