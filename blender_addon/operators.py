"""Operators: Match, transfers, morph, clear, landmarks (by hand or detected), cancel.

In the UI a job runs as a modal operator: the request goes to the worker, a
timer polls for progress (shown in the sidebar and the status bar), Esc or the
Cancel button stops it, and the result is written in one undoable step when it
arrives. Called from a script (``EXEC_DEFAULT``) or in ``--background`` mode,
the same operators block until the result is written.

Each job operator takes optional ``source`` / ``target`` object names; empty
means the sidebar's pickers, then the selection (active object = target).
"""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import api, engine_env, mesh_io, tasks
from .properties import FEATURE_ITEMS, QUALITY_ITEMS
from .worker_client import StableWrapAddonError


# --------------------------------------------------------------------------- resolving the pair


def selection_pair(context):
    """(source, target) from the selection: active mesh = target, another selected mesh = source."""
    active = context.view_layer.objects.active if context.view_layer else None
    target = active if active is not None and active.type == "MESH" else None
    others = [o for o in getattr(context, "selected_objects", []) or [] if o.type == "MESH" and o != target]
    return (others[0] if others else None), target


def resolve_pair(context, source_name: str = "", target_name: str = ""):
    settings = context.scene.stablewrap
    sel_src, sel_tgt = selection_pair(context)
    src = bpy.data.objects.get(source_name) if source_name else (settings.source or sel_src)
    tgt = bpy.data.objects.get(target_name) if target_name else (settings.target or sel_tgt)
    if source_name and src is None:
        raise tasks.TaskError(f"source object '{source_name}' not found")
    if target_name and tgt is None:
        raise tasks.TaskError(f"target object '{target_name}' not found")
    return src, tgt


def pair_problem(context, needs_match: bool = False, needs_source_uv: bool = False,
                 needs_groups: bool = False, needs_fit: bool = False, source_only: bool = False) -> str:
    """Why a button is unavailable ('' when it is available)."""
    if context.window_manager.stablewrap_job.running:
        return "A StableWrap job is running; wait for it or cancel it"
    src, tgt = resolve_pair(context)
    if source_only:
        if src is None:
            return "Pick a source mesh"
        if src.type != "MESH":
            return f"Source '{src.name}' is not a mesh"
        if needs_fit and mesh_io.read_shape_key(src, tasks.FIT_KEY) is None:
            return f"'{src.name}' has no fit yet: run Match first"
        return ""
    if src is None or tgt is None:
        return "Pick a source and a target mesh (or select two meshes: the active one is the target)"
    try:
        tasks.check_pair(src, tgt)
    except tasks.TaskError as exc:
        msg = str(exc)
        return msg[:1].upper() + msg[1:]
    if needs_match and tgt.data.attributes.get(tasks.ATTR_SOURCE_FACE) is None:
        return f"'{tgt.name}' has no correspondence yet: run Match first"
    if needs_source_uv and src.data.uv_layers.active is None:
        return f"Source '{src.name}' has no UV map"
    if needs_groups and not src.vertex_groups:
        return f"Source '{src.name}' has no vertex groups"
    return ""


# --------------------------------------------------------------------------- job operators


def _redraw(context) -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "VIEW_3D":
            area.tag_redraw()


def _level(exc) -> str:
    """Report level of a failed job: a cancel or a "no match" answer is a warning, the rest an error."""
    return "WARNING" if getattr(exc, "type", "") in ("Cancelled", "NoMatch") else "ERROR"


