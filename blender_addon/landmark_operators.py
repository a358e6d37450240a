"""Landmark operators: add a pair from selected vertices, detect pairs with the engine's body
keypoints (a job, like Match), remove the active pair, clear the pairs of a target."""
from __future__ import annotations

import bpy

from . import api, tasks
from .operator_base import JobOperator, pick_pair, resolve_pair


def _selected_vertices(obj) -> list[int]:
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    n = len(obj.data.vertices)
    import numpy as np

    sel = np.zeros(n, bool)
    if n:
        obj.data.vertices.foreach_get("select", sel)
    return np.nonzero(sel)[0].tolist()


class STABLEWRAP_OT_landmark_add(bpy.types.Operator):
    """Add a landmark pair from one selected vertex on the source and one on the target (edit both meshes together)"""

    bl_idname = "stablewrap.landmark_add"
    bl_label = "Add Landmark Pair"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        try:
            src, tgt = resolve_pair(context)
        except tasks.TaskError:
            return False
        if src is None or tgt is None or src == tgt or src.type != "MESH" or tgt.type != "MESH":
            cls.poll_message_set("Pick a source and a target mesh first")
            return False
        if src.mode != "EDIT" or tgt.mode != "EDIT":
            cls.poll_message_set("Edit both meshes together (select both, Tab) and select one vertex on each")
            return False
        return True

    def execute(self, context):
        src, tgt = resolve_pair(context)
        sv, tv = _selected_vertices(src), _selected_vertices(tgt)
        if len(sv) != 1 or len(tv) != 1:
            self.report({"ERROR"}, f"Select exactly one vertex on each mesh (source: {len(sv)}, target: {len(tv)} selected)")
            return {"CANCELLED"}
        n = api.add_landmark(src, tgt, sv[0], tv[0])
        self.report({"INFO"}, f"Landmark pair {n}: source vertex {sv[0]} <-> target vertex {tv[0]}")
        return {"FINISHED"}


class STABLEWRAP_OT_landmarks_detect(JobOperator, bpy.types.Operator):
    """Detect body landmarks (wrists, elbows, knees, ...) on the source and the target and fill the landmark pairs for this target (pairs added by hand are kept; earlier detections are replaced)"""

    bl_idname = "stablewrap.landmarks_detect"
    bl_label = "Detect Landmarks"
    poll_flags = {}

    def make_task(self, context):
        s = context.scene.stablewrap
        return tasks.DetectLandmarksTask(*pick_pair(context, self), use_evaluated=s.use_evaluated, rest_pose=s.rest_pose)


class STABLEWRAP_OT_landmark_remove(bpy.types.Operator):
    """Remove the active landmark pair"""

    bl_idname = "stablewrap.landmark_remove"
    bl_label = "Remove Landmark Pair"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        src, _ = resolve_pair(context)
        if src is None or src.type != "MESH" or not src.stablewrap.landmarks:
            cls.poll_message_set("No landmark pairs on the source")
            return False
        return True

    def execute(self, context):
        src, _ = resolve_pair(context)
        data = src.stablewrap
        i = min(max(0, data.landmark_index), len(data.landmarks) - 1)
        data.landmarks.remove(i)
        data.landmark_index = min(i, max(0, len(data.landmarks) - 1))
        return {"FINISHED"}


class STABLEWRAP_OT_landmark_clear(bpy.types.Operator):
    """Remove all landmark pairs between the source and the target"""

    bl_idname = "stablewrap.landmark_clear"
    bl_label = "Clear Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return STABLEWRAP_OT_landmark_remove.poll(context)

    def execute(self, context):
        src, tgt = resolve_pair(context)
        lms = src.stablewrap.landmarks
        for i in reversed(range(len(lms))):
            if tgt is None or lms[i].target == tgt or lms[i].target is None:
                lms.remove(i)
        src.stablewrap.landmark_index = 0
        return {"FINISHED"}
