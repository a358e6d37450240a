"""What every job operator shares: resolving the source / target pair, the modal job loop
(request, progress, cancel, one undoable write) and its messages. ``operators`` and
``landmark_operators`` build on it."""
from __future__ import annotations

import bpy
from bpy.props import StringProperty

from . import api, engine_env, mesh_io, tasks
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


def redraw(context) -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "VIEW_3D":
            area.tag_redraw()


def message_level(exc) -> str:
    """Report level of a failed job: a cancel or a "no match" answer is a warning, the rest an error."""
    return "WARNING" if getattr(exc, "type", "") in ("Cancelled", "NoMatch") else "ERROR"


class JobOperator:
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
        self.report({getattr(getattr(self, "_task", None), "report_level", "INFO")}, message)
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
            task = self._task = self.make_task(context)
            message = api.run_task(task, progress=progress)
        except StableWrapAddonError as exc:
            return self._fail(context, str(exc), message_level(exc))
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
        redraw(context)

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
            redraw(context)
            return {"PASS_THROUGH"}
        self._end(context)
        try:
            data, arrays = self._job.result()
            message = self._task.apply(data, arrays)
        except (StableWrapAddonError, mesh_io.MeshDataError) as exc:
            return self._fail(context, str(exc), message_level(exc))
        return self._done(context, message)


def preferred_device():
    prefs = engine_env.get_prefs()
    device = getattr(prefs, "device", "auto") if prefs is not None else "auto"
    return None if device == "auto" else device


def pick_pair(context, op):
    return resolve_pair(context, op.source, op.target)
