"""Face landmarks on meshes (engine.keypoints.face): found from the body's head or, for a head on
its own, by searching the mesh; the same landmarks either way, whatever the head's orientation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.keypoints.face import EYE_L, EYE_R, FACE_OVAL, NOSE, detect_face_landmarks, _turn_images, _unturn_xy
from engine.keypoints.pose_model import keypoints_status

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_models = pytest.mark.skipif(not keypoints_status()[0], reason="no keypoint back end installed")
needs_makehuman = pytest.mark.skipif(not (DATA / "realworld" / "mh_body.obj").is_file(), reason="benchmark data not available")


def test_turned_pixels_map_back_to_the_view_they_came_from():
    img = np.full((1, 64, 64, 3), 255, np.uint8)
    img[0, 20:22, 10:12] = 0  # a dark 2 x 2 block: its centre is at x = 11, y = 21
    for angle in (0, 90, 180, 270, 45, 135):
        turned = _turn_images(img, angle)[0, :, :, 0]
        ys, xs = np.nonzero(turned < 128)
        back = _unturn_xy(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]), angle, 64)
        assert np.allclose(back, [[11.0, 21.0]], atol=0.6), angle


@pytest.fixture(scope="module")
def makehuman(tmp_path_factory):
    from engine.keypoints.detect import detect_keypoints
    from engine.mesh import load_mesh

    mesh = load_mesh(DATA / "realworld" / "mh_body.obj").mesh
    cache = str(tmp_path_factory.mktemp("kp"))
    body = detect_keypoints(mesh.vertices, mesh.faces, cache_dir=cache)
    face = detect_face_landmarks(mesh.vertices, mesh.faces, body=body, cache_dir=cache)
    return mesh, body, face, cache


def _head(mesh, body, radius: float):
    """The mesh's part within ``radius`` ear widths of the head's centre (a head cut as a template or a scan is)."""
    ears = body.point("left_ear"), body.point("right_ear")
    width = float(np.linalg.norm(ears[0] - ears[1]))
    keep = np.linalg.norm(mesh.vertices - (ears[0] + ears[1]) / 2, axis=1) < radius * width
    faces = mesh.faces[keep[mesh.faces].all(1)]
    used = np.unique(faces)
    remap = np.full(len(mesh.vertices), -1)
    remap[used] = np.arange(len(used))
    return mesh.vertices[used], remap[faces], used, width


@needs_models
@needs_makehuman
def test_the_body_places_the_face_and_its_landmarks_land_on_the_right_features(makehuman):
    mesh, body, face, _ = makehuman
    assert face.found_face and face.views_found >= 8 and face.found().sum() >= 400
    assert not face.found()[list(FACE_OVAL)].any()  # the outline slides with the view: left out
    # the template faces +Z with its left at +X: the subject's left eye corner is at +X, the nose ahead
    assert face.point(EYE_L)[0] > 0 > face.point(EYE_R)[0]
    assert face.point(NOSE)[2] > face.point(EYE_L)[2]
    assert np.linalg.norm(face.point(NOSE) - body.point("nose")) < 0.02  # unit-area frame: ~1 cm
    assert face.front[2] > 0.9 and face.up[1] > 0.9


@needs_models
@needs_makehuman
@pytest.mark.parametrize("seed", [1, 2])
def test_a_head_on_its_own_turned_anyhow_gives_the_same_landmarks(makehuman, seed, tmp_path):
    from scipy.spatial.transform import Rotation

    mesh, body, face, _ = makehuman
    hv, hf, used, width = _head(mesh, body, 1.4)  # head and neck, as a template head
    turn = Rotation.random(random_state=seed).as_matrix()
    got = detect_face_landmarks(hv @ turn.T, hf, cache_dir=str(tmp_path))
    assert got.found_face
    both = got.found() & face.found()
    assert both.sum() >= 350
    err = np.linalg.norm(got.points[both] @ turn - face.points[both], axis=1) / width
    assert np.median(err) < 0.03 and np.quantile(err, 0.95) < 0.1
    assert np.allclose(got.up @ turn, face.up, atol=0.15) and np.allclose(got.front @ turn, face.front, atol=0.15)


@needs_models
def test_a_mesh_without_a_face_gives_no_face(tmp_path):
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=3)
    got = detect_face_landmarks(ball.vertices, ball.faces, cache_dir=str(tmp_path))
    assert not got.found_face and got.found().sum() == 0


@needs_models
@needs_makehuman
def test_a_template_head_onto_a_turned_head_scan_is_guided_by_face_landmarks(makehuman, tmp_path, monkeypatch):
    """The MakeHuman head (cut at the neck) onto a FAUST person's head cut with its shoulders and
    turned: no body on either, so the face landmarks pair them, set the orientation and guide the
    fit; the template's nose lands on the scan's nose."""
    import engine
    from engine.bench.heads import cut_head
    from engine.keypoints.detect import detect_keypoints
    from engine.mesh import load_mesh
    from scipy.spatial.transform import Rotation

    monkeypatch.setenv("STABLEWRAP_CACHE", str(tmp_path))
    mesh, body, face, _ = makehuman
    sv, sf, s_used, _ = cut_head(mesh.vertices, mesh.faces, body, 1.4)
    scan = load_mesh(DATA / "faust5k" / "tr_reg_001.off").mesh
    scan_body = detect_keypoints(scan.vertices, scan.faces, cache_dir=str(tmp_path))
    tv, tf, t_used, _ = cut_head(scan.vertices, scan.faces, scan_body, 2.3)
    turn = Rotation.random(random_state=3).as_matrix()
    corr = engine.match((sv, sf), (tv @ turn.T, tf))
    kp = corr.meta["keypoints"]
    assert kp["used"] and kp["kind"] == "face" and len(kp["pairs"]) >= 20, kp
    assert corr.meta["verdict"]["verdict"] == "good"
    nose_s = int(np.nonzero(s_used == body.vertices[body.index("nose")])[0][0])
    nose_t = (tv @ turn.T)[int(np.nonzero(t_used == scan_body.vertices[scan_body.index("nose")])[0][0])]
    f, b = corr.src_to_tgt_face[nose_s], corr.src_to_tgt_bary[nose_s]
    landed = b @ (tv @ turn.T)[tf[f]]
    assert np.linalg.norm(landed - nose_t) < 0.05 * np.linalg.norm(tv.max(0) - tv.min(0))


@needs_models
@needs_makehuman
def test_landmarks_command_writes_the_face_of_a_head_in_file_indices(makehuman, tmp_path, monkeypatch):
    import json

    from engine.cli import main
    from engine.samples import write_obj

    monkeypatch.setenv("STABLEWRAP_CACHE", str(tmp_path / "cache"))
    mesh, body, face, _ = makehuman
    hv, hf, used, _ = _head(mesh, body, 1.4)
    write_obj(str(tmp_path / "head.obj"), hv * 10.0 + 3.0, hf)  # other units and place than the match frame
    assert main(["landmarks", str(tmp_path / "head.obj"), "-o", str(tmp_path / "lm.json"), "--face", "--require"]) == 0
    data = json.loads((tmp_path / "lm.json").read_text())
    assert not data["humanoid"] and data["face"]["face"] and len(data["face"]["landmarks"]) >= 400
    rows = {r["name"]: r for r in data["face"]["landmarks"]}
    nose = rows[f"face_{NOSE:03d}"]
    assert np.allclose(nose["point"], face.point(NOSE) * 10.0 + 3.0, atol=0.2)  # file coordinates
    assert np.linalg.norm(hv[nose["vertex"]] * 10.0 + 3.0 - np.array(nose["point"])) < 0.2  # file vertex indices


@needs_models
def test_landmarks_command_without_body_or_face_is_one_line(tmp_path, monkeypatch, capsys):
    import trimesh

    from engine.cli import main

    monkeypatch.setenv("STABLEWRAP_CACHE", str(tmp_path / "cache"))
    trimesh.creation.icosphere(subdivisions=3).export(tmp_path / "ball.obj")
    assert main(["landmarks", str(tmp_path / "ball.obj"), "-o", str(tmp_path / "lm.json"), "--face", "--require"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "no body and no face found" in err[-1]
    assert not (tmp_path / "lm.json").exists()
