"""StableWrap: wrap a template mesh onto any other mesh (Blender extension).

The extension is bpy + numpy only: the engine (torch) runs in a separate
worker process in its own Python environment (see ``engine_env``). Scripts
use the blocking API re-exported here (``match``, ``transfer_uvs``, ...) or
the operators ``bpy.ops.stablewrap.*`` with ``source=`` / ``target=`` names.
"""
from __future__ import annotations

from . import api, engine_env, operators, panels, preferences, properties
from .characters import character_mesh
from .api import (NoMatch, StableWrapAddonError, TaskError, WorkerError, add_landmark, bake_texture, check_engine,
                  clear, detect_landmarks, make_morph, match, match_part, pick_from_image, release_gpu, stop_engine,
                  transfer_uvs, transfer_weights)

import bpy
from bpy.app.handlers import persistent

_modules = (properties, preferences, operators, panels)


@persistent
def _reset_job_state(*_args) -> None:
    """A job interrupted by loading a file must not leave the buttons greyed out."""
    for wm in bpy.data.window_managers:
        state = getattr(wm, "stablewrap_job", None)
        if state is not None and state.running:
            state.running, state.cancel, state.stage, state.progress = False, False, "", 0.0


def register() -> None:
    for mod in _modules:
        mod.register()
    bpy.app.handlers.load_post.append(_reset_job_state)


def unregister() -> None:
    if _reset_job_state in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_reset_job_state)
    engine_env.stop_worker()
    for mod in reversed(_modules):
        mod.unregister()


__all__ = ["register", "unregister", "match", "detect_landmarks", "transfer_uvs", "bake_texture", "transfer_weights", "make_morph",
           "match_part", "pick_from_image", "NoMatch", "clear", "add_landmark", "check_engine", "release_gpu", "stop_engine", "StableWrapAddonError",
           "TaskError", "WorkerError", "character_mesh"]