class _JobOperator:
    bl_options = {"REGISTER", "UNDO"}
    poll_flags = {}

    source: StringProperty(name="Source", description="Source object name (empty: the sidebar's picker or the selection)")
    target: StringProperty(name="Target", description="Target object name (empty: the sidebar's picker or the active object)")

    _job = None
    _task = None
    _timer = None

    @classmethod
    def poll(cls, context):
        if bpy.app.background:  # scripts name the objects; execute() explains any problem
            return not context.window_manager.stablewrap_job.running
        problem = pair_problem(context, **cls.poll_flags)
        if problem:
            cls.poll_message_set(problem)
            return False
        return True

    def make_task(self, context) -> tasks.Task:
        raise NotImplementedError

    def _fail(self, context, message: str, level: str = "ERROR"):
        context.scene.stablewrap.last_report = f"{self.bl_label}: {message}"
        self.report({level}, f"{self.bl_label}: {message}")
        return {"CANCELLED"}

    def _done(self, context, message: str):
        context.scene.stablewrap.last_report = message
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def execute(self, context):
        """Blocking run (scripts, --background)."""
        state = context.window_manager.stablewrap_job

        def progress(stage, fraction):
            state.stage, state.progress = stage, fraction
            return not state.cancel

        state.running, state.cancel, state.label = True, False, self.bl_label
        task = None
        try:
            task = self.make_task(context)
            message = api.run_task(task, progress=progress)
        except StableWrapAddonError as exc:
            return self._fail(context, str(exc), _level(exc))
        finally:
            state.running, state.cancel, state.stage, state.progress = False, False, "", 0.0
        if getattr(task, "start_note", ""):
            self.report({"WARNING"}, f"{self.bl_label}: {task.start_note}")
        return self._done(context, message)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        return self._start_job(context)

    def _start_job(self, context, add_handler: bool = True):
        """Send the job and start polling it (``add_handler=False``: already running as a modal operator)."""
        state = context.window_manager.stablewrap_job
        try:
            self._task = self.make_task(context)
            cmd, args, arrays = self._task.prepare()
            self._job = engine_env.client(wait=False).submit(cmd, args, arrays)  # the UI never waits for torch to load
        except (StableWrapAddonError, mesh_io.MeshDataError) as exc:
            return self._fail(context, str(exc))
        state.running, state.cancel, state.label = True, False, self.bl_label
        state.stage, state.progress = "starting engine", 0.0
        note = getattr(self._task, "start_note", "")
        if note:  # said before the wait, not after it
            context.scene.stablewrap.last_report = f"{self.bl_label}: {note}"
            self.report({"WARNING"}, f"{self.bl_label}: {note}")
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        if add_handler:
            wm.modal_handler_add(self)
        wm.progress_begin(0.0, 1.0)
        return {"RUNNING_MODAL"}

    def _end(self, context):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        state = wm.stablewrap_job
        state.running, state.cancel, state.stage, state.progress = False, False, "", 0.0
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _redraw(context)

    def modal(self, context, event):
        state = context.window_manager.stablewrap_job
        if event.type == "ESC" or state.cancel:
            self._job.cancel()
            self._end(context)
            return self._fail(context, "cancelled; nothing was changed", "WARNING")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        self._job.poll()
        if not self._job.done:
            state.stage, state.progress = self._job.stage, self._job.fraction
            context.window_manager.progress_update(self._job.fraction)
            if context.workspace is not None:
                context.workspace.status_text_set(
                    f"StableWrap {self.bl_label}: {self._job.stage} {100 * self._job.fraction:.0f}%   (Esc to cancel)")
            _redraw(context)
            return {"PASS_THROUGH"}
        self._end(context)
        try:
            data, arrays = self._job.result()
            message = self._task.apply(data, arrays)
        except (StableWrapAddonError, mesh_io.MeshDataError) as exc:
            return self._fail(context, str(exc), _level(exc))
        return self._done(context, message)


def _device():
    prefs = engine_env.get_prefs()
    device = getattr(prefs, "device", "auto") if prefs is not None else "auto"
    return None if device == "auto" else device


def _pick(context, op):
    return resolve_pair(context, op.source, op.target)


class STABLEWRAP_OT_match(_JobOperator, bpy.types.Operator):
    """Compute a dense correspondence from the source to the target and fit the source onto it"""

    bl_idname = "stablewrap.match"
    bl_label = "Match"
    poll_flags = {}

    features: EnumProperty(name="Features", items=[("PANEL", "Panel setting", "")] + FEATURE_ITEMS, default="PANEL")
    quality: EnumProperty(name="Quality", items=[("PANEL", "Panel setting", "")] + QUALITY_ITEMS, default="PANEL")

    def make_task(self, context):
        s = context.scene.stablewrap
        src, tgt = _pick(context, self)
        return tasks.MatchTask(src, tgt, features=s.features if self.features == "PANEL" else self.features,
                               quality=s.quality if self.quality == "PANEL" else self.quality,
                               exclude_group=s.exclude_group, use_evaluated=s.use_evaluated, show_fit=s.show_fit,
                               device=_device())


class STABLEWRAP_OT_transfer_uvs(_JobOperator, bpy.types.Operator):
    """Copy the source's active UV map onto the target (as 'StableWrap UV'), following the correspondence"""

    bl_idname = "stablewrap.transfer_uvs"
    bl_label = "Transfer UVs"
    poll_flags = {"needs_match": True, "needs_source_uv": True}

    def make_task(self, context):
        return tasks.TransferUVTask(*_pick(context, self))


