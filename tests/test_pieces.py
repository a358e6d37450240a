"""A template in pieces: the skin found from geometry, the other pieces carried by it, never fitted.

Pinned down: which pieces of a generated template are skin, hidden, on it or apart; a pile of
loose pieces is refused; riding pieces keep their shape exactly and follow the skin (a similarity
of the skin moves them by it); a match of the whole template fits its skin exactly as a match of
the skin alone does and carries the rest.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.geometry.pieces import find_pieces
from engine.geometry.ride_along import RideAlong, similarity
from engine.mesh import prepare_mesh
from engine.samples import _JOINTS, humanoid, icosphere


def _sphere(centre, radius, subdivisions=2):
    v, f = icosphere(subdivisions)
    return v * radius + np.asarray(centre, float), f


def _cube(centre, size):
    import trimesh

    box = trimesh.creation.box(extents=[size] * 3)
    return np.asarray(box.vertices) + np.asarray(centre, float), np.asarray(box.faces, np.int64)


def _join(*parts):
    vs, fs, n = [], [], 0
    for v, f in parts:
        vs.append(v)
        fs.append(f + n)
        n += len(v)
    return np.concatenate(vs), np.concatenate(fs)


def templated_figure(**pose):
    """The clay figure (the skin: 16 overlapping pieces) with what templates carry: two eyeballs
    inside the head, a shell laid 1.5 cm over the top of the torso, and a cube on the ground apart
    from it. Returns vertices, faces and the vertex ranges of the extras by name."""
    body = humanoid(**pose)
    head = np.asarray(_JOINTS["head"], float)
    eyes = [_sphere(head + [sx * 0.035, 0.02, 0.06], 0.02) for sx in (1.0, -1.0)]
    # the torso's upper half, grown by 1.5 cm along its normals: a garment layer (smaller than the torso)
    tv, tf = icosphere(3)
    scale, centre = np.array([0.17, 0.28, 0.11]), np.asarray(_JOINTS["chest"], float) - [0.0, 0.05, 0.0]
    normal = tv / scale
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    tv = tv * scale + centre + 0.015 * normal
    top = tf[(tv[tf][:, :, 1] > centre[1]).all(axis=1)]
    used = np.unique(top)
    remap = np.full(len(tv), -1)
    remap[used] = np.arange(len(used))
    shell = (tv[used], remap[top])
    cube = _cube([0.6, -0.2, 0.0], 0.1)
    parts = [body, *eyes, shell, cube]
    v, f = _join(*parts)
    starts = np.cumsum([0] + [len(p[0]) for p in parts])
    ranges = {name: np.arange(starts[i], starts[i + 1]) for i, name in
              enumerate(("body", "left_eye", "right_eye", "shell", "cube"))}
    return v, f, ranges


def _kinds(prepared, pieces, caller_vertices):
    return set(pieces.kind[np.unique(pieces.label[prepared.orig_to_clean[caller_vertices]])])


def test_the_skin_is_found_and_every_other_piece_named_for_what_it_is():
    v, f, r = templated_figure()
    pm = prepare_mesh(v, f, "template")
    pieces = find_pieces(pm.mesh)
    assert _kinds(pm, pieces, r["left_eye"]) == {"inside"} and _kinds(pm, pieces, r["right_eye"]) == {"inside"}
    assert _kinds(pm, pieces, r["shell"]) == {"on"}
    assert _kinds(pm, pieces, r["cube"]) == {"apart"}
    # the figure's overlapping pieces are one skin (its neck, hidden between head and torso, rides)
    body_kinds = pieces.kind[np.unique(pieces.label[pm.orig_to_clean[r["body"]]])]
    assert np.sum(body_kinds == "skin") >= 14 and set(body_kinds) <= {"skin", "inside"}
    assert pieces.skin[pm.orig_to_clean[r["body"]]].mean() > 0.9


def test_a_single_piece_is_all_skin_and_a_named_skin_overrides_the_rule():
    v, f = icosphere(3)
    pm = prepare_mesh(v, f, "ball")
    assert find_pieces(pm.mesh).all_skin
    v, f, r = templated_figure()
    pm = prepare_mesh(v, f, "template")
    named = np.zeros(pm.mesh.n_vertices, bool)
    named[pm.orig_to_clean[r["cube"]]] = True
    pieces = find_pieces(pm.mesh, skin=named)
    assert pieces.stated and _kinds(pm, pieces, r["cube"]) == {"skin"}
    assert "skin" not in _kinds(pm, pieces, r["left_eye"])
    with pytest.raises(InputError, match="holds no vertex"):
        find_pieces(pm.mesh, skin=np.zeros(pm.mesh.n_vertices, bool))


def test_a_pile_of_loose_cubes_has_no_skin_to_match():
    cubes = [_cube([x, y, 0.0], 0.1) for x in range(5) for y in range(4)]
    v, f = _join(*cubes)
    pm = prepare_mesh(v, f, "pile")
    with pytest.raises(InputError, match="no skin to match among its 20 loose pieces"):
        find_pieces(pm.mesh)


def test_similarity_recovers_a_similarity_and_never_a_reflection():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    p = rng.normal(size=(30, 3))
    rot = Rotation.random(random_state=1).as_matrix()
    s, r, t = similarity(p, 1.7 * p @ rot.T + [1.0, -2.0, 0.5])
    assert s == pytest.approx(1.7) and np.allclose(r, rot) and np.allclose(t, [1.0, -2.0, 0.5])
    s, r, t = similarity(p, p * [-1, 1, 1])  # a mirror image: the best rotation, not the mirror
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_riding_pieces_move_with_a_similarity_of_the_skin_and_keep_their_shape_under_a_bend():
    from scipy.spatial.transform import Rotation

    v, f, r = templated_figure()
    pm = prepare_mesh(v, f, "template")
    mesh = pm.mesh
    ride = RideAlong(mesh, find_pieces(mesh))
    assert set(ride.mode[ride.mode != ""]) == {"rigid", "tied", "kept"}  # eyes and neck, the shell, the cube
    skin = mesh.vertices[ride.skin_index]
    rot = Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()
    moved = ride.carry(0.8 * skin @ rot.T + [0.1, 0.2, -0.3])
    assert np.allclose(moved, 0.8 * mesh.vertices @ rot.T + [0.1, 0.2, -0.3], atol=1e-9)
    # a bend of the skin (shear growing with height): the eyeballs stay spheres of their size
    # (up to the bend's local scale), the shell follows the torso, every vertex moves
    bent = skin + np.stack([0.3 * skin[:, 1] ** 2, np.zeros(len(skin)), 0.1 * skin[:, 1]], axis=1)
    moved = ride.carry(bent)
    for eye in ("left_eye", "right_eye"):
        rest = mesh.vertices[pm.orig_to_clean[r[eye]]]
        got = moved[pm.orig_to_clean[r[eye]]]
        s, rr, t = similarity(rest, got)
        assert np.abs(s * rest @ rr.T + t - got).max() < 1e-9 * s  # a similarity image: shape kept exactly
    shell = pm.orig_to_clean[r["shell"]]
    from engine.geometry.closest import SurfaceQuery

    skin_faces = ride._skin_faces
    gap = SurfaceQuery(bent, skin_faces).closest(moved[shell])[3]
    rest_gap = SurfaceQuery(skin, skin_faces).closest(mesh.vertices[shell])[3]
    assert np.median(np.abs(gap - rest_gap)) < 0.25 * np.median(rest_gap)  # the layer keeps its distance


@pytest.fixture(scope="module")
def template_match():
    import engine

    v, f, r = templated_figure()
    tv, tf = humanoid(left_arm_raise_deg=60, right_knee_bend_deg=30)
    kw = dict(quality="fast", features="geometric", keypoints="off", device="cpu")
    whole = engine.match((v, f), (tv, tf), **kw)
    return v, f, r, (tv, tf), whole, kw


def test_a_template_in_pieces_fits_its_skin_as_the_skin_alone_and_carries_the_rest(template_match):
    import engine

    v, f, r, target, whole, kw = template_match
    pieces = whole.meta["pieces"]
    assert pieces["kinds"]["inside"] >= 2 and pieces["kinds"]["on"] == 1 and pieces["kinds"]["apart"] == 1
    assert any("ride along" in n for n in whole.meta["notices"]) and any("apart from the skin" in n for n in whole.meta["notices"])
    assert whole.meta["source_vertices"] == len(v) and whole.fitted_vertices.shape == (len(v), 3)
    # the skin alone, as the caller would cut it: the same fit
    pm = prepare_mesh(v, f, "template")
    skin = find_pieces(pm.mesh).skin[pm.orig_to_clean]
    idx = np.nonzero(skin)[0]
    remap = np.full(len(v), -1)
    remap[idx] = np.arange(len(idx))
    alone = engine.match((v[idx], remap[f[skin[f].all(axis=1)]]), target, **kw)
    assert np.allclose(whole.fitted_vertices[idx], alone.fitted_vertices, atol=1e-4)
    # the eyeballs keep their shape and their confidence is capped (carried, not matched)
    for eye in ("left_eye", "right_eye"):
        rest, got = v[r[eye]], whole.fitted_vertices[r[eye]].astype(np.float64)
        s, rr, t = similarity(rest, got)
        assert np.abs(s * rest @ rr.T + t - got).max() < 1e-4 * s
        assert whole.confidence[r[eye]].max() <= 0.5
    # the target's vertices map onto skin triangles only
    tri_skin = skin[np.asarray(f)].all(axis=1)
    assert tri_skin[whole.tgt_to_src_face].all()


def test_landmarks_on_a_riding_piece_are_refused_and_a_named_skin_matches_every_piece(template_match):
    import engine

    v, f, r, target, _, kw = template_match
    with pytest.raises(InputError, match="rides along"):
        engine.match((v, f), target, landmarks=[[int(r["left_eye"][0]), 0]], **kw)
    whole_skin = engine.match((v, f), target, skin=np.ones(len(v), bool), method="rigid", **kw)
    assert "pieces" not in whole_skin.meta
    with pytest.raises(InputError, match="skin: vertex index out of range"):
        engine.match((v, f), target, skin=[len(v) + 5], **kw)
