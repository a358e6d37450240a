"""The UI path of a job operator: modal() polling the worker, progress state, completion, Esc.

Background mode has no event loop, so the operator's ``modal`` is driven by
hand with synthetic TIMER / ESC events on a stand-in operator object that
shares the real operator's code (the ``_JobOperator`` mixin).
"""
from __future__ import annotations

import time

import pytest

from tests.test_addon_support import (assert_unchanged, bpy, empty_scene, enable_extension, snapshot, suzanne_pair,
                                      use_matcher)


class Event:
    def __init__(self, type_):
        self.type = type_
        self.value = "PRESS"


def _operator(sw, task, job):
    class ModalStub(sw.operator_base.JobOperator):
        bl_label = "Match"

        def __init__(self):
            self.reports = []

        def report(self, level, message):
            self.reports.append((set(level), message))

    op = ModalStub()
    op._task, op._job, op._timer = task, job, None
    state = bpy.context.window_manager.stablewrap_job
    state.running, state.cancel, state.label = True, False, "Match"
    return op


@pytest.fixture
def sw():
    mod = enable_extension()
    empty_scene()
    yield mod
    bpy.context.window_manager.stablewrap_job.running = False
    empty_scene()


def test_modal_reports_progress_and_writes_the_result_when_done(sw):
    use_matcher(sw, "nearest_vertex_match")
    src, tgt = suzanne_pair()
    task = sw.tasks.MatchTask(src, tgt)
    job = sw.engine_env.client().submit(*task.prepare())
    op = _operator(sw, task, job)
    ctx = bpy.context
    assert op.modal(ctx, Event("MOUSEMOVE")) == {"PASS_THROUGH"}  # the UI stays usable
    t0 = time.monotonic()
    ret = {"PASS_THROUGH"}
    stages = set()
    while ret == {"PASS_THROUGH"} and time.monotonic() - t0 < 60:
        ret = op.modal(ctx, Event("TIMER"))
        stages.add(ctx.window_manager.stablewrap_job.stage)
        time.sleep(0.02)
    assert ret == {"FINISHED"}
    assert not ctx.window_manager.stablewrap_job.running
    assert "sw_target_face" in src.data.attributes and "StableWrap fit" in src.data.shape_keys.key_blocks
    assert op.reports and op.reports[-1][1].startswith("Matched")


@pytest.mark.parametrize("how", ["esc", "button"])
def test_modal_cancel_leaves_the_scene_unchanged(sw, how):
    use_matcher(sw, "slow_match")
    src, tgt = suzanne_pair()
    before_s, before_t = snapshot(src), snapshot(tgt)
    task = sw.tasks.MatchTask(src, tgt)
    job = sw.engine_env.client().submit(*task.prepare())
    op = _operator(sw, task, job)
    ctx = bpy.context
    t0 = time.monotonic()
    while job.stage != "register" and time.monotonic() - t0 < 30:
        assert op.modal(ctx, Event("TIMER")) == {"PASS_THROUGH"}
        time.sleep(0.02)
    assert ctx.window_manager.stablewrap_job.stage == "register"
    if how == "esc":
        ret = op.modal(ctx, Event("ESC"))
    else:
        assert bpy.ops.stablewrap.cancel() == {"FINISHED"}
        ret = op.modal(ctx, Event("TIMER"))
    assert ret == {"CANCELLED"}
    assert "cancelled" in op.reports[-1][1]
    assert not ctx.window_manager.stablewrap_job.running
    with pytest.raises(sw.WorkerError) as err:
        job.wait(timeout=10)
    assert err.value.type == "Cancelled"
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)


def test_a_large_mesh_is_announced_before_the_wait(sw):
    src, tgt = suzanne_pair()
    small = sw.tasks.MatchTask(src, tgt)
    small.prepare()
    assert not getattr(small, "start_note", "")
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=229, y_subdivisions=229, size=2.0)
    grid = bpy.context.object
    task = sw.tasks.MatchTask(src, grid)
    task.prepare()
    n = len(grid.data.vertices)
    assert n >= sw.tasks.LARGE_MESH_VERTICES
    assert task.start_note.startswith(f"large mesh (target {n:,} vertices): matched on decimated working copies")


def test_match_asks_for_z_up_semantic_renders(sw):
    """Blender sends Z-up world coordinates: the semantic features' orbit must turn about Z, and
    the engine's config check accepts the request as sent."""
    src, tgt = suzanne_pair()
    cmd, args, _ = sw.tasks.MatchTask(src, tgt).prepare()
    assert cmd == "match" and args["config"] == {"semantic": {"up": "z"}}
    from engine.config import load_config

    assert load_config(args["config"]).feature_config()["semantic"]["up"] == "z"


