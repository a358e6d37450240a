"""An orientation the artist states (issue 36): ``orientation="as-is"`` searches only small turns,
takes the keypoints' left and right from the statement, and says when the meshes do not fit it."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

import engine
from engine.correspond.keypoint_pairs import PairKeypoints
from engine.correspond.stated_orientation import (
    AS_IS_RESIDUAL_RATIO, sided_distances, sides_from_orientation, statement_check,
)
from engine.errors import InputError
from engine.geometry.align import AS_IS_MAX_DEG, RigidTransform, rigid_align_candidates
from engine.keypoints.detect import Keypoints
from engine.mesh import prepare_mesh


def _angle(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def _figure():
    """An asymmetric figure (a body, an arm out to one side, a nose in front), normalised."""
    body = trimesh.creation.capsule(height=1.0, radius=0.25)
    arm = trimesh.creation.capsule(height=0.6, radius=0.08).apply_transform(
        trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])).apply_translation([0.5, 0, 0.2])
    nose = trimesh.creation.icosphere(subdivisions=2, radius=0.08).apply_translation([0, 0.25, 0.4])
    m = trimesh.util.concatenate([body, arm, nose])
    return prepare_mesh(m.vertices, m.faces, "figure").mesh


def _turned(mesh, R):
    from engine.mesh import Mesh

    return Mesh(mesh.vertices @ R.T, mesh.faces, "turned")


def test_as_is_keeps_small_turns_and_never_turns_round():
    fig = _figure()
    small = Rotation.from_euler("z", 12, degrees=True).as_matrix()
    T = rigid_align_candidates(fig, _turned(fig, small), orientation="as-is")
    assert len(T) == 1 and T[0].kind == "as-is"
    assert _angle(T[0].rotation @ small.T) < 4.0  # the small turn is found
    # turned round about its up: the free search turns it back, the stated orientation does not
    round_ = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    free = rigid_align_candidates(fig, _turned(fig, round_))[0]
    stated = rigid_align_candidates(fig, _turned(fig, round_), orientation="as-is")[0]
    assert _angle(free.rotation @ round_.T) < 10.0
    assert _angle(stated.rotation) <= AS_IS_MAX_DEG
    assert stated.score > AS_IS_RESIDUAL_RATIO * free.score  # and it fits far worse: a wrong statement
    with pytest.raises(ValueError, match="orientation"):
        rigid_align_candidates(fig, fig, orientation="upright")


def test_a_wrong_statement_is_a_notice_and_a_right_one_is_not():
    assert statement_check(1.02, 1.0) is None
    msg = statement_check(2.5, 1.0)
    assert "do not seem to stand and face the same way" in msg and "2.5x" in msg and "auto" in msg


NAMES = ("nose", "left_hand", "right_hand", "left_knee", "right_knee")


def _keypoints(points: np.ndarray) -> Keypoints:
    n = len(NAMES)
    return Keypoints(NAMES, np.arange(n), points.astype(np.float64), np.ones(n, np.float32), True, 8, "y")


def test_keypoints_mirrored_exchange_each_sided_twin():
    pts = np.arange(15, dtype=np.float64).reshape(5, 3)
    kp = _keypoints(pts)
    m = kp.mirrored()
    np.testing.assert_array_equal(m.points[1], pts[2])
    np.testing.assert_array_equal(m.vertices, [0, 2, 1, 4, 3])
    np.testing.assert_array_equal(m.mirrored().points, pts)


def test_sides_crossing_the_statement_are_taken_from_it():
    """The target's keypoints named from behind (left and right exchanged): under the stated
    alignment (no turn) the source's left hand lies on the target's 'right' hand; the pairs are
    rebuilt left to left, and the change is a notice. Sides that agree are left alone."""
    pts = np.array([[0, 1.6, 0.1], [0.6, 1.0, 0], [-0.6, 1.0, 0], [0.15, 0.5, 0], [-0.15, 0.5, 0]])
    src = _keypoints(pts)
    tgt_seen_from_behind = _keypoints(pts).mirrored()
    pk = PairKeypoints(src, tgt_seen_from_behind, np.stack([np.arange(5), [0, 2, 1, 4, 3]], 1), np.ones(5), list(NAMES),
                       used=True)
    identity = RigidTransform(np.eye(3), np.zeros(3))
    direct, crossed = sided_distances(pk, identity, pts, pts)
    assert crossed < 1e-9 < direct
    fixed, notice = sides_from_orientation(pk, identity, pts, pts)
    assert notice is not None and "stated orientation" in notice
    np.testing.assert_array_equal(fixed.pairs, np.stack([np.arange(5), np.arange(5)], 1))
    agree = PairKeypoints(src, _keypoints(pts), np.stack([np.arange(5)] * 2, 1), np.ones(5), list(NAMES), used=True)
    same, none = sides_from_orientation(agree, identity, pts, pts)
    assert same is agree and none is None


def test_match_as_is_on_a_turned_target_says_so_and_asks_for_a_check():
    from engine.samples import make_pair

    pair = make_pair()  # the target is turned by 70 degrees about a tilted axis
    kw = dict(quality="fast", features="geometric", keypoints="off")
    stated = engine.match((pair.source_vertices, pair.source_faces), (pair.target_vertices, pair.target_faces),
                          orientation="as-is", **kw)
    assert stated.meta["orientation"] == "as-is" and stated.meta["rigid"]["kind"] == "as-is"
    assert any("do not seem to stand and face the same way" in n for n in stated.meta["notices"])
    assert stated.meta["verdict"]["verdict"] == "check"
    with pytest.raises(InputError, match="orientation"):
        engine.match((pair.source_vertices, pair.source_faces), (pair.target_vertices, pair.target_faces),
                     orientation="upright", **kw)


def test_the_worker_passes_the_stated_orientation_to_the_match():
    """The Blender extension sends ``orientation`` with a match (engine.worker_commands)."""
    from engine.worker_commands import Handlers

    seen = {}

    def recorder(source, target, **options):
        seen.update(options)
        return {"meta": "{}", "fitted_vertices": np.zeros((3, 3), np.float32)}

    v = np.eye(3)
    arrays = {"src_vertices": v, "src_faces": np.array([[0, 1, 2]]), "tgt_vertices": v, "tgt_faces": np.array([[0, 1, 2]])}
    Handlers(recorder).match({"quality": "fast", "orientation": "as-is"}, arrays, None, None)
    assert seen["orientation"] == "as-is" and seen["quality"] == "fast"


def test_the_mirror_image_of_a_symmetric_shape_aligns_as_well_and_of_an_asymmetric_one_does_not():
    """Geometry alone cannot tell the sides of a shape symmetric left to right: its mirror image
    aligns as well (the match then asks for a check); a chiral shape's cannot."""
    from engine.geometry.align import MIRROR_CLOSE, mirror_score

    # three arms of three lengths along x, y and z: no turn brings its mirror image onto it
    parts = [trimesh.creation.capsule(height=h, radius=0.08).apply_transform(
        trimesh.transformations.rotation_matrix(np.pi / 2, ax)).apply_translation(np.asarray(at) * h / 2)
        for h, ax, at in ((1.0, [0, 1, 0], [1, 0, 0]), (0.6, [1, 0, 0], [0, -1, 0]), (0.3, [0, 0, 1], [0, 0, 1]))]
    m = trimesh.util.concatenate(parts)
    chiral = prepare_mesh(m.vertices, m.faces, "three arms").mesh
    direct = rigid_align_candidates(chiral, chiral)[0].score
    assert mirror_score(chiral, chiral) > 2 * MIRROR_CLOSE * direct
    body = trimesh.creation.capsule(height=1.0, radius=0.25)
    arms = [trimesh.creation.capsule(height=0.6, radius=0.08).apply_transform(
        trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])).apply_translation([sx * 0.5, 0, 0.2])
        for sx in (-1, 1)]
    nose = trimesh.creation.icosphere(subdivisions=2, radius=0.08).apply_translation([0, 0.25, 0.4])
    m = trimesh.util.concatenate([body, *arms, nose])
    both = prepare_mesh(m.vertices, m.faces, "both arms").mesh
    direct = rigid_align_candidates(both, both)[0].score
    assert mirror_score(both, both) <= MIRROR_CLOSE * direct + 1e-3
