"""The model runner (engine.keypoints.litert_models + blaze): MediaPipe's models without the
mediapipe package, held to the mediapipe solutions' landmarks on the same renders."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.keypoints import blaze
from engine.features.cache import CACHE_ENV
from engine.keypoints.detect import KeypointSettings, _render
from engine.keypoints.pose_model import mediapipe_status
from engine.samples import humanoid, write_obj

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
litert = pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
needs_mediapipe = pytest.mark.skipif(not mediapipe_status()[0], reason="mediapipe is not installed (the reference)")


def test_anchor_grids_match_the_detectors_outputs():
    pose = blaze.ssd_anchors(224, (8, 16, 32, 32, 32))
    palm = blaze.ssd_anchors(192, (8, 16, 16, 16))
    assert pose.shape == (2254, 2) and palm.shape == (2016, 2)  # the models' box rows
    # the first cell of the finest grid, twice (two anchors a cell); the last of the coarsest, six times
    assert np.allclose(pose[:2], 0.5 / 28) and np.allclose(pose[-6:], 6.5 / 7)
    assert np.allclose(palm[1152:1158], 0.5 / 12)  # stride 16's three layers share one 12 x 12 grid


def test_weighted_suppression_merges_overlaps_by_score_and_keeps_the_rest():
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]])
    kps = np.array([[[0.2, 0.2]], [[0.3, 0.2]], [[0.7, 0.7]]])
    scores = np.array([0.6, 0.9, 0.7])
    out = blaze.weighted_nms(blaze.Detections(boxes, kps, scores), 0.3)
    assert np.allclose(out.scores, [0.9, 0.7])  # the best of a group keeps its own score
    w = scores[:2] / scores[:2].sum()
    assert np.allclose(out.boxes[0], w @ boxes[:2]) and np.allclose(out.keypoints[0, 0], w @ kps[:2, 0])
    assert np.allclose(out.boxes[1], boxes[2])
    assert len(blaze.weighted_nms(blaze.Detections(boxes, kps, scores), 0.3, max_out=1)) == 1


def test_heatmap_refinement_moves_a_confident_point_to_its_peak_and_leaves_a_weak_one():
    heat = np.full((64, 64, 2), -20.0, np.float32)
    heat[40, 30, 0] = 20.0  # one sure cell, two cells from the point
    heat[40, 30, 1] = -1.0  # below 0.5 after the sigmoid: no refinement
    pts = np.array([[32.5 / 64, 41.5 / 64], [32.5 / 64, 41.5 / 64]])
    out = blaze.refine_from_heatmap(pts, heat, kernel=7, min_confidence=0.5)
    assert np.allclose(out[0], [30 / 64, 40 / 64], atol=1e-6)
    assert np.allclose(out[1], pts[1])


def test_a_rect_turned_by_its_key_points_projects_back_onto_them():
    # a region 100 x 100 px round (200, 100) of a 400 x 200 image, turned a quarter
    rect = blaze.Rect(0.5, 0.5, 0.25, 0.5, math.pi / 2)
    top_centre = blaze.project(np.array([[0.5, 0.0]]), rect)[0]  # the region's own "up"
    assert np.allclose(top_centre * [400, 200], [250, 100])  # turned clockwise: up points to +x
    start, end = np.array([0.5, 0.5]), np.array([0.625, 0.5])  # a vector pointing right, in pixels
    assert math.isclose(blaze.keypoint_rotation(start, end, 400, 200), math.pi / 2)
    sq = blaze.transform_rect(blaze.Rect(0.5, 0.5, 0.25, 0.25, 0.0), 400, 200, 2.0)
    assert math.isclose(sq.width * 400, sq.height * 200) and math.isclose(sq.height * 200, 200.0)


@pytest.fixture(scope="module")
def renders():
    v, f = humanoid(left_arm_raise_deg=80.0)
    return _render(v, f, "y", KeypointSettings(views=8, resolution=384))[0]


@needs_mediapipe
def test_runner_gives_the_mediapipe_solutions_body_landmarks(renders):
    """Same renders through both back ends: the same views found, the points within a pixel or
    two (the landmark model itself moves points by more for a quarter-pixel shift of its crop)."""
    from engine.keypoints.litert_models import LiteRTPose
    from engine.keypoints.pose_model import MediaPipePose

    want, got = MediaPipePose().detect(renders), LiteRTPose().detect(renders)
    assert [w is None for w in want] == [g is None for g in got] and sum(g is not None for g in got) >= 6
    dist, vis = [], []
    for w, g in zip(want, got):
        if w is not None:
            dist.append(np.linalg.norm(w.xy - g.xy, axis=1))
            vis.append(np.abs(w.visibility - g.visibility))
    dist, vis = np.concatenate(dist), np.concatenate(vis)
    assert np.median(dist) < 1.5 and np.quantile(dist, 0.9) < 4.0  # pixels of a 384 px render
    assert vis.max() < 0.05


@needs_mediapipe
@pytest.mark.skipif(not (DATA / "realworld" / "mh_body.obj").is_file(), reason="benchmark data not available")
def test_runner_gives_the_mediapipe_solutions_hand_landmarks(tmp_path):
    """Close-ups of the MakeHuman template's hands (the renders the hand stage makes) through
    both back ends: the same hands found, the points within a tenth of a pixel."""
    from engine.keypoints.hands import add_hand_keypoints
    from engine.keypoints.detect import detect_keypoints
    from engine.keypoints.litert_models import LiteRTHands
    from engine.keypoints.pose_model import MediaPipeHands, PoseModel
    from engine.mesh import load_mesh

    class Recorder(PoseModel):
        def __init__(self):
            self.inner, self.images = MediaPipeHands(), []
            self.name, self.names = self.inner.name, self.inner.names

        def detect(self, images):
            self.images.append(np.array(images))
            return self.inner.detect(images)

    mesh = load_mesh(DATA / "realworld" / "mh_body.obj").mesh
    kp = detect_keypoints(mesh.vertices, mesh.faces, cache_dir=str(tmp_path))
    rec = Recorder()
    add_hand_keypoints(mesh.vertices, mesh.faces, kp, model=rec)
    images = np.concatenate(rec.images)
    want, got = MediaPipeHands().detect(images), LiteRTHands().detect(images)
    assert [w is None for w in want] == [g is None for g in got] and sum(g is not None for g in got) >= 8
    for w, g in zip(want, got):
        if w is not None:
            assert np.abs(w.xy - g.xy).max() < 0.1 and np.abs(w.visibility - g.visibility).max() < 1e-3


def _hide(tmp_path: Path, *modules: str) -> dict:
    """An environment whose Pythons cannot import ``modules`` (a sitecustomize on PYTHONPATH):
    the model process started from it inherits the same."""
    site = tmp_path / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    env.pop("STABLEWRAP_KEYPOINT_BACKEND", None)
    return env


@pytest.fixture(scope="module")
def runner_models(tmp_path_factory):
    """The model files installed apart from the mediapipe package (as on Python 3.13)."""
    from engine.keypoints.mediapipe_files import install_models

    if not mediapipe_status()[0]:
        pytest.skip("mediapipe is not installed (the files' source here)")
    return install_models(tmp_path_factory.mktemp("models"))


def test_landmarks_command_without_the_mediapipe_package_uses_the_runner(tmp_path, runner_models):
    mesh = tmp_path / "figure.obj"
    write_obj(str(mesh), *humanoid(left_arm_raise_deg=80.0))
    env = _hide(tmp_path, "mediapipe")
    env["STABLEWRAP_MEDIAPIPE_MODELS"] = str(runner_models)
    env[CACHE_ENV] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-m", "engine", "landmarks", str(mesh), "-o", str(tmp_path / "lm.json"), "--require"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    data = json.loads((tmp_path / "lm.json").read_text())
    rows = {r["name"]: r for r in data["landmarks"]}
    assert {r["model"] for r in rows.values()} == {"litert-pose"}
    # the figure faces +Z with its left side at +X (engine.samples.humanoid), its left arm raised
    assert rows["left_wrist"]["point"][0] > 0 > rows["right_wrist"]["point"][0]
    assert rows["left_wrist"]["point"][1] > 1.2 and rows["right_wrist"]["point"][1] < 1.0  # as test_keypoints' figure


def test_no_keypoint_back_end_at_all_is_one_line_naming_the_package(tmp_path):
    mesh = tmp_path / "figure.obj"
    write_obj(str(mesh), *humanoid())
    env = _hide(tmp_path, "mediapipe", "ai_edge_litert")
    out = subprocess.run([sys.executable, "-m", "engine", "landmarks", str(mesh), "-o", str(tmp_path / "lm.json")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-2000:]
    assert "ai-edge-litert package is not installed" in lines[0] and "internal error" not in lines[0]
    assert not (tmp_path / "lm.json").exists()


def test_an_unknown_back_end_name_is_one_line(tmp_path, monkeypatch):
    from engine.errors import InputError
    from engine.keypoints.pose_model import body_model

    monkeypatch.setenv("STABLEWRAP_KEYPOINT_BACKEND", "onnx")
    with pytest.raises(InputError, match="STABLEWRAP_KEYPOINT_BACKEND='onnx': expected one of auto, mediapipe, litert"):
        body_model()


@needs_mediapipe
@pytest.mark.skipif(not (DATA / "realworld" / "mh_body.obj").is_file(), reason="benchmark data not available")
def test_runner_gives_the_mediapipe_solutions_face_mesh(tmp_path):
    """Views round the MakeHuman template's head through both face-mesh back ends: the same
    faces found (the frontal half of the orbit), all 468 points within a tenth of a pixel."""
    import torch

    from engine.keypoints.detect import detect_keypoints
    from engine.keypoints.litert_models import LiteRTFace
    from engine.keypoints.pose_model import MediaPipeFace
    from engine.mesh import load_mesh
    from engine.render.cameras import orbit_cameras
    from engine.render.raster import rasterize
    from engine.render.shading import shade_lambert

    mesh = load_mesh(DATA / "realworld" / "mh_body.obj").mesh
    kp = detect_keypoints(mesh.vertices, mesh.faces, cache_dir=str(tmp_path))
    ears = kp.point("left_ear"), kp.point("right_ear")
    v, f = torch.as_tensor(mesh.vertices, dtype=torch.float32), torch.as_tensor(mesh.faces, dtype=torch.int64)
    cams = orbit_cameras(8, elevations=(10.0, -10.0), center=(ears[0] + ears[1]) / 2,
                         fit_radius=1.5 * float(np.linalg.norm(ears[0] - ears[1])), up=kp.axis)
    raster = rasterize(v, f, cams, (384, 384), backend="torch")
    images = (shade_lambert(raster, cams, v, f).permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    want, got = MediaPipeFace().detect(images), LiteRTFace().detect(images)
    assert [w is None for w in want] == [g is None for g in got] and sum(g is not None for g in got) >= 3
    for w, g in zip(want, got):
        if w is not None:
            assert w.xy.shape == (468, 2) and np.abs(w.xy - g.xy).max() < 0.1
