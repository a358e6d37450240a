"""What a headless batch matches in an imported file: the skinned character mesh, its pieces
joined, never a bone display shape or a prop; a file with no mesh is a one-line error."""
from __future__ import annotations

import pytest

from tests.test_addon_support import bpy, empty_scene, enable_extension


@pytest.fixture
def sw():
    mod = enable_extension()
    empty_scene()
    yield mod
    empty_scene()


def _mesh(name, kind="cube", location=(0.0, 0.0, 0.0), size=1.0, subdivisions=2):
    import bmesh

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    if kind == "cube":
        bmesh.ops.create_cube(bm, size=size)
        bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=subdivisions, use_grid_fill=True)
    else:
        bmesh.ops.create_icosphere(bm, subdivisions=subdivisions, radius=size)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _rigged_character():
    """An armature, a character split in two skinned pieces, a bone's 42-vertex display sphere
    and a larger unskinned prop far from the character."""
    arm_data = bpy.data.armatures.new("Rig")
    arm = bpy.data.objects.new("Rig", arm_data)
    bpy.context.scene.collection.objects.link(arm)
    body = _mesh("Body", size=1.0, subdivisions=3)
    legs = _mesh("Legs", location=(0.0, 0.0, -1.0), size=1.0, subdivisions=3)
    for piece in (body, legs):
        mod = piece.modifiers.new("Armature", "ARMATURE")
        mod.object = arm
    sphere = _mesh("BoneShape", kind="sphere", size=0.1, subdivisions=2)  # 42 vertices
    prop = _mesh("Crate", location=(10.0, 0.0, 0.0), size=2.0, subdivisions=8)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    bone = arm_data.edit_bones.new("spine")
    bone.head, bone.tail = (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    bpy.ops.object.mode_set(mode="OBJECT")
    arm.pose.bones["spine"].custom_shape = sphere
    return arm, body, legs, sphere, prop


def test_the_skinned_pieces_are_the_character_joined_never_the_bone_shape_or_a_prop(sw):
    arm, body, legs, sphere, prop = _rigged_character()
    n_body, n_legs, n_sphere = len(body.data.vertices), len(legs.data.vertices), len(sphere.data.vertices)
    assert n_sphere == 42 and len(prop.data.vertices) > n_body + n_legs  # the prop is the largest mesh
    picked = sw.character_mesh([arm, body, legs, sphere, prop], "character.glb")
    assert picked.name in ("Body", "Legs") and len(picked.data.vertices) == n_body + n_legs
    assert "Crate" in bpy.data.objects and "BoneShape" in bpy.data.objects  # left as they were
    assert len(bpy.data.objects["BoneShape"].data.vertices) == n_sphere


def test_without_a_skinned_mesh_the_largest_mesh_and_the_pieces_on_it_are_the_character(sw):
    head = _mesh("Head", size=1.0, subdivisions=4)
    eye = _mesh("Eye", kind="sphere", location=(0.3, 0.4, 0.2), size=0.1)
    far = _mesh("Lamp", location=(20.0, 0.0, 0.0), size=0.5)
    n = len(head.data.vertices) + len(eye.data.vertices)
    picked = sw.character_mesh([head, eye, far], "head.obj")
    assert picked.name == "Head" and len(picked.data.vertices) == n and "Lamp" in bpy.data.objects


def test_a_file_with_no_mesh_to_match_is_a_one_line_error(sw):
    arm, body, legs, sphere, prop = _rigged_character()
    with pytest.raises(ValueError, match=r"rig\.glb: no mesh to match \(it holds armature, bone shapes only\)"):
        sw.character_mesh([arm, sphere], "rig.glb")
