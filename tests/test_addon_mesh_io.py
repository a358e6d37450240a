"""The extension's numpy fast paths (blender_addon/mesh_io.py) against per-element bpy references."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_addon_support import bpy, empty_scene, enable_extension


@pytest.fixture(scope="module")
def mio():
    return enable_extension().mesh_io


@pytest.fixture
def cylinder():
    empty_scene()
    bpy.ops.mesh.primitive_cylinder_add(vertices=12, end_fill_type="NGON", location=(1, 2, 3), rotation=(0.3, 0.2, 0.1))
    obj = bpy.context.object
    yield obj
    empty_scene()


def test_read_triangles_matches_loop_triangles_with_ngons(mio, cylinder):
    mesh = cylinder.data
    assert max(p.loop_total for p in mesh.polygons) == 12  # n-gon caps
    tris, loops, polys = mio.read_triangles(mesh)
    ref_v = np.array([tuple(t.vertices) for t in mesh.loop_triangles])
    ref_l = np.array([tuple(t.loops) for t in mesh.loop_triangles])
    ref_p = np.array([t.polygon_index for t in mesh.loop_triangles])
    assert tris.dtype == np.int32 and tris.shape == ref_v.shape
    np.testing.assert_array_equal(tris, ref_v)
    np.testing.assert_array_equal(loops, ref_l)
    np.testing.assert_array_equal(polys, ref_p)


def test_read_positions_and_world_transform(mio, cylinder):
    pos = mio.read_positions(cylinder.data)
    ref = np.array([tuple(v.co) for v in cylinder.data.vertices], np.float32)
    np.testing.assert_array_equal(pos, ref)
    m = mio.matrix_to_numpy(cylinder.matrix_world)
    assert m.dtype == np.float64
    ref_w = np.array([tuple(cylinder.matrix_world @ v.co) for v in cylinder.data.vertices])
    np.testing.assert_allclose(mio.to_world(pos, m), ref_w, atol=1e-5)
    np.testing.assert_allclose(mio.to_local(mio.to_world(pos, m), m), pos, atol=1e-5)


def test_attributes_round_trip_and_replace_on_type_change(mio, cylinder):
    mesh = cylinder.data
    n = len(mesh.vertices)
    mio.write_attribute(mesh, "x", np.arange(n), "INT")
    np.testing.assert_array_equal(mio.read_attribute(mesh, "x"), np.arange(n))
    vec = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    mio.write_attribute(mesh, "x", vec, "FLOAT_VECTOR")  # same name, other type: replaced
    assert mesh.attributes["x"].data_type == "FLOAT_VECTOR"
    np.testing.assert_array_equal(mio.read_attribute(mesh, "x"), vec)
    with pytest.raises(mio.MeshDataError, match="values for"):
        mio.write_attribute(mesh, "y", np.zeros(n + 1), "FLOAT")
    assert "y" not in mesh.attributes
    assert mio.remove_attribute(mesh, "x") and not mio.remove_attribute(mesh, "x")


def test_shape_key_value_is_set_explicitly(mio, cylinder):
    pos = mio.read_positions(cylinder.data)
    key = mio.write_shape_key(cylinder, "k0", pos * 2, 0.0)
    assert key.value == 0.0  # Blender 5.0 starts new keys at 1.0
    assert [k.name for k in cylinder.data.shape_keys.key_blocks] == ["Basis", "k0"]
    np.testing.assert_array_equal(mio.read_shape_key(cylinder, "k0"), pos * 2)
    np.testing.assert_array_equal(mio.basis_positions(cylinder), pos)
    mio.write_shape_key(cylinder, "k0", pos * 3, 0.25)  # refill, no second key
    assert len(cylinder.data.shape_keys.key_blocks) == 2
    assert cylinder.data.shape_keys.key_blocks["k0"].value == pytest.approx(0.25)


def test_vertex_groups_round_trip(mio, cylinder):
    n = len(cylinder.data.vertices)
    w = np.round(np.random.default_rng(1).uniform(0, 1, size=n), 4).astype(np.float32)
    w[::3] = 0.0
    mio.write_vertex_group(cylinder, "g", w)
    names, mat = mio.read_vertex_groups(cylinder)
    assert names == ["g"]
    np.testing.assert_allclose(mat[:, 0], w, atol=1e-6)
    # reference: per-vertex membership
    gi = cylinder.vertex_groups["g"].index
    members = np.array([any(g.group == gi for g in v.groups) for v in cylinder.data.vertices])
    np.testing.assert_array_equal(members, w > 1e-4)
    mask = mio.vertex_group_mask(cylinder, "g")
    np.testing.assert_array_equal(mask, w > 0.5)
    with pytest.raises(mio.MeshDataError, match="no vertex group"):
        mio.vertex_group_mask(cylinder, "nope")
