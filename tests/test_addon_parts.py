"""Match Part and Pick from Image in the extension: vertex group -> target group, image click -> selection.

Runs under the bpy wheel with the real engine worker (this venv's Python).
Pick from Image needs DINOv2, which no test has: its error path is checked
with the real worker, its success path with the worker's test-only tiny
backbone (``STABLEWRAP_TEST_TINY_BACKBONE=1``, random features) against the
engine called directly on the same arrays.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.test_addon_support import (assert_unchanged, bpy, empty_scene, enable_extension, snapshot, suzanne_pair,
                                      use_matcher)

import engine.parts  # noqa: F401  (the engine's own module: an import error fails, not skips)


@pytest.fixture
def sw():
    mod = enable_extension()
    use_matcher(mod, None)  # the real engine
    empty_scene()
    yield mod
    bpy.context.window_manager.stablewrap_job.running = False
    empty_scene()
    for img in list(bpy.data.images):
        bpy.data.images.remove(img)


def _positions(obj):
    return np.array([v.co[:] for v in obj.data.vertices])


def _add_group(obj, name, mask):
    g = obj.vertex_groups.new(name=name)
    idx = np.nonzero(mask)[0].tolist()
    if idx:
        g.add(idx, 1.0, "REPLACE")
    return g


def _group_members(obj, name):
    gi = obj.vertex_groups[name].index
    return np.array(sorted(v.index for v in obj.data.vertices for ge in v.groups if ge.group == gi and ge.weight > 0.5))


def _selected(obj):
    sel = np.zeros(len(obj.data.vertices), bool)
    obj.data.vertices.foreach_get("select", sel)
    return np.nonzero(sel)[0]


def _ear_pair():
    src, tgt = suzanne_pair(remesh=None, bend=0.3)
    _add_group(src, "Ear.L", _positions(src)[:, 0] > 0.9)
    return src, tgt


def test_match_part_operator_writes_the_target_group_and_selection(sw):
    src, tgt = _ear_pair()
    before = snapshot(src)
    assert bpy.ops.stablewrap.match_part(source=src.name, target=tgt.name, group="Ear.L") == {"FINISHED"}
    assert "Ear.L" in tgt.vertex_groups
    members = _group_members(tgt, "Ear.L")
    assert 0 < len(members) < len(tgt.data.vertices)
    np.testing.assert_array_equal(_selected(tgt), members)
    # the target is the same mesh (only bent and moved): the ear lands on the same side
    assert np.mean(_positions(tgt)[members, 0] > 0.5) > 0.7
    assert bpy.context.scene.stablewrap.last_report.startswith("Matched 'Ear.L'")
    assert_unchanged(before, src)
    # the headless API with another target group name; Clear removes what it wrote
    msg = sw.match_part(src, tgt, "Ear.L", new_group="Ear (matched)", select=False)
    assert "'Ear (matched)'" in msg
    np.testing.assert_array_equal(_group_members(tgt, "Ear (matched)"), members)
    sw.clear(src, tgt)
    assert "Ear.L" not in tgt.vertex_groups and "Ear (matched)" not in tgt.vertex_groups


@pytest.mark.parametrize("case, message", [("empty", "is empty"), ("whole", "covers the whole"),
                                           ("missing", "has no vertex group 'Nope'"), ("unnamed", "pick a vertex group")])
def test_match_part_bad_group_is_reported_and_changes_nothing(sw, case, message):
    src, tgt = suzanne_pair(remesh=None, bend=0.0)
    n = len(src.data.vertices)
    if case == "empty":
        _add_group(src, "G", np.zeros(n, bool))
    elif case == "whole":
        _add_group(src, "G", np.ones(n, bool))
    group = {"missing": "Nope", "unnamed": ""}.get(case, "G")
    before_s, before_t = snapshot(src), snapshot(tgt)
    with pytest.raises(sw.TaskError, match=message):
        sw.match_part(src, tgt, group)
    with pytest.raises(RuntimeError, match=message):  # an ERROR report surfaces as RuntimeError in scripts
        bpy.ops.stablewrap.match_part(source=src.name, target=tgt.name, group=group)
    report = bpy.context.scene.stablewrap.last_report
    assert report.startswith("Match Part: ") and message in report and "\n" not in report
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)


def test_no_match_reply_is_a_clear_warning_and_changes_nothing(sw):
    src, tgt = _ear_pair()
    before = snapshot(tgt)
    task = sw.tasks.MatchPartTask(src, tgt, "Ear.L")
    task.prepare()
    reply = {"target_vertices": np.zeros(0, np.int32), "bsb_vertex": np.int32(-1), "score": np.float32(0)}
    with pytest.raises(sw.NoMatch, match="no match: 'Ear.L' has no counterpart on 'Target'; nothing was changed"):
        task.apply({"matched": False}, reply)
    assert sw.operator_base.message_level(sw.NoMatch("x")) == "WARNING"
    assert_unchanged(before, tgt)
    assert len(_selected(tgt)) == len(tgt.data.vertices)  # the primitive's selection is untouched
    bad = dict(reply, bsb_vertex=np.int32(0), target_vertices=np.array([10 ** 6], np.int32))
    with pytest.raises(sw.TaskError, match="outside 'Target'"):
        task.apply({}, bad)
    assert_unchanged(before, tgt)


def _reference_image(name="ref"):
    """60x40 RGBA: an opaque two-coloured block on a transparent background (row 0 of the array = top)."""
    px = np.zeros((40, 60, 4), np.float32)
    px[10:30, 10:50] = [0.8, 0.3, 0.3, 1.0]
    px[10:30, 30:50, :3] = [0.2, 0.4, 0.9]
    img = bpy.data.images.new(name, 60, 40, alpha=True, float_buffer=True)
    img.pixels.foreach_set(px[::-1].reshape(-1))  # Blender stores the bottom row first
    return img, px


def test_image_pixels_are_read_top_row_first(sw):
    img, px = _reference_image()
    np.testing.assert_allclose(sw.tasks.read_image_rgba(img), px, atol=1e-6)


@pytest.mark.parametrize("x, y, message", [(70, 5, "outside the 60x40 image 'ref'"), (5, -1, "outside the 60x40"),
                                           (2, 2, "transparent background")])
def test_pick_from_image_bad_click_is_reported_and_changes_nothing(sw, x, y, message):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8)
    tgt = bpy.context.object
    img, _ = _reference_image()
    before = snapshot(tgt)
    with pytest.raises(sw.TaskError, match=message):
        sw.pick_from_image(tgt, img, x, y)
    with pytest.raises(RuntimeError, match="Pick from Image: "):
        bpy.ops.stablewrap.pick_from_image(target=tgt.name, image="ref", x=x, y=y)
    report = bpy.context.scene.stablewrap.last_report
    assert report.startswith("Pick from Image: ") and ("outside" in report or message in report)
    with pytest.raises(sw.TaskError, match="image 'nope' not found"):
        sw.pick_from_image(tgt, "nope", 20, 15)
    assert_unchanged(before, tgt)


def test_pick_from_image_without_dino_reports_backend_unavailable(sw):
    from engine.features import semantic

    if semantic.available("dino")[0]:
        pytest.skip("DINOv2 is installed here; the missing-model path cannot be exercised")
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8)
    tgt = bpy.context.object
    _reference_image()
    before = snapshot(tgt)
    with pytest.raises(sw.WorkerError) as err:
        sw.pick_from_image(tgt, "ref", 20, 15)
    assert err.value.type == "BackendUnavailable" and "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match="Pick from Image: "):
        bpy.ops.stablewrap.pick_from_image(target=tgt.name, image="ref", x=20, y=15)
    assert bpy.context.scene.stablewrap.last_report == f"Pick from Image: {err.value}"
    assert_unchanged(before, tgt)


def test_pick_from_image_with_the_tiny_test_backbone_selects_what_the_engine_finds(sw):
    from engine.features.testing import tiny_backbones
    from engine.parts import match_image_part
    from engine.parts.distill import DistillSettings

    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, location=(1, 0, 0))
    tgt = bpy.context.object
    img, px = _reference_image()
    arrays = sw.mesh_io.read_mesh(tgt, "target")
    ref = match_image_part(px, (arrays.world_vertices(), arrays.triangles), click=(20, 15),
                           backbone=tiny_backbones("dino").dino, views=2, resolution=32, grid=16, cache_dir=False,
                           distill_settings=DistillSettings(layers=2, width=16, n_freqs=2, steps=5))
    before = snapshot(tgt)
    os.environ["STABLEWRAP_TEST_TINY_BACKBONE"] = "1"
    sw.stop_engine()
    try:
        if ref.matched:
            msg = sw.pick_from_image(tgt, img, 20, 15, new_group="Picked")
            assert msg.startswith("Matched the clicked part of 'ref'")
            np.testing.assert_array_equal(_selected(tgt), np.sort(ref.target_vertices))
            np.testing.assert_array_equal(_group_members(tgt, "Picked"), np.sort(ref.target_vertices))
        else:
            with pytest.raises(sw.NoMatch):
                sw.pick_from_image(tgt, img, 20, 15, new_group="Picked")
            assert_unchanged(before, tgt)
    finally:
        os.environ.pop("STABLEWRAP_TEST_TINY_BACKBONE", None)
        sw.stop_engine()


def test_parts_panels_draw(sw):
    from tests.test_addon_panels import _draw

    ctx = bpy.context
    for name in ("STABLEWRAP_PT_parts", "STABLEWRAP_PT_image_pick"):
        _draw(getattr(bpy.types, name), ctx)  # empty scene
    src, tgt = _ear_pair()
    s = ctx.scene.stablewrap
    s.source, s.target = src, tgt
    log = _draw(bpy.types.STABLEWRAP_PT_parts, ctx)
    assert ("prop_search", "part_group") in log and ("operator", "stablewrap.match_part") in log
    assert ("operator", "stablewrap.pick_from_image") in _draw(bpy.types.STABLEWRAP_PT_image_pick, ctx)


class _Event:
    def __init__(self, type_, value="PRESS", x=0, y=0):
        self.type, self.value, self.mouse_region_x, self.mouse_region_y = type_, value, x, y


def _image_editor_context(image, scale=10.0):
    """A stand-in context of an Image Editor showing ``image`` with 1 view unit = ``scale`` * size region pixels."""
    class View2D:
        def region_to_view(self, x, y):
            return x / (scale * image.size[0]), y / (scale * image.size[1])

    area = type("Area", (), {"type": "IMAGE_EDITOR", "header_text_set": lambda self, text: None})()
    return type("Ctx", (), {"area": area, "space_data": type("Space", (), {"image": image})(),
                            "region": type("Region", (), {"view2d": View2D()})(), "scene": bpy.context.scene})()


def test_image_editor_click_converts_to_top_left_pixels_and_rejects_outside_clicks(sw):
    img, _ = _reference_image()
    ctx = _image_editor_context(img)
    # region (200, 350) -> view (1/3, 0.875) -> pixel column 20, row 40 * 0.125 = 5 from the top
    hit = sw.operators.image_editor_pixel(ctx, _Event("LEFTMOUSE", x=200, y=350))
    assert hit[0] == img and hit[1] == pytest.approx(20.0) and hit[2] == pytest.approx(5.0)

    class PickStub(sw.operator_base.JobOperator):
        bl_label = "Pick from Image"
        _picking = True

        def __init__(self):
            self.reports = []

        def report(self, level, message):
            self.reports.append((set(level), message))

    modal = sw.operators.STABLEWRAP_OT_pick_from_image.modal
    op = PickStub()
    assert modal(op, ctx, _Event("MOUSEMOVE")) == {"RUNNING_MODAL"}  # waits for the click
    assert modal(op, ctx, _Event("LEFTMOUSE", x=700, y=100)) == {"CANCELLED"}
    assert op.reports[-1] == ({"ERROR"}, "Pick from Image: click (70, 30) is outside the 60x40 image 'ref'")
    op = PickStub()
    assert modal(op, ctx, _Event("ESC")) == {"CANCELLED"}
    assert op.reports[-1][0] == {"WARNING"} and "cancelled" in op.reports[-1][1]
