"""Scene settings (the panel's pickers and options) and per-object data (landmarks, morph slider).

Everything is a registered ``bpy.props`` property, so it is saved in the
.blend and read as ``scene.stablewrap.source`` / ``obj.stablewrap.landmarks``
(in Blender 5.0, ``obj["prop"]`` no longer reaches these).
"""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

FEATURE_ITEMS = [
    ("auto", "Auto", "Semantic features when the models are installed, geometric descriptors otherwise"),
    ("geometric", "Geometric", "Shape descriptors only (no models needed, fastest)"),
    ("dino", "DINOv2", "DINOv2 image features rendered from several views"),
    ("dino+sd", "DINOv2 + SD", "DINOv2 and Stable Diffusion features (best, slowest)"),
]
QUALITY_ITEMS = [
    ("fast", "Fast", "Fewer iterations and views: a quick preview"),
    ("balanced", "Balanced", "Good results in reasonable time"),
    ("best", "Best", "Full iteration count and all views"),
]

ORIENTATION_ITEMS = [
    ("auto", "Auto", "Search the orientation (the objects may stand or face any way)"),
    ("as-is", "As in scene", "Both objects stand upright and face the same way, as placed in the scene: only small "
                             "turns are searched, and left and right follow from the scene"),
]


def _is_mesh(self, obj) -> bool:
    return obj is not None and obj.type == "MESH"


def _morph_changed(self, context) -> None:
    # the morph keys' drivers read this property; tag the object so the depsgraph re-evaluates them
    self.id_data.update_tag()


class STABLEWRAP_PG_landmark(bpy.types.PropertyGroup):
    """One landmark pair: a vertex on this (source) object and a vertex on ``target``.

    ``name`` (every PropertyGroup has one) holds the body keypoint of a detected pair
    ("left_wrist"), empty for a pair added by hand; ``detected`` marks the pairs that
    Detect Landmarks replaces when it runs again.
    """

    target: PointerProperty(type=bpy.types.Object, name="Target", description="The object the pair points into")
    source_vertex: IntProperty(name="Source vertex", min=0)
    target_vertex: IntProperty(name="Target vertex", min=0)
    detected: BoolProperty(name="Detected", default=False,
                           description="Written by Detect Landmarks (replaced when it runs again); pairs added by hand are kept")
    confidence: FloatProperty(name="Confidence", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                              description="Detection confidence of a detected pair (1 for a pair added by hand)")


class STABLEWRAP_PG_object(bpy.types.PropertyGroup):
    """Per-object StableWrap data."""

    landmarks: CollectionProperty(type=STABLEWRAP_PG_landmark, name="Landmarks")
    landmark_index: IntProperty(name="Active landmark", default=0)
    morph: FloatProperty(name="Morph", description="Blend from the source shape (0) to the fitted shape (1)",
                         default=0.0, min=0.0, max=1.0, subtype="FACTOR", update=_morph_changed)
    morph_steps: IntProperty(name="Morph keys", default=0, min=0, options={"HIDDEN"})
    created_basis: BoolProperty(default=False, options={"HIDDEN"})
    created_groups: StringProperty(default="", options={"HIDDEN"},
                                   description="Vertex groups written by Transfer Weights (tab-separated)")
    matched_with: PointerProperty(type=bpy.types.Object, name="Matched with",
                                  description="The other object of the last match")
    bake_material: StringProperty(default="", options={"HIDDEN"},
                                  description="The material Bake Texture made to show its image on this object")
    source_topology: StringProperty(default="", options={"HIDDEN"},
                                    description="On a matched target: the source's triangles at Match time (a hash)")
    verdict: StringProperty(default="", description="On a matched source: the last match's verdict (good, check, wrong)")
    verdict_reason: StringProperty(default="", description="On a matched source: why the last match got its verdict")


class STABLEWRAP_PG_scene(bpy.types.PropertyGroup):
    """The sidebar's settings."""

    source: PointerProperty(type=bpy.types.Object, name="Source", poll=_is_mesh,
                            description="Template mesh (clean topology, UVs, rig) that is wrapped onto the target")
    target: PointerProperty(type=bpy.types.Object, name="Target", poll=_is_mesh,
                            description="Mesh to wrap onto (a scan, a sculpt, another character)")
    features: EnumProperty(name="Features", items=FEATURE_ITEMS, default="auto")
    quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default="balanced")
    orientation: EnumProperty(name="Orientation", items=ORIENTATION_ITEMS, default="auto")
    exclude_group: StringProperty(name="Exclude", description="Vertex group on the source whose vertices are not pulled onto the target (e.g. hair, accessories)")
    skin_group: StringProperty(name="Skin", description="Vertex group on the source naming its skin: the loose pieces holding it are matched, "
                               "every other piece (eyes, teeth, helpers) rides along. Empty: found from the shape")
    rest_pose: BoolProperty(name="Rest pose", default=False,
                            description="Match a rigged target (one an armature deforms) in its rest pose, not in the pose the viewport shows")
    use_evaluated: BoolProperty(name="Use modifiers", default=False,
                                description="Match the meshes with modifiers applied (only when they keep the vertex count)")
    show_fit: BoolProperty(name="Show fit", default=True,
                           description="Set the 'StableWrap fit' shape key to 1 after matching")
    morph_steps: IntProperty(name="In-betweens", default=5, min=1, max=64,
                             description="Number of in-between shape keys for Make Morph")
    bake_resolution: IntProperty(name="Resolution", default=1024, min=16, max=16384)
    part_group: StringProperty(name="Part", description="Vertex group of the source holding the part to find on the target")
    part_new_group: StringProperty(name="As", description="Name of the target vertex group to write (empty: the source group's name for Match Part, none for Pick from Image)")
    part_image: PointerProperty(type=bpy.types.Image, name="Image",
                                description="Reference image for Pick from Image when it is not run from an Image Editor")
    last_report: StringProperty(default="", description="Outcome of the last StableWrap operation")



class STABLEWRAP_PG_job(bpy.types.PropertyGroup):
    """State of the running job, on the window manager (never saved, never undone)."""

    running: BoolProperty(default=False)
    label: StringProperty(default="")
    stage: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    cancel: BoolProperty(default=False)
    engine_info: StringProperty(default="", description="Result of the last engine check")


classes = (STABLEWRAP_PG_landmark, STABLEWRAP_PG_object, STABLEWRAP_PG_scene, STABLEWRAP_PG_job)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.stablewrap = PointerProperty(type=STABLEWRAP_PG_object)
    bpy.types.Scene.stablewrap = PointerProperty(type=STABLEWRAP_PG_scene)
    bpy.types.WindowManager.stablewrap_job = PointerProperty(type=STABLEWRAP_PG_job)


def unregister() -> None:
    del bpy.types.WindowManager.stablewrap_job
    del bpy.types.Scene.stablewrap
    del bpy.types.Object.stablewrap
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
