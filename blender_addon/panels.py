"""The "StableWrap" tab in the 3D Viewport sidebar."""
from __future__ import annotations

import bpy

from .operator_base import resolve_pair
from .task_base import posing_armature


class STABLEWRAP_UL_landmarks(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        target = item.target.name if item.target else "?"
        what = f"{item.name}  " if item.name else ""
        layout.label(text=f"{index + 1}: {what}v{item.source_vertex} -> {target} v{item.target_vertex}",
                     icon="ARMATURE_DATA" if item.detected else "PIVOT_CURSOR")


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "StableWrap"


class STABLEWRAP_PT_main(_Panel, bpy.types.Panel):
    bl_label = "StableWrap"

    def draw(self, context):
        layout = self.layout
        s = context.scene.stablewrap
        col = layout.column(align=True)
        col.prop(s, "source", icon="MESH_MONKEY")
        col.prop(s, "target", icon="MESH_ICOSPHERE")
        if s.source is None or s.target is None:
            src, tgt = resolve_pair(context)
            if src is not None or tgt is not None:
                layout.label(text=f"From selection: {src.name if src else '-'} -> {tgt.name if tgt else '-'}", icon="RESTRICT_SELECT_OFF")
            layout.operator("stablewrap.use_selection", icon="EYEDROPPER")
        layout.prop(s, "features")
        layout.prop(s, "quality", expand=True)
        layout.prop(s, "orientation", expand=True)
        src, _ = resolve_pair(context)
        if src is not None and src.type == "MESH":
            layout.prop_search(s, "exclude_group", src, "vertex_groups", text="Exclude")
            layout.prop_search(s, "skin_group", src, "vertex_groups", text="Skin")
        row = layout.row(align=True)
        row.prop(s, "use_evaluated")
        row.prop(s, "show_fit")
        _, tgt = resolve_pair(context)
        if tgt is not None and tgt.type == "MESH" and posing_armature(tgt) is not None:
            layout.prop(s, "rest_pose")

        state = context.window_manager.stablewrap_job
        if state.running:
            box = layout.box()
            box.progress(factor=state.progress, type="BAR", text=f"{state.label}: {state.stage} {100 * state.progress:.0f}%")
            box.operator("stablewrap.cancel", icon="CANCEL", text="Cancel (Esc)")
        else:
            layout.operator("stablewrap.match", icon="MOD_SHRINKWRAP")
        if src is not None and src.type == "MESH" and src.stablewrap.matched_with is not None:
            draw_verdict(layout, src.stablewrap, offer_retry=not state.running)
        if s.last_report:
            layout.label(text=s.last_report, icon="INFO")


def draw_verdict(layout, data, offer_retry: bool = True) -> None:
    """The source's last match verdict (``data``: its stablewrap data) as a box: an alert row with
    its reason when it is not good, and (``offer_retry``: no job running) the other candidates."""
    if not data.verdict:
        return
    box = layout.box()
    row = box.row()
    bad = data.verdict in ("check", "wrong")
    row.alert = bad
    row.label(text=f"Verdict: {data.verdict}", icon="ERROR" if bad else "CHECKMARK")
    if data.verdict_reason:
        reason = box.row()
        reason.alert = bad
        reason.label(text=data.verdict_reason)
    if bad and offer_retry:  # the other candidates, one click each (or landmark pairs, then Match)
        row = box.row(align=True)
        row.operator("stablewrap.match", text="Again: As in Scene", icon="ORIENTATION_GLOBAL").way = "AS_IS"
        row.operator("stablewrap.match", text="Again: Keypoints Off", icon="ARMATURE_DATA").way = "NO_KEYPOINTS"


class STABLEWRAP_PT_landmarks(_Panel, bpy.types.Panel):
    bl_label = "Landmarks"
    bl_parent_id = "STABLEWRAP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        src, _ = resolve_pair(context)
        if src is None or src.type != "MESH":
            layout.label(text="Pick a source mesh")
            return
        row = layout.row()
        row.template_list("STABLEWRAP_UL_landmarks", "", src.stablewrap, "landmarks", src.stablewrap, "landmark_index", rows=3)
        col = row.column(align=True)
        col.operator("stablewrap.landmark_add", icon="ADD", text="")
        col.operator("stablewrap.landmark_remove", icon="REMOVE", text="")
        col.operator("stablewrap.landmark_clear", icon="X", text="")
        col.separator()
        col.operator("stablewrap.landmarks_detect", icon="ARMATURE_DATA", text="")


class STABLEWRAP_PT_transfer(_Panel, bpy.types.Panel):
    bl_label = "Transfer"
    bl_parent_id = "STABLEWRAP_PT_main"

    def draw(self, context):
        layout = self.layout
        s = context.scene.stablewrap
        layout.operator("stablewrap.transfer_uvs", icon="UV")
        row = layout.row(align=True)
        row.operator("stablewrap.bake_texture", icon="TEXTURE")
        row.prop(s, "bake_resolution", text="")
        layout.operator("stablewrap.transfer_weights", icon="GROUP_VERTEX")
        row = layout.row(align=True)
        row.operator("stablewrap.make_morph", icon="SHAPEKEY_DATA")
        row.prop(s, "morph_steps", text="")
        src, _ = resolve_pair(context)
        if src is not None and src.type == "MESH" and src.stablewrap.morph_steps:
            layout.prop(src.stablewrap, "morph", slider=True)
        layout.separator()
        layout.operator("stablewrap.clear", icon="TRASH")


class STABLEWRAP_PT_parts(_Panel, bpy.types.Panel):
    bl_label = "Parts"
    bl_parent_id = "STABLEWRAP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.stablewrap
        src, _ = resolve_pair(context)
        if src is not None and src.type == "MESH":
            layout.prop_search(s, "part_group", src, "vertex_groups", text="Part")
        else:
            layout.label(text="Pick a source mesh with vertex groups")
        layout.prop(s, "part_new_group")
        layout.operator("stablewrap.match_part", icon="GROUP_VERTEX")
        layout.separator()
        layout.prop(s, "part_image")
        layout.label(text="Pick from Image: run it in the Image Editor's StableWrap tab", icon="IMAGE_DATA")


class STABLEWRAP_PT_image_pick(bpy.types.Panel):
    """The Image Editor side: click a part of the shown image to select it on the target."""

    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "StableWrap"
    bl_label = "Pick Part"

    def draw(self, context):
        layout = self.layout
        s = context.scene.stablewrap
        _, tgt = resolve_pair(context)
        layout.label(text=f"Target: {tgt.name if tgt is not None and tgt.type == 'MESH' else '-'}", icon="MESH_ICOSPHERE")
        layout.prop(s, "part_new_group")
        state = context.window_manager.stablewrap_job
        if state.running:
            layout.progress(factor=state.progress, type="BAR", text=f"{state.label}: {state.stage} {100 * state.progress:.0f}%")
            layout.operator("stablewrap.cancel", icon="CANCEL", text="Cancel (Esc)")
        else:
            layout.operator("stablewrap.pick_from_image", icon="EYEDROPPER")
        if s.last_report:
            layout.label(text=s.last_report, icon="INFO")


class STABLEWRAP_MT_object(bpy.types.Menu):
    """StableWrap in the 3D viewport's Object menu (and so in F3 search)."""

    bl_idname = "STABLEWRAP_MT_object"
    bl_label = "StableWrap"

    def draw(self, context):
        layout = self.layout
        for op, icon in (("stablewrap.match", "MOD_SHRINKWRAP"), ("stablewrap.landmarks_detect", "ARMATURE_DATA"),
                         ("stablewrap.transfer_uvs", "UV"), ("stablewrap.bake_texture", "TEXTURE"),
                         ("stablewrap.transfer_weights", "GROUP_VERTEX"), ("stablewrap.make_morph", "SHAPEKEY_DATA"),
                         ("stablewrap.match_part", "MOD_MASK"), ("stablewrap.clear", "TRASH")):
            layout.operator(op, icon=icon)


def _object_menu(self, context):
    self.layout.separator()
    self.layout.menu(STABLEWRAP_MT_object.bl_idname)


classes = (STABLEWRAP_UL_landmarks, STABLEWRAP_PT_main, STABLEWRAP_PT_landmarks, STABLEWRAP_PT_transfer,
           STABLEWRAP_PT_parts, STABLEWRAP_PT_image_pick, STABLEWRAP_MT_object)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    bpy.types.VIEW3D_MT_object.append(_object_menu)


def unregister() -> None:
    bpy.types.VIEW3D_MT_object.remove(_object_menu)
    _unregister_classes()