class STABLEWRAP_OT_bake_texture(_JobOperator, bpy.types.Operator):
    """Bake the source's image texture into a new image in the target's active UV layout"""

    bl_idname = "stablewrap.bake_texture"
    bl_label = "Bake Texture"
    poll_flags = {"needs_match": True, "needs_source_uv": True}

    def make_task(self, context):
        return tasks.BakeTextureTask(*_pick(context, self), resolution=context.scene.stablewrap.bake_resolution)


class STABLEWRAP_OT_transfer_weights(_JobOperator, bpy.types.Operator):
    """Copy all vertex groups (skin weights, masks) of the source onto the target"""

    bl_idname = "stablewrap.transfer_weights"
    bl_label = "Transfer Weights"
    poll_flags = {"needs_match": True, "needs_groups": True}

    normalize: BoolProperty(name="Normalize", default=False, description="Make every target vertex's weights sum to 1 (skin weights)")

    def make_task(self, context):
        return tasks.TransferWeightsTask(*_pick(context, self), normalize=self.normalize)


class STABLEWRAP_OT_make_morph(_JobOperator, bpy.types.Operator):
    """Add in-between shape keys from the source shape to its fit, driven by one Morph slider"""

    bl_idname = "stablewrap.make_morph"
    bl_label = "Make Morph"
    poll_flags = {"source_only": True, "needs_fit": True}

    steps: IntProperty(name="In-betweens", default=0, min=0, max=64, description="0: the panel's setting")

    def make_task(self, context):
        src, _ = resolve_pair(context, self.source, "")
        return tasks.MorphTask(src, self.steps or context.scene.stablewrap.morph_steps)


class STABLEWRAP_OT_match_part(_JobOperator, bpy.types.Operator):
    """Find the part of the target that corresponds to a vertex group of the source and store it as a vertex group"""

    bl_idname = "stablewrap.match_part"
    bl_label = "Match Part"
    poll_flags = {"needs_groups": True}

    group: StringProperty(name="Source group", description="Vertex group of the source (empty: the panel's setting)")
    new_group: StringProperty(name="Target group", description="Name of the new target vertex group (empty: the panel's setting, else the source group's name)")
    select: BoolProperty(name="Select", default=True, description="Also make the matched part the target's vertex selection")

    def make_task(self, context):
        s = context.scene.stablewrap
        src, tgt = _pick(context, self)
        group = self.group or s.part_group
        return tasks.MatchPartTask(src, tgt, group, new_group=self.new_group or s.part_new_group or group,
                                   select=self.select)


def _header(context, text) -> None:
    if context.area is not None:
        context.area.header_text_set(text)


def image_editor_pixel(context, event):
    """(image, x, y) under the mouse in an Image Editor, pixel coordinates from the image's top-left; or None."""
    space, region = context.space_data, context.region
    image = getattr(space, "image", None)
    if context.area is None or context.area.type != "IMAGE_EDITOR" or image is None or region is None:
        return None
    u, v = region.view2d.region_to_view(event.mouse_region_x, event.mouse_region_y)
    w, h = image.size
    return image, u * w, (1.0 - v) * h


