"""The character among the objects an imported file brings: what a headless batch matches.

A .glb or .fbx character arrives as several objects: the skinned mesh (often split in pieces:
Mixamo's X Bot is a surface and a joints mesh), an armature, the bones' display shapes (the
Soldier's 42-vertex sphere) and props. The character is the skinned mesh (meshes with an
Armature modifier bound to an armature); without one, the largest mesh. Its pieces (the other
meshes of the same kind whose bounds meet its bounds) are joined into one object; bone display
shapes and meshes without faces never qualify.
"""
from __future__ import annotations

import bpy
import numpy as np
from mathutils import Vector

# bounds "meet" within this share of the character's bounding-box diagonal (pieces that sit on
# the body: a helmet over the head, a joint mesh inside the armour)
TOUCHING_BOUNDS = 0.05


def _bounds(obj) -> tuple[np.ndarray, np.ndarray]:
    """The object's world-space bounding box (low, high corners)."""
    corners = np.array([tuple(obj.matrix_world @ Vector(c)) for c in obj.bound_box])
    return corners.min(0), corners.max(0)


def _meet(a, b, pad: float) -> bool:
    return bool(((a[0] - pad) <= b[1]).all() and ((b[0] - pad) <= a[1]).all())


def is_skinned(obj) -> bool:
    return any(m.type == "ARMATURE" and m.object is not None for m in obj.modifiers)


def character_mesh(objects, label: str):
    """The character mesh object among ``objects`` (joined from its pieces when it is split);
    raises ValueError naming ``label`` (the file) when no mesh qualifies."""
    objects = list(objects)
    shapes = {pb.custom_shape for arm in objects if arm.type == "ARMATURE" for pb in arm.pose.bones
              if pb.custom_shape is not None}
    meshes = [o for o in objects if o.type == "MESH" and o not in shapes and len(o.data.polygons) > 0]
    if not meshes:
        kinds = sorted({o.type.lower() for o in objects if o not in shapes}) or ["nothing"]
        raise ValueError(f"{label}: no mesh to match (it holds {', '.join(kinds)}"
                         + (", bone shapes only" if shapes else "") + ")")
    bpy.context.view_layer.update()  # world matrices of objects just placed
    skinned = [o for o in meshes if is_skinned(o)]
    pool = skinned or meshes
    main = max(pool, key=lambda o: len(o.data.vertices))
    lo, hi = _bounds(main)
    pad = TOUCHING_BOUNDS * float(np.linalg.norm(hi - lo))
    pieces = [o for o in pool if o is main or _meet((lo, hi), _bounds(o), pad)]
    if len(pieces) > 1:
        with bpy.context.temp_override(active_object=main, object=main, selected_objects=pieces,
                                       selected_editable_objects=pieces):
            bpy.ops.object.join()
    return main
