"""Detect Landmarks in the extension: named landmark pairs from the real pose model on two generated figures.

Runs under the bpy wheel with the real engine worker (this venv's Python); the
detections are cached in a temporary folder (``STABLEWRAP_CACHE``).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

from engine.keypoints.pose_model import keypoints_status
from tests.test_addon_support import bpy, empty_scene, enable_extension, world

pytestmark = pytest.mark.skipif(not keypoints_status()[0], reason="no keypoint back end installed")


@pytest.fixture(scope="module")
def sw(tmp_path_factory):
    mod = enable_extension()
    old = os.environ.get("STABLEWRAP_CACHE")
    os.environ["STABLEWRAP_CACHE"] = str(tmp_path_factory.mktemp("sw-cache"))
    mod.stop_engine()  # the next job starts a worker that sees the cache folder
    yield mod
    mod.stop_engine()
    if old is None:
        os.environ.pop("STABLEWRAP_CACHE", None)
    else:
        os.environ["STABLEWRAP_CACHE"] = old


@pytest.fixture
def figures(sw):
    empty_scene()
    src = _figure("Template", {}, (0.0, 0.0, 0.0))
    tgt = _figure("Scan", {"left_arm_raise_deg": 60.0}, (2.0, 0.5, 0.0))
    yield src, tgt
    bpy.context.window_manager.stablewrap_job.running = False
    empty_scene()


def _figure(name, pose, location):
    """The generated clay figure (Y up, facing +Z) stood up in Blender's Z-up world: facing -Y, left = +X."""
    from engine.samples import humanoid

    v, f = humanoid(**pose)
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(v.tolist(), [], f.tolist())
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.collection.objects.link(obj)
    obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
    obj.location = location
    bpy.context.view_layer.update()
    return obj


def _cube(name="Crate"):
    bpy.ops.mesh.primitive_cube_add(location=(-3.0, 0.0, 1.0))
    obj = bpy.context.object
    obj.name = name
    return obj


def _pairs(src, tgt=None):
    return [(lm.name, lm.source_vertex, lm.target_vertex, lm.target.name if lm.target else None, lm.detected,
             round(lm.confidence, 6)) for lm in src.stablewrap.landmarks if tgt is None or lm.target == tgt]


def _vertex_world(obj, i):
    return world(obj, np.array([obj.data.vertices[i].co[:]]))[0]


def test_detect_fills_named_pairs_keeps_manual_ones_and_does_not_duplicate(sw, figures):
    src, tgt = figures
    assert sw.add_landmark(src, tgt, 7, 11) == 1  # a pair added by hand
    assert bpy.ops.stablewrap.landmarks_detect(source=src.name, target=tgt.name) == {"FINISHED"}
    pairs = _pairs(src, tgt)
    manual = [p for p in pairs if not p[4]]
    detected = {p[0]: p for p in pairs if p[4]}
    assert manual == [("", 7, 11, "Scan", False, 1.0)]
    assert len(detected) == len(pairs) - 1 >= 15
    assert {"left_wrist", "right_wrist", "left_knee", "right_knee", "nose"} <= set(detected)
    assert all(0.2 < p[5] <= 1.0 for p in detected.values())
    # left is +X on both figures (world space: the objects are rotated and moved)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        _, sv, tv, *_ = detected[f"{side}_wrist"]
        assert sign * _vertex_world(src, sv)[0] > 0.05 and sign * (_vertex_world(tgt, tv)[0] - 2.0) > 0.05
    assert _vertex_world(tgt, detected["left_wrist"][2])[2] > _vertex_world(src, detected["left_wrist"][1])[2] + 0.15
    report = bpy.context.scene.stablewrap.last_report
    assert report.startswith("Detected") and "(1 added by hand kept)" in report and "\n" not in report
    # the list shows the keypoint names
    label = []
    sw.panels.STABLEWRAP_UL_landmarks.draw_item(
        None, None, type("Layout", (), {"label": lambda self, text, icon: label.append((text, icon))})(),
        None, src.stablewrap.landmarks[1], 0, None, None, 1)
    assert src.stablewrap.landmarks[1].name in label[0][0] and label[0][1] == "ARMATURE_DATA"
    # Match sends every pair, detected and manual, as landmarks
    _, _, arrays = sw.tasks.MatchTask(src, tgt).prepare()
    np.testing.assert_array_equal(arrays["landmarks"], [[p[1], p[2]] for p in pairs])
    # again (cached detections): the detected pairs are replaced, not added; the manual pair stays first
    sw.add_landmark(src, tgt, 3, 4)
    assert sw.detect_landmarks(src, tgt).startswith("Detected")
    again = _pairs(src, tgt)
    assert [p for p in again if not p[4]] == manual + [("", 3, 4, "Scan", False, 1.0)]
    assert sorted(p for p in again if p[4]) == sorted(detected.values())
    assert again[0] == manual[0]


