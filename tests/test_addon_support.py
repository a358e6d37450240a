"""Shared set-up for the add-on tests (run under the bpy 5.0.1 wheel); holds no tests.

The extension is registered from the source folder: a temporary extensions
repository holds a link named ``stablewrap`` to ``blender_addon/`` and the
add-on is enabled as ``bl_ext.<repo>.stablewrap``, exactly as Blender loads
an installed extension (preferences keyed by ``__package__`` included). The
worker runs this venv's Python with a stand-in matcher unless a test asks for
the real engine.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import addon_utils  # noqa: E402  (comes with bpy)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_MODULE = "swtest"
MODULE = f"bl_ext.{REPO_MODULE}.stablewrap"
_state: dict = {}


def enable_extension():
    """Register the extension once per test process; returns its module."""
    if "module" in _state:
        return _state["module"]
    bpy.context.preferences.use_preferences_save = False
    root = tempfile.mkdtemp(prefix="sw-extrepo-")
    os.symlink(os.path.join(REPO, "blender_addon"), os.path.join(root, "stablewrap"))
    bpy.context.preferences.extensions.repos.new(name=REPO_MODULE, module=REPO_MODULE, custom_directory=root, source="USER")
    mod = addon_utils.enable(MODULE, default_set=True, handle_error=None)
    assert mod is not None, "extension failed to enable"
    os.environ["STABLEWRAP_ENGINE_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _state["module"] = mod
    return mod


def use_matcher(sw, name: str | None) -> None:
    """Point the worker at a stand-in matcher (``tests.test_worker_fakes``) or the real engine (None)."""
    want = f"tests.test_worker_fakes:{name}" if name else ""
    if os.environ.get("STABLEWRAP_MATCH_IMPL", "") != want or _state.get("impl") != want:
        sw.stop_engine()
        if want:
            os.environ["STABLEWRAP_MATCH_IMPL"] = want
        else:
            os.environ.pop("STABLEWRAP_MATCH_IMPL", None)
        _state["impl"] = want


def empty_scene() -> None:
    if bpy.context.object is not None and bpy.context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)
    s = bpy.context.scene.stablewrap
    s.source = s.target = None
    s.exclude_group = ""
    s.use_evaluated = False


def bake_modifiers(obj) -> None:
    """Apply all modifiers by replacing the mesh with its evaluated copy."""
    dg = bpy.context.evaluated_depsgraph_get()
    new = bpy.data.meshes.new_from_object(obj.evaluated_get(dg))
    obj.modifiers.clear()
    obj.data = new


def suzanne_pair(remesh: float | None = 0.12, bend: float = 0.6):
    """Suzanne (source) and a remeshed, bent, moved Suzanne (target)."""
    bpy.ops.mesh.primitive_monkey_add(location=(0, 0, 0))
    src = bpy.context.object
    src.name = "Source"
    bpy.ops.mesh.primitive_monkey_add(location=(3, 0.5, 0), rotation=(0, 0, 0.4))
    tgt = bpy.context.object
    tgt.name = "Target"
    if remesh:
        m = tgt.modifiers.new("remesh", "REMESH")
        m.mode, m.voxel_size = "VOXEL", remesh
    if bend:
        d = tgt.modifiers.new("bend", "SIMPLE_DEFORM")
        d.deform_method, d.angle, d.deform_axis = "BEND", bend, "Z"
    bake_modifiers(tgt)
    tgt.scale = (1.1, 1.1, 1.1)
    bpy.context.view_layer.update()
    return src, tgt


def world(obj, points: np.ndarray) -> np.ndarray:
    m = np.array([list(r) for r in obj.matrix_world], np.float64)
    return np.asarray(points, np.float64) @ m[:3, :3].T + m[:3, 3]


def snapshot(obj) -> dict:
    """Everything the extension could write on an object, for 'unchanged' checks."""
    mesh = obj.data
    pos = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.attributes["position"].data.foreach_get("vector", pos)
    return {
        "attributes": sorted(a.name for a in mesh.attributes),
        "shape_keys": [k.name for k in mesh.shape_keys.key_blocks] if mesh.shape_keys else [],
        "uv": [u.name for u in mesh.uv_layers],
        "groups": [g.name for g in obj.vertex_groups],
        "positions": pos,
    }


def assert_unchanged(before: dict, obj) -> None:
    after = snapshot(obj)
    for key in ("attributes", "shape_keys", "uv", "groups"):
        assert after[key] == before[key], key
    np.testing.assert_array_equal(after["positions"], before["positions"])
