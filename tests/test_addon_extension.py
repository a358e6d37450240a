"""The Blender extension under the bpy 5.0.1 wheel, driven headless with a stand-in matcher.

What lands in the mesh data after each operator, undo, and that failed,
cancelled or refused jobs leave the scene as it was.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.test_addon_support import (MODULE, assert_unchanged, bpy, empty_scene, enable_extension, snapshot,
                                      suzanne_pair, use_matcher, world)

addon_utils = importlib.import_module("addon_utils")


@pytest.fixture(scope="module")
def sw():
    mod = enable_extension()
    use_matcher(mod, "nearest_vertex_match")
    yield mod
    mod.stop_engine()


@pytest.fixture
def pair(sw):
    use_matcher(sw, "nearest_vertex_match")
    empty_scene()
    src, tgt = suzanne_pair()
    yield src, tgt
    empty_scene()


def _attr(mesh, name):
    a = mesh.attributes[name]
    key = {"INT": "value", "FLOAT": "value", "FLOAT_VECTOR": "vector", "FLOAT_COLOR": "color"}[a.data_type]
    width = {"INT": 1, "FLOAT": 1, "FLOAT_VECTOR": 3, "FLOAT_COLOR": 4}[a.data_type]
    buf = np.empty(len(a.data) * width, np.int32 if a.data_type == "INT" else np.float32)
    a.data.foreach_get(key, buf)
    return a, buf.reshape(len(a.data), -1) if width > 1 else buf


def _tris(mesh):
    mesh.calc_loop_triangles()
    t = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", t)
    return t.reshape(-1, 3)


def _positions(mesh):
    p = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", p)
    return p.reshape(-1, 3)


def _key(obj, name):
    k = obj.data.shape_keys.key_blocks[name]
    p = np.empty(len(k.points) * 3, np.float32)
    k.points.foreach_get("co", p)
    return k, p.reshape(-1, 3)


def test_register_unregister_cleanly(sw):
    assert hasattr(bpy.types.Scene, "stablewrap") and hasattr(bpy.types.Object, "stablewrap")
    for op in ("match", "transfer_uvs", "bake_texture", "transfer_weights", "make_morph", "clear"):
        assert hasattr(bpy.ops.stablewrap, op)
        assert "source" in getattr(bpy.ops.stablewrap, op).get_rna_type().properties.keys()
    assert hasattr(bpy.types, "STABLEWRAP_PT_main")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    assert prefs.python_mode == "MANAGED"
    addon_utils.disable(MODULE, default_set=True)
    try:
        assert not hasattr(bpy.types.Scene, "stablewrap")
        assert not hasattr(bpy.types, "STABLEWRAP_PT_main")
        assert MODULE not in bpy.context.preferences.addons
    finally:
        addon_utils.enable(MODULE, default_set=True, handle_error=None)
    assert hasattr(bpy.types.Scene, "stablewrap")


def test_match_writes_attributes_shape_key_and_colors(sw, pair):
    src, tgt = pair
    src.scale = (0.9, 1.0, 1.2)  # transforms on both sides
    bpy.context.view_layer.update()
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    ns, nt = len(src.data.vertices), len(tgt.data.vertices)
    mt = len(_tris(tgt.data))
    a, face = _attr(src.data, "sw_target_face")
    assert (a.data_type, a.domain, face.shape) == ("INT", "POINT", (ns,))
    assert face.min() >= 0 and face.max() < mt
    a, bary = _attr(src.data, "sw_target_bary")
    assert (a.data_type, bary.shape) == ("FLOAT_VECTOR", (ns, 3))
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-5)
    a, conf = _attr(src.data, "sw_confidence")
    assert (a.data_type, conf.shape) == ("FLOAT", (ns,)) and conf.min() >= 0 and conf.max() <= 1
    a, tface = _attr(tgt.data, "sw_source_face")
    assert tface.shape == (nt,) and tface.max() < len(_tris(src.data))
    _, tbary = _attr(tgt.data, "sw_source_bary")
    assert tbary.shape == (nt, 3)
    for obj in (src, tgt):
        a, col = _attr(obj.data, "sw_correspondence")
        assert (a.data_type, a.domain) == ("FLOAT_COLOR", "POINT") and col.shape == (len(obj.data.vertices), 4)
        assert obj.data.color_attributes.active_color.name == "sw_correspondence"
    # the fit key: source topology, in the source's local space, lying on the target (world space)
    key, fit = _key(src, "StableWrap fit")
    assert key.value == 1.0 and fit.shape == (ns, 3)
    fit_w = world(src, fit)
    tgt_w = world(tgt, _positions(tgt.data))
    on_target = np.einsum("nk,nkc->nc", bary, tgt_w[_tris(tgt.data)[face]])
    np.testing.assert_allclose(fit_w, on_target, atol=1e-4)
    # the basis stays the source shape
    _, basis = _key(src, "Basis")
    np.testing.assert_allclose(basis, _positions(src.data))
    assert src.stablewrap.matched_with == tgt
    assert "Matched 'Source' to 'Target'" in bpy.context.scene.stablewrap.last_report


def test_match_uses_panel_pickers_and_selection(sw, pair):
    src, tgt = pair
    # selection: active = target
    bpy.ops.object.select_all(action="DESELECT")
    src.select_set(True)
    tgt.select_set(True)
    bpy.context.view_layer.objects.active = tgt
    assert bpy.ops.stablewrap.match() == {"FINISHED"}
    assert "sw_target_face" in src.data.attributes and "sw_source_face" in tgt.data.attributes
    bpy.ops.stablewrap.clear()
    assert "sw_target_face" not in src.data.attributes
    # pickers win over the selection
    s = bpy.context.scene.stablewrap
    s.source, s.target = tgt, src
    assert bpy.ops.stablewrap.match(quality="fast") == {"FINISHED"}
    assert "sw_target_face" in tgt.data.attributes


def test_undo_restores_the_meshes(sw, pair):
    src, tgt = pair
    before_s, before_t = snapshot(src), snapshot(tgt)
    bpy.ops.ed.undo_push(message="before match")
    # (exec context, undo=True): push the operator's undo step as a click in the UI does
    assert bpy.ops.stablewrap.match("EXEC_DEFAULT", True, source=src.name, target=tgt.name) == {"FINISHED"}
    assert "sw_target_face" in bpy.data.objects["Source"].data.attributes
    bpy.ops.ed.undo()  # one step undoes everything the match wrote
    src, tgt = bpy.data.objects["Source"], bpy.data.objects["Target"]
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)
    bpy.ops.ed.redo()
    src = bpy.data.objects["Source"]
    assert "sw_target_face" in src.data.attributes and "StableWrap fit" in src.data.shape_keys.key_blocks


def test_failed_job_changes_nothing(sw, pair):
    src, tgt = pair
    before_s, before_t = snapshot(src), snapshot(tgt)
    use_matcher(sw, "failing_match")
    with pytest.raises(RuntimeError, match="target: mesh has no faces"):
        bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)
    assert "mesh has no faces" in bpy.context.scene.stablewrap.last_report
    assert not bpy.context.window_manager.stablewrap_job.running


def test_cancelled_job_changes_nothing(sw, pair):
    src, tgt = pair
    before_s, before_t = snapshot(src), snapshot(tgt)
    use_matcher(sw, "slow_match")
    stages = []

    def progress(stage, fraction):
        stages.append(stage)
        return stage != "register"  # cancel as soon as registration starts

    with pytest.raises(sw.WorkerError) as err:
        sw.match(src, tgt, progress=progress, timeout=30)
    assert err.value.type == "Cancelled"
    assert "register" in stages
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)


def test_worker_crash_is_reported_and_the_next_job_restarts_it(sw, pair):
    src, tgt = pair
    before_s = snapshot(src)
    use_matcher(sw, "crashing_match")
    with pytest.raises(sw.WorkerError) as err:
        sw.match(src, tgt, timeout=60)
    assert err.value.type == "WorkerDied" and "stopped unexpectedly" in err.value.message
    assert_unchanged(before_s, src)
    use_matcher(sw, "nearest_vertex_match")
    assert sw.match(src, tgt).startswith("Matched")


@pytest.mark.parametrize("case", ["same", "camera", "no_faces", "missing_python", "broken_python"])
def test_bad_input_is_refused_with_a_clear_message(sw, pair, case, tmp_path, monkeypatch):
    src, tgt = pair
    before = snapshot(src)
    other = tgt
    if case == "same":
        other, expect = src, "same object"
    elif case == "camera":
        bpy.ops.object.camera_add()
        other, expect = bpy.context.object, "not a mesh"
    elif case == "no_faces":
        mesh = bpy.data.meshes.new("points")
        mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [])
        other = bpy.data.objects.new("Points", mesh)
        bpy.context.collection.objects.link(other)
        expect = "has no faces"
    elif case == "missing_python":
        monkeypatch.setenv("STABLEWRAP_ENGINE_PYTHON", str(tmp_path / "nope" / "python"))
        expect = "engine Python not found"
    else:
        fake = tmp_path / "python"
        fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named engine' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv("STABLEWRAP_ENGINE_PYTHON", str(fake))
        expect = "No module named engine"
    with pytest.raises(RuntimeError, match=expect):
        bpy.ops.stablewrap.match(source=src.name, target=other.name)
    assert_unchanged(before, src)
    sw.stop_engine()


def test_existing_shape_keys_are_kept(sw, pair):
    src, tgt = pair
    src.shape_key_add(name="Basis", from_mix=False)
    smile = src.shape_key_add(name="Smile", from_mix=False)
    smile.value = 0.3
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    names = [k.name for k in src.data.shape_keys.key_blocks]
    assert names == ["Basis", "Smile", "StableWrap fit"]
    assert src.data.shape_keys.key_blocks["Smile"].value == pytest.approx(0.3)
    # what Blender shows is not the fit alone: the report says why
    report = bpy.context.scene.stablewrap.last_report
    assert "Blender shows the fit with the source's shape key 'Smile' on top" in report
    smile.value = 0.0
    src.modifiers.new("Bend it", "SIMPLE_DEFORM")
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    report = bpy.context.scene.stablewrap.last_report
    assert "the fit with the source's modifier 'Bend it' on top" in report and "Smile" not in report
    src.modifiers.remove(src.modifiers["Bend it"])
    # running it again replaces the fit instead of stacking keys
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    assert [k.name for k in src.data.shape_keys.key_blocks] == names
    bpy.ops.stablewrap.clear(source=src.name, target=tgt.name)
    assert [k.name for k in src.data.shape_keys.key_blocks] == ["Basis", "Smile"]


def test_clear_removes_everything_written(sw, pair):
    src, tgt = pair
    before_s, before_t = snapshot(src), snapshot(tgt)
    vg = src.vertex_groups.new(name="Head")
    vg.add(list(range(50)), 1.0, "REPLACE")
    before_t["groups"] = []
    before_s = snapshot(src)
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name)
    bpy.ops.stablewrap.transfer_weights(source=src.name, target=tgt.name)
    assert bpy.ops.stablewrap.clear(source=src.name, target=tgt.name) == {"FINISHED"}
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)


def test_a_new_match_removes_what_the_old_map_made_and_says_so(sw, pair):
    """Morph keys, the transferred UV map and weights come from a map: a new Match removes them
    (the morph slider no longer adds the old fit to the new one) and names them in its report."""
    src, tgt = pair
    vg = src.vertex_groups.new(name="Head")
    vg.add(list(range(50)), 1.0, "REPLACE")
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name)
    bpy.ops.stablewrap.transfer_weights(source=src.name, target=tgt.name)
    bpy.ops.stablewrap.make_morph(source=src.name)
    morphs = [k.name for k in src.data.shape_keys.key_blocks if k.name.startswith(sw.tasks.MORPH_PREFIX)]
    assert morphs and "StableWrap UV" in tgt.data.uv_layers and "Head" in tgt.vertex_groups
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    report = bpy.context.scene.stablewrap.last_report
    assert not [k.name for k in src.data.shape_keys.key_blocks if k.name.startswith(sw.tasks.MORPH_PREFIX)]
    assert "StableWrap UV" not in tgt.data.uv_layers and "Head" not in tgt.vertex_groups
    assert "Head" in src.vertex_groups  # the artist's own group stays
    assert "removed the previous map's results" in report and f"{len(morphs)} morph keys" in report
    assert "StableWrap UV" in report and "1 vertex group" in report


def test_edit_mode_objects_are_read_and_written(sw, pair):
    src, tgt = pair
    bpy.ops.object.select_all(action="DESELECT")
    tgt.select_set(True)
    bpy.context.view_layer.objects.active = tgt
    bpy.ops.object.mode_set(mode="EDIT")
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    assert tgt.mode == "EDIT"
    bpy.ops.object.mode_set(mode="OBJECT")  # leaving edit mode must not wipe the results
    assert "sw_source_face" in tgt.data.attributes
    assert len(_attr(tgt.data, "sw_source_face")[1]) == len(tgt.data.vertices)


def test_evaluated_mesh_used_only_when_vertex_count_matches(sw, pair):
    src, tgt = pair
    s = bpy.context.scene.stablewrap
    s.use_evaluated = True
    sub = tgt.modifiers.new("sub", "SUBSURF")
    before = snapshot(src)
    with pytest.raises(RuntimeError, match="change the vertex count"):
        bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    assert_unchanged(before, src)
    tgt.modifiers.remove(sub)
    disp = tgt.modifiers.new("disp", "DISPLACE")
    disp.strength = 0.5  # moves every vertex along its normal, keeps the count
    bpy.context.view_layer.update()
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    _, face = _attr(src.data, "sw_target_face")
    _, bary = _attr(src.data, "sw_target_bary")
    _, fit = _key(src, "StableWrap fit")
    dg = bpy.context.evaluated_depsgraph_get()
    ev = tgt.evaluated_get(dg).to_mesh()
    try:
        ev_pos = world(tgt, _positions(ev))
    finally:
        tgt.evaluated_get(dg).to_mesh_clear()
    on_eval = np.einsum("nk,nkc->nc", bary, ev_pos[_tris(tgt.data)[face]])
    np.testing.assert_allclose(world(src, fit), on_eval, atol=1e-4)


def test_landmarks_and_exclusion_are_sent(sw, pair):
    src, tgt = pair
    assert sw.add_landmark(src, tgt, 3, 10) == 1
    assert sw.add_landmark(src.name, tgt.name, 7, 20) == 2
    with pytest.raises(sw.TaskError, match="out of range"):
        sw.add_landmark(src, tgt, 10**6, 0)
    g = src.vertex_groups.new(name="Ears")
    g.add([0, 1, 2], 1.0, "REPLACE")
    task = sw.tasks.MatchTask(src, tgt, exclude_group="Ears")
    cmd, args, arrays = task.prepare()
    assert cmd == "match"
    np.testing.assert_array_equal(arrays["landmarks"], [[3, 10], [7, 20]])
    assert arrays["exclude"].sum() == 3 and arrays["exclude"][:3].all()
    assert arrays["src_faces"].shape[1] == 3 and len(arrays["src_faces"]) == len(_tris(src.data))
    # the stand-in gives zero confidence to excluded vertices: the exclusion reached the matcher
    bpy.context.scene.stablewrap.exclude_group = "Ears"
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    _, conf = _attr(src.data, "sw_confidence")
    assert conf[:3].max() == 0.0 and conf[3:].min() == 1.0
    # landmarks are saved on the object
    assert [(p.source_vertex, p.target_vertex, p.target.name) for p in src.stablewrap.landmarks] == [(3, 10, "Target"), (7, 20, "Target")]


def test_transfer_uvs_creates_a_uv_map_on_the_target(sw, pair):
    import engine.transfer.uv  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    assert bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name) == {"FINISHED"}
    layer = tgt.data.uv_layers["StableWrap UV"]
    assert tgt.data.uv_layers.active == layer
    uv = np.empty(len(tgt.data.loops) * 2, np.float32)
    layer.uv.foreach_get("vector", uv)
    assert np.isfinite(uv).all()
    src_uv = np.empty(len(src.data.loops) * 2, np.float32)
    src.data.uv_layers.active.uv.foreach_get("vector", src_uv)
    # UVs come from the source layout
    assert uv.min() >= src_uv.min() - 0.05 and uv.max() <= src_uv.max() + 0.05
    assert np.ptp(uv) > 0.1


def _uv_area_ratio(obj, layer_name=None):
    """Per polygon: UV area / 3-D area, over the median (a polygon stretched across the layout is far above 1)."""
    mesh = obj.data
    layer = mesh.uv_layers[layer_name] if layer_name else mesh.uv_layers.active
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    layer.uv.foreach_get("vector", uv)
    uv = uv.reshape(-1, 2)
    tris = _tris(mesh)
    mesh.calc_loop_triangles()
    loops = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("loops", loops)
    polys = np.empty(len(mesh.loop_triangles), np.int32)
    mesh.loop_triangles.foreach_get("polygon_index", polys)
    u = uv[loops.reshape(-1, 3)]
    e1, e2 = u[:, 1] - u[:, 0], u[:, 2] - u[:, 0]
    a_uv = np.bincount(polys, 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]), len(mesh.polygons))
    p = _positions(mesh)[tris]
    a3 = np.bincount(polys, 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1), len(mesh.polygons))
    r = a_uv / np.maximum(a3, 1e-12)
    return r / np.median(r[r > 0])


def _quad_grid(name, n, half):
    xs = np.linspace(-half, half, n)
    verts = [(x, y, 0.0) for x in xs for y in xs]
    faces = [(i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1) for i in range(n - 1) for j in range(n - 1)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def test_transfer_uvs_keeps_quads_across_a_seam_in_one_island(sw):
    """A source with a UV seam down its middle (two islands far apart) and a quad target whose
    quads straddle it: the worker gets the triangle -> polygon map, so both triangles of a quad
    are laid out in one island and none is stretched."""
    import engine.transfer.uv  # noqa: F401  (the engine's own module: an import error fails, not skips)
    use_matcher(sw, "nearest_vertex_match")
    empty_scene()
    src = _quad_grid("SeamSource", 9, 1.0)
    mesh = src.data
    layer = mesh.uv_layers.new(name="UVMap")
    for poly in mesh.polygons:
        left = poly.center.x < 0
        for li in poly.loop_indices:
            x, y, _ = mesh.vertices[mesh.loops[li].vertex_index].co
            c = 0.15 if left else 0.85  # two islands in opposite corners of the layout
            layer.data[li].uv = (0.1 * x + c, 0.1 * y + c)
    tgt = _quad_grid("SeamTarget", 6, 1.0)  # vertices at x = +-0.2 (near x = +-0.25): quads straddle x = 0
    bpy.context.view_layer.update()
    try:
        assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
        assert bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name) == {"FINISHED"}
        ratio = _uv_area_ratio(tgt, "StableWrap UV")
        assert _uv_area_ratio(src).max() < 2.0
        # the bar is 20x the median; here the straddling quads stay within 2x
        # (7x when the worker does not get the triangle -> polygon map)
        assert ratio.max() < 4.0, np.sort(ratio)[-5:]
    finally:
        empty_scene()


def test_a_transfer_after_the_source_topology_changed_asks_for_a_new_match(sw, pair):
    import bmesh

    src, tgt = pair
    assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
    bm = bmesh.new()
    bm.from_mesh(src.data)
    quads = [f for f in bm.faces if len(f.verts) == 4][:10]
    bmesh.ops.triangulate(bm, faces=quads)  # same triangle count, other triangles
    bm.to_mesh(src.data)
    bm.free()
    before = snapshot(tgt)
    with pytest.raises(RuntimeError, match="changed since Match"):
        bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name)
    assert_unchanged(before, tgt)


def test_transfer_uvs_needs_a_match(sw, pair):
    src, tgt = pair
    with pytest.raises(RuntimeError, match="run Match first"):
        bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name)


def test_a_transfer_refuses_a_map_made_with_another_source(sw, pair):
    """The stored map belongs to the source it was matched with: another source (same vertex count
    or not) must not silently read it."""
    src, tgt = pair
    other = src.copy()
    other.data = src.data.copy()
    other.name = "OtherSource"
    bpy.context.scene.collection.objects.link(other)
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    with pytest.raises(RuntimeError, match="was matched with 'Source', not 'OtherSource'"):
        bpy.ops.stablewrap.transfer_uvs(source=other.name, target=tgt.name)
    assert "StableWrap UV" not in tgt.data.uv_layers  # nothing written
    assert bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name) == {"FINISHED"}


def test_transfer_weights_copies_all_vertex_groups(sw, pair):
    import engine.transfer.attributes  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    tgt.location = (0, 0, 0)  # the stand-in matcher maps to the nearest vertex in world space
    tgt.rotation_euler = (0, 0, 0)
    bpy.context.view_layer.update()
    pos = _positions(src.data)
    left = src.vertex_groups.new(name="Left")
    right = src.vertex_groups.new(name="Right")
    for i, x in enumerate(pos[:, 0]):
        (left if x > 0 else right).add([i], 1.0, "REPLACE")
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    assert bpy.ops.stablewrap.transfer_weights(source=src.name, target=tgt.name) == {"FINISHED"}
    assert [g.name for g in tgt.vertex_groups] == ["Left", "Right"]
    gi = tgt.vertex_groups["Left"].index
    in_left = np.array([any(g.group == gi and g.weight > 0.5 for g in v.groups) for v in tgt.data.vertices])
    assert 0.2 < in_left.mean() < 0.8


def test_the_match_report_says_what_the_engine_decided(sw):
    use_matcher(sw, "doubtful_parts_match")
    empty_scene()
    src, tgt = suzanne_pair(remesh=None, bend=0.0)
    try:
        assert bpy.ops.stablewrap.match(source=src.name, target=tgt.name) == {"FINISHED"}
        report = bpy.context.scene.stablewrap.last_report
        assert "2 small or detached target parts left out" in report
        assert report.startswith("CHECK: keypoints disagree")  # first: the sidebar cuts long reports
        assert src.stablewrap.verdict == "check" and src.stablewrap.verdict_reason.startswith("keypoints disagree")
        assert "keypoints: no body found on the target (auto: geometric path)" in report
        assert "matched on a 3000-vertex working copy (+1 more in the console)" in report
    finally:
        use_matcher(sw, "nearest_vertex_match")
        empty_scene()


def test_the_operators_are_in_the_object_menu(sw):
    menu = bpy.types.STABLEWRAP_MT_object
    assert any(getattr(f, "__name__", "") == "_object_menu" for f in bpy.types.VIEW3D_MT_object._dyn_ui_initialize())

    class Collect:
        def __init__(self):
            self.ops = []

        def operator(self, op, **kw):
            self.ops.append(op)

    c = Collect()
    menu.draw(type("M", (), {"layout": c})(), bpy.context)
    assert {"stablewrap.match", "stablewrap.transfer_uvs", "stablewrap.transfer_weights", "stablewrap.clear"} <= set(c.ops)
    for op in c.ops:  # every entry is a registered operator
        mod, name = op.split(".")
        assert hasattr(getattr(bpy.ops, mod), name), op


def test_transfer_weights_leaves_the_artists_groups_of_the_same_name_alone(sw, pair):
    import engine.transfer.attributes  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    g = src.vertex_groups.new(name="Spine")
    g.add(list(range(len(src.data.vertices))), 1.0, "REPLACE")
    own = tgt.vertex_groups.new(name="Spine")
    own.add([0, 1, 2], 0.3, "REPLACE")
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    assert bpy.ops.stablewrap.transfer_weights(source=src.name, target=tgt.name) == {"FINISHED"}
    assert [g.name for g in tgt.vertex_groups] == ["Spine", "Spine.sw"]
    gi = tgt.vertex_groups["Spine"].index
    mine = {v.index: e.weight for v in tgt.data.vertices for e in v.groups if e.group == gi}
    assert mine == pytest.approx({0: 0.3, 1: 0.3, 2: 0.3})
    # a second transfer rewrites its own group, not the artist's
    assert bpy.ops.stablewrap.transfer_weights(source=src.name, target=tgt.name) == {"FINISHED"}
    assert [g.name for g in tgt.vertex_groups] == ["Spine", "Spine.sw"]
    # Clear Results removes only what StableWrap made
    assert bpy.ops.stablewrap.clear(source=src.name, target=tgt.name) == {"FINISHED"}
    assert [g.name for g in tgt.vertex_groups] == ["Spine"]


def test_make_morph_creates_keys_and_drivers(sw, pair):
    import engine.transfer.morph  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    assert bpy.ops.stablewrap.make_morph(source=src.name, steps=4) == {"FINISHED"}
    keys = [k for k in src.data.shape_keys.key_blocks if k.name.startswith("StableWrap morph")]
    assert len(keys) == 4
    drivers = src.data.shape_keys.animation_data.drivers
    paths = sorted(d.data_path for d in drivers)
    assert paths == sorted(f'key_blocks["{k.name}"].value' for k in keys)
    for d in drivers:
        assert d.driver.variables[0].targets[0].data_path == "stablewrap.morph"
    _, last = _key(src, keys[-1].name)
    _, fit = _key(src, "StableWrap fit")
    np.testing.assert_allclose(last, fit, atol=1e-4)
    assert src.data.shape_keys.key_blocks["StableWrap fit"].value == 0.0  # the slider drives the shape now
    # the slider blends neighbouring keys linearly: at 0.375 keys 1 and 2 (t = 0.25, 0.5) share the weight
    src.stablewrap.morph = 0.375
    bpy.context.view_layer.update()
    values = [round(k.value, 4) for k in keys]
    assert values == [0.5, 0.5, 0.0, 0.0]
    src.stablewrap.morph = 1.0
    bpy.context.view_layer.update()
    assert [round(k.value, 4) for k in keys] == [0.0, 0.0, 0.0, 1.0]


def test_landmark_operators_in_edit_mode(sw, pair):
    src, tgt = pair
    s = bpy.context.scene.stablewrap
    s.source, s.target = src, tgt
    for obj, idx in ((src, 5), (tgt, 42)):
        sel = np.zeros(len(obj.data.vertices), bool)
        sel[idx] = True
        obj.data.polygons.foreach_set("select", np.zeros(len(obj.data.polygons), bool))
        obj.data.edges.foreach_set("select", np.zeros(len(obj.data.edges), bool))
        obj.data.vertices.foreach_set("select", sel)
    bpy.ops.object.select_all(action="DESELECT")
    src.select_set(True)
    tgt.select_set(True)
    bpy.context.view_layer.objects.active = tgt
    assert not bpy.ops.stablewrap.landmark_add.poll()  # object mode: edit both meshes first
    bpy.ops.object.mode_set(mode="EDIT")
    assert src.mode == "EDIT" and tgt.mode == "EDIT"
    assert bpy.ops.stablewrap.landmark_add() == {"FINISHED"}
    assert [(p.source_vertex, p.target_vertex) for p in src.stablewrap.landmarks] == [(5, 42)]
    bpy.ops.mesh.select_all(action="SELECT")
    with pytest.raises(RuntimeError, match="exactly one vertex"):
        bpy.ops.stablewrap.landmark_add()
    bpy.ops.object.mode_set(mode="OBJECT")
    sw.add_landmark(src, tgt, 1, 2)
    bpy.ops.stablewrap.landmark_remove()
    assert len(src.stablewrap.landmarks) == 1
    bpy.ops.stablewrap.landmark_clear()
    assert len(src.stablewrap.landmarks) == 0


def test_bake_texture_creates_an_image_in_the_target_layout(sw, pair):
    import engine.transfer.texture  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    tgt.location, tgt.rotation_euler = (0, 0, 0), (0, 0, 0)
    bpy.context.view_layer.update()
    # a source texture: red grows with u, green with v
    img = bpy.data.images.new("src_tex", 32, 32, alpha=True, float_buffer=True)
    u, v = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="xy")
    px = np.stack([u, v, np.zeros_like(u), np.ones_like(u)], -1).astype(np.float32)  # row 0 = bottom (v = 0)
    img.pixels.foreach_set(px.reshape(-1))
    mat = bpy.data.materials.new("src_mat")
    if mat.node_tree is None:  # Blender < 5 creates materials without nodes
        mat.use_nodes = True
    node = mat.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = img
    src.data.materials.append(mat)
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    while tgt.data.uv_layers:  # the remeshed target has no UVs of its own
        tgt.data.uv_layers.remove(tgt.data.uv_layers[0])
    with pytest.raises(RuntimeError, match="no UV map to bake into"):
        bpy.ops.stablewrap.bake_texture(source=src.name, target=tgt.name)
    bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name)
    bpy.context.scene.stablewrap.bake_resolution = 32
    assert bpy.ops.stablewrap.bake_texture(source=src.name, target=tgt.name) == {"FINISHED"}
    out = bpy.data.images["Target StableWrap bake"]
    assert tuple(out.size) == (32, 32)
    got = np.empty(32 * 32 * 4, np.float32)
    out.pixels.foreach_get(got)
    got = got.reshape(32, 32, 4)
    # baked into the transferred layout (close to the source's), the gradient keeps its orientation
    covered = got[..., 3] > 0.5
    assert covered.mean() > 0.2
    rows = np.nonzero(covered.any(1))[0]
    low, high = got[rows[: len(rows) // 3]][..., 1], got[rows[-len(rows) // 3:]][..., 1]
    assert np.median(high[high > 0]) > np.median(low[low > 0])


def _pixels(image):
    got = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(got)
    return got


def _ready_to_bake(src, tgt, img, resolution: int) -> None:
    """``img`` in a material on the source, matched, UVs transferred, the bake resolution set."""
    mat = bpy.data.materials.new("src_mat")
    if mat.node_tree is None:  # Blender < 5 creates materials without nodes
        mat.use_nodes = True
    mat.node_tree.nodes.new("ShaderNodeTexImage").image = img
    src.data.materials.append(mat)
    bpy.ops.stablewrap.match(source=src.name, target=tgt.name)
    bpy.ops.stablewrap.transfer_uvs(source=src.name, target=tgt.name)
    bpy.context.scene.stablewrap.bake_resolution = resolution


def test_bake_survives_save_reopen_undo_redo_and_clear_removes_it(sw, pair, tmp_path):
    import engine.transfer.texture  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    for leftover in [i for i in bpy.data.images if i.name.startswith("Target StableWrap bake")]:
        bpy.data.images.remove(leftover)  # an earlier test's bake
    img = bpy.data.images.new("src_tex", 16, 16, alpha=True)  # an 8-bit texture, as most are
    px = np.random.default_rng(0).random((16 * 16, 4)).astype(np.float32).clip(0.2, 1.0)
    px[:, 3] = 1.0
    img.pixels.foreach_set(px.reshape(-1))
    img.pack()
    _ready_to_bake(src, tgt, img, 32)
    bpy.ops.ed.undo_push(message="before bake")
    assert bpy.ops.stablewrap.bake_texture("EXEC_DEFAULT", True, source=src.name, target=tgt.name) == {"FINISHED"}
    out = bpy.data.images["Target StableWrap bake"]
    baked = _pixels(out)
    assert out.packed_file is not None and not out.is_float and baked[3::4].max() == 1.0
    # shown on the target (its only material: the remeshed target had none), through the transferred UVs
    tmat = tgt.data.materials[0]
    assert tmat.name == "Target StableWrap bake" and out.users >= 1
    tex = [n for n in tmat.node_tree.nodes if n.type == "TEX_IMAGE"][0]
    uvn = [n for n in tmat.node_tree.nodes if n.type == "UVMAP"][0]
    assert tex.image == out and uvn.uv_map == tgt.data.uv_layers.active.name
    # undo removes the bake; redo brings back the same pixels
    bpy.ops.ed.undo()
    assert "Target StableWrap bake" not in bpy.data.images and not bpy.data.objects["Target"].data.materials
    bpy.ops.ed.redo()
    np.testing.assert_allclose(_pixels(bpy.data.images["Target StableWrap bake"]), baked, atol=1.5 / 255)
    # save, reopen: the image is there with its pixels
    path = str(tmp_path / "baked.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    reopened = bpy.data.images["Target StableWrap bake"]
    np.testing.assert_allclose(_pixels(reopened), baked, atol=1.5 / 255)
    assert bpy.data.objects["Target"].data.materials[0].name == "Target StableWrap bake"
    # Clear Results removes the image, the material and its slot
    assert bpy.ops.stablewrap.clear(source="Source", target="Target") == {"FINISHED"}
    assert "Target StableWrap bake" not in bpy.data.images and "Target StableWrap bake" not in bpy.data.materials
    assert len(bpy.data.objects["Target"].data.materials) == 0


def test_bake_onto_a_target_with_materials_adds_a_slot_and_keeps_theirs(sw, pair):
    import engine.transfer.texture  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    own = bpy.data.materials.new("artist skin")
    tgt.data.materials.append(own)
    _ready_to_bake(src, tgt, bpy.data.images.new("src_tex", 8, 8, alpha=True), 16)
    assert bpy.ops.stablewrap.bake_texture(source=src.name, target=tgt.name) == {"FINISHED"}
    assert [m.name for m in tgt.data.materials] == ["artist skin", "Target StableWrap bake"]
    assert {p.material_index for p in tgt.data.polygons} == {0}  # the artist's assignment stays
    bpy.ops.stablewrap.clear(source=src.name, target=tgt.name)
    assert [m.name for m in tgt.data.materials] == ["artist skin"]


def test_bake_keeps_the_source_images_colour_space_and_values(sw, pair):
    """A data texture (Non-Color: a roughness or normal map) bakes into a Non-Color image with
    the source's values; an sRGB one would have been read with another transfer curve."""
    import engine.transfer.texture  # noqa: F401  (the engine's own module: an import error fails, not skips)
    src, tgt = pair
    img = bpy.data.images.new("rough_tex", 8, 8, alpha=True)
    img.colorspace_settings.name = "Non-Color"
    img.pixels.foreach_set(np.tile([0.3, 0.3, 0.3, 1.0], 64).astype(np.float32))
    _ready_to_bake(src, tgt, img, 16)
    assert bpy.ops.stablewrap.bake_texture(source=src.name, target=tgt.name) == {"FINISHED"}
    out = bpy.data.images[f"{tgt.name} StableWrap bake"]
    assert out.colorspace_settings.name == "Non-Color"
    px = _pixels(out).reshape(-1, 4)
    covered = px[:, 3] > 0.5
    assert covered.any()
    np.testing.assert_allclose(px[covered, :3], 0.3, atol=1.5 / 255)
    bpy.ops.stablewrap.clear(source=src.name, target=tgt.name)


