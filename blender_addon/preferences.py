"""Add-on preferences: where the engine runs, environment set-up, "Check engine", "Stop engine"."""
from __future__ import annotations

import os

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import engine_env
from .worker_client import WorkerError


# the preferences' "Install" choice -> the engine wheel's extras
EXTRAS = {"core": "", "features": "features", "features_cuda": "features,cuda"}


class STABLEWRAP_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_mode: EnumProperty(
        name="Engine",
        items=[
            ("MANAGED", "Managed environment", "A Python environment the extension creates and installs the engine into"),
            ("EXISTING", "Existing Python", "A Python interpreter that already has the StableWrap engine installed"),
        ],
        default="MANAGED",
    )
    python_path: StringProperty(name="Python", subtype="FILE_PATH",
                                description="Python executable of an environment with the engine (pip install stablewrap-engine)")
    env_dir: StringProperty(name="Environment folder", subtype="DIR_PATH",
                            description="Where the managed environment lives (empty: the extension's user folder)")
    extras: EnumProperty(
        name="Install",
        items=[
            ("core", "Core", "Geometric features only (smallest download)"),
            ("features", "Semantic features", "Also DINOv2 / Stable Diffusion support (transformers, diffusers)"),
            ("features_cuda", "Semantic features + CUDA rasteriser", "Also nvdiffrast for NVIDIA GPUs"),
        ],
        default="features",
    )

    threads: IntProperty(
        name="Engine threads", default=0, min=0, max=256,
        description="CPU threads the engine may use (0: its own choice); fewer leave cores to Blender. "
                    "Takes effect when the engine (re)starts")
    device: EnumProperty(
        name="Device",
        items=[
            ("auto", "Auto", "CUDA if available, then Apple MPS, then CPU"),
            ("cuda", "CUDA", "NVIDIA GPU"),
            ("mps", "MPS", "Apple GPU"),
            ("cpu", "CPU", "No GPU (slow for semantic features)"),
        ],
        default="auto",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "python_mode", expand=True)
        override = os.environ.get(engine_env.ENV_VAR)
        if override:
            layout.label(text=f"{engine_env.ENV_VAR} overrides this: {override}", icon="INFO")
        if self.python_mode == "MANAGED":
            layout.prop(self, "env_dir")
            layout.prop(self, "extras")
            py = engine_env.env_python(engine_env.managed_env_dir(self))
            row = layout.row()
            row.operator("stablewrap.create_env", icon="CONSOLE",
                         text="Re-create Environment" if os.path.isfile(py) else "Create Environment")
            extras = EXTRAS[self.extras]
            if not engine_env.env_ready(engine_env.managed_env_dir(self)):
                layout.label(text="Not created yet" if not os.path.isfile(py) else "Set-up did not finish: create it again",
                             icon="ERROR")
            layout.label(text=engine_env.download_estimate(extras), icon="INFO")
            if not engine_env.online_access_allowed():
                layout.label(text="Blender's online access is off (Preferences > System > Network): "
                                  "the set-up cannot download", icon="ERROR")
        else:
            layout.prop(self, "python_path")
        layout.prop(self, "device")
        layout.prop(self, "threads")
        row = layout.row()
        row.operator("stablewrap.check_engine", icon="CHECKMARK")
        row.operator("stablewrap.stop_worker", icon="CANCEL")
        info = context.window_manager.stablewrap_job.engine_info
        if info:
            box = layout.box()
            for line in info.split("\n"):
                box.label(text=line)


def format_check(info: dict) -> str:
    gpu = info.get("gpu")
    mem = info.get("gpu_memory")
    lines = [
        f"Python {info.get('python')} ({info.get('executable')})",
        f"Engine {info.get('engine')}, torch {info.get('torch') or 'missing'}"
        + (f", {info['threads']} thread{'s' if info['threads'] != 1 else ''}" if info.get("threads") else ""),
        f"Device: {(info.get('device') or 'none').upper()}" + (f", {gpu}" if gpu else "") + (f", {mem / 2**30:.1f} GiB" if mem else ""),
        "Models: " + (", ".join(info.get("models") or []) or "none installed (geometric features only)"),
    ]
    if "keypoints" in info:  # engines before the model runner do not report it
        backend = {"mediapipe": "MediaPipe package", "litert": "model runner (LiteRT)"}.get(info["keypoints"])
        lines.append("Keypoints: " + (backend or f"off, matching orients geometrically ({info.get('keypoints_missing')})"))
    if info.get("torch_error"):
        lines.append(f"torch error: {info['torch_error']}")
    return "\n".join(lines)