class STABLEWRAP_OT_pick_from_image(_JobOperator, bpy.types.Operator):
    """Click a part on the image in the Image Editor: the matching part of the target gets selected"""

    bl_idname = "stablewrap.pick_from_image"
    bl_label = "Pick from Image"

    image: StringProperty(name="Image", description="Image name (empty: the Image Editor's image, then the panel's)")
    x: FloatProperty(name="X", default=-1.0, description="Pixel column from the left (negative: click in the Image Editor)")
    y: FloatProperty(name="Y", default=-1.0, description="Pixel row from the top (negative: click in the Image Editor)")
    new_group: StringProperty(name="Target group", description="Also store the part as this vertex group (empty: the panel's setting)")
    select: BoolProperty(name="Select", default=True, description="Make the matched part the target's vertex selection")

    _picking = False

    @classmethod
    def poll(cls, context):
        if context.window_manager.stablewrap_job.running:
            cls.poll_message_set("A StableWrap job is running; wait for it or cancel it")
            return False
        if bpy.app.background:
            return True
        _, tgt = resolve_pair(context)
        if tgt is None or tgt.type != "MESH":
            cls.poll_message_set("Pick a target mesh (the panel's Target or the active object)")
            return False
        return True

    def make_task(self, context):
        s = context.scene.stablewrap
        _, tgt = resolve_pair(context, "", self.target)
        if self.image:
            image = self.image
        else:
            image = getattr(context.space_data, "image", None) if context.area and context.area.type == "IMAGE_EDITOR" else None
            image = image or s.part_image
        if image is None:
            raise tasks.TaskError("no image: open one in the Image Editor or pick one in the StableWrap panel")
        if self.x < 0 or self.y < 0:
            raise tasks.TaskError(f"click ({self.x:g}, {self.y:g}) is outside the image; click on the part to pick")
        return tasks.PickFromImageTask(tgt, image, self.x, self.y, new_group=self.new_group or s.part_new_group,
                                       select=self.select, device=_device())

    def invoke(self, context, event):
        if bpy.app.background or (self.x >= 0 and self.y >= 0):
            return super().invoke(context, event)
        if context.area is None or context.area.type != "IMAGE_EDITOR" or getattr(context.space_data, "image", None) is None:
            return self._fail(context, "open the reference image in an Image Editor and run this there, then click the part")
        self._picking = True
        context.window_manager.modal_handler_add(self)
        _header(context, "StableWrap: click the part to pick on the image (Esc / right click to cancel)")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if not self._picking:
            return super().modal(context, event)
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            self._picking = False
            _header(context, None)
            return self._fail(context, "cancelled; nothing was changed", "WARNING")
        if event.type != "LEFTMOUSE" or event.value != "PRESS":
            return {"PASS_THROUGH"} if event.type in {"MIDDLEMOUSE", "WHEELUPMOUSE", "WHEELDOWNMOUSE",
                                                      "TRACKPADPAN", "TRACKPADZOOM"} else {"RUNNING_MODAL"}
        self._picking = False
        _header(context, None)
        hit = image_editor_pixel(context, event)
        if hit is None:
            return self._fail(context, "click inside the Image Editor on its image")
        image, x, y = hit
        w, h = image.size
        if not (0 <= x < w and 0 <= y < h):
            return self._fail(context, f"click ({x:.0f}, {y:.0f}) is outside the {w}x{h} image '{image.name}'")
        self.image, self.x, self.y = image.name, x, y
        return self._start_job(context, add_handler=False)


class STABLEWRAP_OT_clear(bpy.types.Operator):
    """Remove everything StableWrap wrote on the source and target (attributes, keys, UV map, groups)"""

    bl_idname = "stablewrap.clear"
    bl_label = "Clear Results"
    bl_options = {"REGISTER", "UNDO"}

    source: StringProperty(name="Source")
    target: StringProperty(name="Target")

    @classmethod
    def poll(cls, context):
        if context.window_manager.stablewrap_job.running:
            cls.poll_message_set("A StableWrap job is running")
            return False
        return True

    def execute(self, context):
        try:
            src, tgt = resolve_pair(context, self.source, self.target)
        except tasks.TaskError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        removed = tasks.clear_results(src, tgt)
        self.report({"INFO"}, f"Cleared {len(removed)} StableWrap results" if removed else "Nothing to clear")
        return {"FINISHED"}


class STABLEWRAP_OT_cancel(bpy.types.Operator):
    """Cancel the running StableWrap job (also: Esc)"""

    bl_idname = "stablewrap.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return context.window_manager.stablewrap_job.running

    def execute(self, context):
        context.window_manager.stablewrap_job.cancel = True
        return {"FINISHED"}


class STABLEWRAP_OT_use_selection(bpy.types.Operator):
    """Set the pickers from the selection: the active mesh becomes the target, the other selected mesh the source"""

    bl_idname = "stablewrap.use_selection"
    bl_label = "From Selection"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        src, tgt = selection_pair(context)
        if src is None or tgt is None:
            self.report({"ERROR"}, "Select two meshes: the active one is the target")
            return {"CANCELLED"}
        s = context.scene.stablewrap
        s.source, s.target = src, tgt
        return {"FINISHED"}


# the landmark operators live in their own module (they use _JobOperator and resolve_pair from here)
from .landmark_operators import (STABLEWRAP_OT_landmark_add, STABLEWRAP_OT_landmark_clear,  # noqa: E402
                                 STABLEWRAP_OT_landmark_remove, STABLEWRAP_OT_landmarks_detect)

classes = (
    STABLEWRAP_OT_match, STABLEWRAP_OT_transfer_uvs, STABLEWRAP_OT_bake_texture, STABLEWRAP_OT_transfer_weights,
    STABLEWRAP_OT_make_morph, STABLEWRAP_OT_match_part, STABLEWRAP_OT_pick_from_image, STABLEWRAP_OT_clear, STABLEWRAP_OT_cancel, STABLEWRAP_OT_use_selection,
    STABLEWRAP_OT_landmark_add, STABLEWRAP_OT_landmarks_detect, STABLEWRAP_OT_landmark_remove,
    STABLEWRAP_OT_landmark_clear,
)


register, unregister = bpy.utils.register_classes_factory(classes)
