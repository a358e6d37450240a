"""The sidebar panels draw without errors and only name properties and operators that exist.

Panels cannot draw in background mode, so ``draw`` runs against a recording
layout that checks every ``prop``/``operator``/``template_list`` it is given.
"""
from __future__ import annotations

import pytest

from tests.test_addon_support import bpy, empty_scene, enable_extension, suzanne_pair


class CheckingLayout:
    def __init__(self, log):
        self.log = log
        self.enabled = True
        self.active = True

    def _sub(self, *a, **k):
        return CheckingLayout(self.log)

    row = column = box = split = _sub

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties.keys(), f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def prop_search(self, data, name, search_data, search_name, **kw):
        assert name in data.bl_rna.properties.keys()
        assert search_name in search_data.bl_rna.properties.keys()
        self.log.append(("prop_search", name))

    def operator(self, idname, **kw):
        mod, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, mod), name), f"no operator {idname}"
        getattr(getattr(bpy.ops, mod), name).get_rna_type()  # raises for unregistered operators
        self.log.append(("operator", idname))
        return type("Props", (), {})()

    def label(self, text="", **kw):
        self.log.append(("label", text))

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", text))

    def template_list(self, listtype, list_id, data, propname, active_data, active_propname, **kw):
        assert hasattr(bpy.types, listtype)
        assert propname in data.bl_rna.properties.keys() and active_propname in active_data.bl_rna.properties.keys()
        self.log.append(("template_list", propname))

    def separator(self, **kw):
        pass


def _draw(panel_cls, context):
    log = []
    stub = type("PanelStub", (), {"layout": CheckingLayout(log)})()
    panel_cls.draw(stub, context)
    return log


@pytest.fixture
def sw():
    mod = enable_extension()
    empty_scene()
    yield mod
    empty_scene()


def test_panels_draw_with_and_without_a_pair(sw):
    ctx = bpy.context
    for name in ("STABLEWRAP_PT_main", "STABLEWRAP_PT_landmarks", "STABLEWRAP_PT_transfer"):
        _draw(getattr(bpy.types, name), ctx)  # empty scene
    src, tgt = suzanne_pair(remesh=None, bend=0.0)
    s = ctx.scene.stablewrap
    s.source, s.target = src, tgt
    log = _draw(bpy.types.STABLEWRAP_PT_main, ctx)
    assert ("operator", "stablewrap.match") in log and ("prop_search", "exclude_group") in log
    assert ("prop_search", "skin_group") in log
    assert not [x for x in log if x[1].startswith("Verdict")]  # no match yet: no verdict box
    src.stablewrap.matched_with = tgt
    src.stablewrap.verdict, src.stablewrap.verdict_reason = "check", "parts on other parts: left_wrist on the head"
    log = _draw(bpy.types.STABLEWRAP_PT_main, ctx)
    assert ("label", "Verdict: check") in log and ("label", "parts on other parts: left_wrist on the head") in log
    assert log.count(("operator", "stablewrap.match")) == 3  # Match, and the two other candidates in the box
    log = _draw(bpy.types.STABLEWRAP_PT_transfer, ctx)
    ops = [x[1] for x in log if x[0] == "operator"]
    assert ops == ["stablewrap.transfer_uvs", "stablewrap.bake_texture", "stablewrap.transfer_weights",
                   "stablewrap.make_morph", "stablewrap.clear"]
    assert ("template_list", "landmarks") in _draw(bpy.types.STABLEWRAP_PT_landmarks, ctx)
    # while a job runs: a progress bar with the stage, and Cancel instead of Match
    job = ctx.window_manager.stablewrap_job
    job.running, job.label, job.stage, job.progress = True, "Match", "register", 0.4
    try:
        log = _draw(bpy.types.STABLEWRAP_PT_main, ctx)
    finally:
        job.running = False
    assert ("progress", "Match: register 40%") in log
    assert ("operator", "stablewrap.cancel") in log and ("operator", "stablewrap.match") not in log


def test_preferences_draw(sw):
    prefs = bpy.context.preferences.addons[sw.__name__].preferences
    for mode in ("MANAGED", "EXISTING"):
        prefs.python_mode = mode
        log = []
        stub = type("PrefsStub", (), {"layout": CheckingLayout(log), "bl_rna": prefs.bl_rna})()
        for attr in prefs.bl_rna.properties.keys():
            if attr != "rna_type":
                setattr(stub, attr, getattr(prefs, attr))
        type(prefs).draw(stub, bpy.context)
        assert ("operator", "stablewrap.check_engine") in log and ("operator", "stablewrap.stop_worker") in log
    prefs.python_mode = "MANAGED"