def test_poll_explains_why_buttons_are_unavailable(sw, pair):
    src, tgt = pair
    ctx = bpy.context
    s = ctx.scene.stablewrap
    bpy.ops.object.select_all(action="DESELECT")
    ctx.view_layer.objects.active = None
    assert "Pick a source and a target" in sw.operator_base.pair_problem(ctx)
    s.source, s.target = src, src
    assert "same object" in sw.operator_base.pair_problem(ctx)
    s.target = tgt
    assert sw.operator_base.pair_problem(ctx) == ""
    assert "run Match first" in sw.operator_base.pair_problem(ctx, needs_match=True)
    assert "no vertex groups" in sw.operator_base.pair_problem(ctx, needs_groups=True)
    assert "no fit yet" in sw.operator_base.pair_problem(ctx, source_only=True, needs_fit=True)
    ctx.window_manager.stablewrap_job.running = True
    try:
        assert "job is running" in sw.operator_base.pair_problem(ctx)
    finally:
        ctx.window_manager.stablewrap_job.running = False


def test_check_engine_reports_the_environment(sw):
    use_matcher(sw, "nearest_vertex_match")
    info = sw.check_engine(timeout=60)
    assert info["device"] == "cpu" and info["torch"]
    assert bpy.ops.stablewrap.check_engine() == {"FINISHED"}
    text = bpy.context.window_manager.stablewrap_job.engine_info
    assert "Device: CPU" in text and "Python" in text
    # the preferences' thread cap reaches a restarted engine
    prefs = sw.engine_env.get_prefs()
    prefs.threads = 1
    try:
        assert sw.check_engine(timeout=60)["threads"] == 1
        bpy.ops.stablewrap.check_engine()
        assert "1 thread" in bpy.context.window_manager.stablewrap_job.engine_info
    finally:
        prefs.threads = 0
    assert sw.stop_engine() is True
    assert sw.stop_engine() is False


def test_loading_a_file_resets_an_interrupted_job(sw):
    bpy.context.window_manager.stablewrap_job.running = True
    bpy.ops.wm.read_homefile(use_empty=True)
    assert not bpy.context.window_manager.stablewrap_job.running
    assert hasattr(bpy.types.Scene, "stablewrap") and hasattr(bpy.ops.stablewrap, "match")