def test_the_panels_orientation_reaches_the_engine(sw):
    """'As in scene' (both objects upright, facing the same way) is sent as orientation "as-is";
    Auto sends nothing (an older engine knows no such argument)."""
    import bpy

    src, tgt = suzanne_pair()
    _, args, _ = sw.tasks.MatchTask(src, tgt).prepare()
    assert "orientation" not in args
    _, args, _ = sw.tasks.MatchTask(src, tgt, orientation="as-is").prepare()
    assert args["orientation"] == "as-is" and "keypoints" not in args
    _, args, _ = sw.tasks.MatchTask(src, tgt, keypoints="off").prepare()  # the verdict box's "Keypoints Off"
    assert args["keypoints"] == "off"
    way = bpy.ops.stablewrap.match.get_rna_type().properties["way"]
    assert {i.identifier for i in way.enum_items} == {"PANEL", "AS_IS", "NO_KEYPOINTS"} and way.default == "PANEL"
    prop = bpy.context.scene.stablewrap.bl_rna.properties["orientation"]
    assert {i.identifier for i in prop.enum_items} == {"auto", "as-is"} and prop.default == "auto"
    from engine.pipeline import ORIENTATIONS

    assert set(ORIENTATIONS) == {"auto", "as-is"}


def test_the_panels_skin_group_reaches_the_engine_and_an_empty_one_is_refused(sw):
    """The source's vertex group named as Skin is sent as the engine's ``skin`` mask; a group
    holding no vertex is a one-line error before any work; none set sends nothing."""
    import bpy
    import numpy as np

    src, tgt = suzanne_pair()
    _, _, arrays = sw.tasks.MatchTask(src, tgt).prepare()
    assert "skin" not in arrays
    group = src.vertex_groups.new(name="Skin")
    group.add(list(range(10)), 1.0, "REPLACE")
    _, _, arrays = sw.tasks.MatchTask(src, tgt, skin_group="Skin").prepare()
    assert arrays["skin"].dtype == bool and np.nonzero(arrays["skin"])[0].tolist() == list(range(10))
    src.vertex_groups.new(name="Nothing")
    with pytest.raises(sw.tasks.TaskError, match="skin group 'Nothing' holds no vertex"):
        sw.tasks.MatchTask(src, tgt, skin_group="Nothing").prepare()
    assert "skin_group" in bpy.context.scene.stablewrap.bl_rna.properties
    lines = sw.tasks.riding_lines({"riding": [{"piece": 3, "kind": "inside", "carried": "rigid", "vertices": 72,
                                               "centre": [0.01, 1.6, 0.05]}]})
    assert lines == ["piece 3: inside, carried rigid (72 vertices at 0.01, 1.6, 0.05)"]


def test_a_rigged_target_is_matched_in_the_pose_shown_or_at_rest_by_choice(sw):
    """A target an armature deforms is sent in the pose the viewport shows (its evaluated mesh),
    or at rest with Rest pose; the report says which."""
    import numpy as np

    use_matcher(sw, "nearest_vertex_match")
    src, tgt = suzanne_pair()
    arm = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    bone = arm.data.edit_bones.new("root")
    bone.head, bone.tail = (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    bpy.ops.object.mode_set(mode="OBJECT")
    group = tgt.vertex_groups.new(name="root")
    group.add(list(range(len(tgt.data.vertices))), 1.0, "REPLACE")
    tgt.modifiers.new("Armature", "ARMATURE").object = arm
    arm.pose.bones["root"].rotation_mode = "XYZ"
    arm.pose.bones["root"].rotation_euler = (0.0, 0.0, 1.2)  # turned 69 degrees about Z
    bpy.context.view_layer.update()
    rest = np.array([tuple(tgt.matrix_world @ v.co) for v in tgt.data.vertices])
    task = sw.tasks.MatchTask(src, tgt)
    _, _, arrays = task.prepare()
    assert np.abs(arrays["tgt_vertices"] - rest).max() > 0.1 and "in the pose shown (armature 'Rig'" in task.pose_note
    task = sw.tasks.MatchTask(src, tgt, rest_pose=True)
    _, _, arrays = task.prepare()
    assert np.allclose(arrays["tgt_vertices"], rest, atol=1e-5) and "in its rest pose" in task.pose_note
    message = sw.match(src, tgt, timeout=60)
    assert "target 'Target' matched in the pose shown" in message
