"""Loose parts of the target (engine.geometry.body_parts): the match wraps the body, not a
detached piece beside it, says what it left out, and still maps every target vertex back."""
from __future__ import annotations

import numpy as np
import trimesh

import engine
from engine.geometry.body_parts import body_parts
from engine.mesh import Mesh


def _with_ball(vertices, faces, centre, radius):
    ball = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    v = np.concatenate([vertices, ball.vertices + centre])
    f = np.concatenate([faces, ball.faces + len(vertices)])
    return v, f, len(vertices)


def test_small_detached_parts_are_left_out_and_touching_or_large_parts_kept():
    body = trimesh.creation.icosphere(subdivisions=3)
    arm = trimesh.creation.cylinder(radius=0.3, height=1.5, sections=16)
    arm.apply_translation([0, 0, 1.7])  # touches the body: a body part split at a seam
    v = np.concatenate([body.vertices, arm.vertices])
    f = np.concatenate([body.faces, arm.faces + len(body.vertices)])
    v, f, n_kept = _with_ball(v, f, np.array([0.0, 0.0, -0.9]), 0.1)  # a small ball half inside (an eye)
    v, f, n_kept = _with_ball(v, f, np.array([2.5, 0, 0]), 0.1)  # a small ball floating beside it
    b = body_parts(Mesh(v, f))
    assert b.parts == 4 and b.left_out == 1
    assert b.faces[:-320].all() and not b.faces[-320:].any()  # an icosphere(2) has 320 faces
    assert "1 of its 4 parts left out" in b.notice("target")
    assert body_parts(Mesh(body.vertices, body.faces)).notice("target") is None


def test_a_large_part_stays_when_it_floats_near_the_body_and_goes_when_it_stands_apart():
    """A head-sized prop beside the character is a prop (left out); a forearm modelled a little
    apart from its arm is the body's (kept), at the same size."""
    body = trimesh.creation.icosphere(subdivisions=3)  # radius 1: diagonal ~3.5
    diag = float(np.linalg.norm(np.ptp(body.vertices, axis=0)))
    near_limb = trimesh.creation.cylinder(radius=0.3, height=1.0, sections=16)
    near_limb.apply_translation([0, 0, 1.0 + 0.02 * diag + 0.5])  # 2 % of the diagonal off the body
    v = np.concatenate([body.vertices, near_limb.vertices])
    f = np.concatenate([body.faces, near_limb.faces + len(body.vertices)])
    v, f, _ = _with_ball(v, f, np.array([3.0, 0.0, 0.0]), 0.5)  # a large ball (7 % of the body's area) 1.5 away
    b = body_parts(Mesh(v, f))
    assert b.parts == 3 and b.left_out == 1
    assert not b.faces[-320:].any() and b.faces[:-320].all()


def test_a_ball_beside_a_limb_does_not_pull_the_fit_onto_it(small_pair):
    tv, tf = small_pair.target_vertices, small_pair.target_faces
    tip = tv[np.argmax(tv[:, 0])]  # an extremity of the creature
    centre = tip + 0.055 * np.ptp(tv, axis=0).max() * (tip - tv.mean(0)) / np.linalg.norm(tip - tv.mean(0))
    radius = 0.03 * np.ptp(tv, axis=0).max()
    v, f, nt = _with_ball(tv, tf, centre, radius)
    r = engine.match((small_pair.source_vertices, small_pair.source_faces), (v, f), quality="fast", features="geometric")
    assert r.meta["target_parts"]["left_out"] == 1
    assert any("left out of the match" in n for n in r.meta["notices"])
    d_ball = np.linalg.norm(r.fitted_vertices - centre, axis=1) - radius
    assert d_ball.min() > 1.5 * radius  # the fit keeps clear of the ball (1.0 radius when the ball is matched too)
    assert r.tgt_to_src_face.shape == (len(v),)  # the ball's vertices still map back
    assert r.src_to_tgt_face.max() < len(tf)  # every source vertex lands on the body's faces


def test_parts_reaching_the_body_through_another_part_or_inside_it_are_kept():
    """The body grows round by round: a piece touching only the arm joins once the arm has; a
    piece deep inside the body (no surface near it) is kept by the winding number; a small
    piece away from everything still goes."""
    body = trimesh.creation.icosphere(subdivisions=3)
    arm = trimesh.creation.cylinder(radius=0.3, height=1.5, sections=16)
    arm.apply_translation([0, 0, 1.7])  # from z 0.95 (into the body) to 2.45
    v = np.concatenate([body.vertices, arm.vertices])
    f = np.concatenate([body.faces, arm.faces + len(body.vertices)])
    v, f, _ = _with_ball(v, f, np.array([0.0, 0.0, 2.5]), 0.1)  # on the arm's end, far from the body
    v, f, _ = _with_ball(v, f, np.array([0.0, 0.0, 0.0]), 0.1)  # inside the body, 0.9 from its surface
    v, f, _ = _with_ball(v, f, np.array([0.0, 2.5, 2.5]), 0.1)  # away from everything
    b = body_parts(Mesh(v, f))
    assert b.parts == 5 and b.left_out == 1
    assert b.faces[:-320].all() and not b.faces[-320:].any()


def test_a_part_near_a_large_triangle_but_far_from_its_corners_is_kept():
    """Nearest body vertices settle most parts quickly; a part over the middle of a large body
    triangle (within the gap of its surface, far from every corner) still counts as touching."""
    body = trimesh.creation.box(extents=[4.0, 4.0, 0.5])  # large faces: corners 2 apart
    top = body.vertices[:, 2].max()
    # a small ball hovering just above the middle of the top face: 0.005 of the diagonal above it
    diag = float(np.linalg.norm(np.ptp(body.vertices, axis=0)))
    v, f, _ = _with_ball(body.vertices, body.faces, np.array([0.3, -0.2, top + 0.05 + 0.005 * diag]), 0.05)
    b = body_parts(Mesh(v, f))
    assert b.parts == 2 and b.left_out == 0
    v, f, _ = _with_ball(body.vertices, body.faces, np.array([0.3, -0.2, top + 0.05 + 0.03 * diag]), 0.05)
    assert body_parts(Mesh(v, f)).left_out == 1  # beyond the gap: left out