def test_detect_is_one_undo_step(sw, figures):
    src, tgt = figures
    sw.add_landmark(src, tgt, 7, 11)
    bpy.ops.ed.undo_push(message="before detect")
    assert bpy.ops.stablewrap.landmarks_detect("EXEC_DEFAULT", True, source=src.name, target=tgt.name) == {"FINISHED"}
    assert len(bpy.data.objects["Template"].stablewrap.landmarks) > 10
    bpy.ops.ed.undo()
    assert _pairs(bpy.data.objects["Template"]) == [("", 7, 11, "Scan", False, 1.0)]


def test_a_target_without_a_body_leaves_the_list_unchanged(sw, figures):
    src, tgt = figures
    sw.add_landmark(src, tgt, 7, 11)
    assert sw.detect_landmarks(src, tgt).startswith("Detected")
    crate = _cube()
    sw.add_landmark(src, crate, 1, 2)
    before = _pairs(src)
    with pytest.raises(RuntimeError, match="no body found on the target mesh 'Crate'"):
        bpy.ops.stablewrap.landmarks_detect(source=src.name, target=crate.name)
    assert _pairs(src) == before
    report = bpy.context.scene.stablewrap.last_report
    assert report.startswith("Detect Landmarks: keypoints: no body found") and "\n" not in report
    assert not bpy.context.window_manager.stablewrap_job.running
    with pytest.raises(sw.WorkerError) as err:
        sw.detect_landmarks(src, crate)
    assert err.value.type == "InputError"
    assert _pairs(src) == before


def test_modal_detect_esc_leaves_the_list_unchanged(sw, figures):
    from tests.test_addon_modal import Event, _operator

    src, _ = figures
    tgt = _figure("Kneeling", {"right_knee_bend_deg": 30.0}, (-2.0, 0.0, 0.0))  # not cached: detection runs
    sw.add_landmark(src, tgt, 7, 11)
    before = _pairs(src)
    task = sw.tasks.DetectLandmarksTask(src, tgt)
    job = sw.engine_env.client().submit(*task.prepare())
    op = _operator(sw, task, job)
    ctx = bpy.context
    t0 = time.monotonic()
    while job.stage != "keypoints" and time.monotonic() - t0 < 60:
        assert op.modal(ctx, Event("TIMER")) == {"PASS_THROUGH"}
        time.sleep(0.02)
    assert op.modal(ctx, Event("ESC")) == {"CANCELLED"}
    assert "cancelled" in op.reports[-1][1]
    assert not ctx.window_manager.stablewrap_job.running
    with pytest.raises(sw.WorkerError) as err:
        job.wait(timeout=60)
    assert err.value.type == "Cancelled"
    assert _pairs(src) == before


def test_detect_operator_is_in_the_landmarks_panel(sw):
    assert hasattr(bpy.ops.stablewrap, "landmarks_detect")
    assert bpy.types.STABLEWRAP_OT_landmarks_detect.bl_label == "Detect Landmarks"
    import inspect

    assert '"stablewrap.landmarks_detect"' in inspect.getsource(sw.panels.STABLEWRAP_PT_landmarks.draw)