class STABLEWRAP_OT_check_engine(bpy.types.Operator):
    """Start the engine worker and report Python, torch, device and installed models"""

    bl_idname = "stablewrap.check_engine"
    bl_label = "Check Engine"

    _job = None
    _timer = None

    def execute(self, context):  # blocking (scripts, --background)
        try:
            info, _ = engine_env.client().call("check", timeout=300)
        except WorkerError as exc:
            return self._fail(context, exc)
        return self._show(context, info)

    def invoke(self, context, event):
        """In the UI: start the worker and ask it without waiting (torch takes seconds to load)."""
        if bpy.app.background:
            return self.execute(context)
        try:
            self._job = engine_env.client(wait=False).submit("check")
        except WorkerError as exc:
            return self._fail(context, exc)
        context.window_manager.stablewrap_job.engine_info = "Checking the engine (starting it)..."
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self._job.cancel()
            self._end(context)
            context.window_manager.stablewrap_job.engine_info = ""
            return {"CANCELLED"}
        if event.type != "TIMER" or not self._job.poll():
            return {"PASS_THROUGH"}
        self._end(context)
        try:
            info, _ = self._job.result()
        except WorkerError as exc:
            return self._fail(context, exc)
        return self._show(context, info)

    def _end(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        for area in context.screen.areas if context.screen else []:
            area.tag_redraw()

    def _fail(self, context, exc: WorkerError):
        context.window_manager.stablewrap_job.engine_info = f"Engine not usable: {exc.message}"
        self.report({"ERROR"}, exc.message)
        return {"CANCELLED"}

    def _show(self, context, info: dict):
        job_state = context.window_manager.stablewrap_job
        job_state.engine_info = format_check(info)
        self.report({"INFO"}, job_state.engine_info.replace("\n", "; "))
        return {"FINISHED"}


class STABLEWRAP_OT_stop_worker(bpy.types.Operator):
    """Stop the engine worker process and free its (GPU) memory; it restarts on the next job"""

    bl_idname = "stablewrap.stop_worker"
    bl_label = "Stop Engine"

    def execute(self, context):
        stopped = engine_env.stop_worker()
        self.report({"INFO"}, "Engine stopped, memory freed" if stopped else "Engine was not running")
        return {"FINISHED"}


class STABLEWRAP_OT_create_env(bpy.types.Operator):
    """Create a Python environment for the engine and install it with its dependencies (needs internet for PyTorch)"""

    bl_idname = "stablewrap.create_env"
    bl_label = "Create Engine Environment"

    _timer = None
    _installer = None

    def _start(self, context):
        prefs = engine_env.get_prefs()
        engine_env.stop_worker()
        env_dir = engine_env.managed_env_dir(prefs)
        extras = EXTRAS[prefs.extras if prefs is not None else "features"]
        self._installer = engine_env.EnvInstaller(env_dir, extras)

    def execute(self, context):  # blocking (scripts, --background)
        try:
            self._start(context)
        except WorkerError as exc:
            self.report({"ERROR"}, exc.message)
            return {"CANCELLED"}
        import time

        while not self._installer.step():
            time.sleep(0.5)
        return self._finish(context)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            self._start(context)
        except WorkerError as exc:
            self.report({"ERROR"}, exc.message)
            return {"CANCELLED"}
        wm = context.window_manager
        wm.stablewrap_job.running, wm.stablewrap_job.label = True, "Installing engine"
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        job_state = context.window_manager.stablewrap_job
        job_state.progress = self._installer.fraction
        job_state.stage = f"step {self._installer.index + 1} of {len(self._installer.commands)}"
        for area in context.screen.areas if context.screen else []:
            area.tag_redraw()
        if not self._installer.step():
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        job_state.running = False
        return self._finish(context)

    def _finish(self, context):
        if self._installer.error:
            self.report({"ERROR"}, f"Engine environment: {self._installer.error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Engine environment ready in {self._installer.env_dir}")
        return {"FINISHED"}


classes = (STABLEWRAP_AP_preferences, STABLEWRAP_OT_check_engine, STABLEWRAP_OT_stop_worker, STABLEWRAP_OT_create_env)


register, unregister = bpy.utils.register_classes_factory(classes)
