"""Esc on a real match of a 300k-vertex target (the real engine, no stand-in): in the stage that
reads and decimates the large mesh and in the surface fit at full resolution the job ends
as cancelled within 3 s and the scene is as it was (issue 19)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.test_addon_modal import Event, _operator, sw  # noqa: F401  (the fixture)
from tests.test_addon_support import assert_unchanged, bpy, snapshot, suzanne_pair, use_matcher

CANCEL_LIMIT_S = 2.0  # issue 20: Esc stops a 300k-vertex match within 2 s (measured 0.12-0.20 s); the add-on issue asked 3 s


def _large_target(nu: int = 1100, nv: int = 275):
    """A closed 300k-vertex target (a torus of quads, built from arrays: bpy's UV sphere operator
    takes minutes at this size)."""
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, nu, endpoint=False), np.linspace(0, 2 * np.pi, nv, endpoint=False),
                       indexing="ij")
    co = np.stack([(1 + 0.35 * np.cos(v)) * np.cos(u), (1 + 0.35 * np.cos(v)) * np.sin(u), 0.35 * np.sin(v)], -1)
    i, j = np.arange(nu)[:, None], np.arange(nv)[None, :]

    def idx(a, b):
        return (a % nu) * nv + b % nv

    quads = np.stack([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)], -1).reshape(-1, 4)
    mesh = bpy.data.meshes.new("Large target")
    mesh.vertices.add(nu * nv)
    mesh.vertices.foreach_set("co", co.astype(np.float32).ravel())
    mesh.loops.add(quads.size)
    mesh.loops.foreach_set("vertex_index", quads.astype(np.int32).ravel())
    mesh.polygons.add(len(quads))
    mesh.polygons.foreach_set("loop_start", np.arange(0, quads.size, 4, dtype=np.int32))
    mesh.update()
    obj = bpy.data.objects.new("Large target", mesh)
    bpy.context.collection.objects.link(obj)
    return obj


# the stages whose work grows with the mesh (the registration runs on working copies: its
# cancel is the same at any size and is tested with stand-ins in test_addon_modal)
@pytest.mark.parametrize("stage", ["prepare", "fit surface"])
def test_esc_stops_a_300k_vertex_match_within_3_s(sw, stage):  # noqa: F811
    """Esc a moment into the stage: the job ends as cancelled within 3 s, nothing was written."""
    use_matcher(sw, None)
    src, _ = suzanne_pair()
    tgt = _large_target()
    assert len(tgt.data.vertices) >= 300_000
    before_s, before_t = snapshot(src), snapshot(tgt)
    ctx = bpy.context
    task = sw.tasks.MatchTask(src, tgt)
    job = sw.engine_env.client().submit(*task.prepare())
    op = _operator(sw, task, job)
    t0 = time.monotonic()
    while job.stage != stage and not job.done and time.monotonic() - t0 < 240:
        assert op.modal(ctx, Event("TIMER")) == {"PASS_THROUGH"}
        time.sleep(0.02)
    assert job.stage == stage and not job.done
    time.sleep(0.3)
    t1 = time.monotonic()
    assert op.modal(ctx, Event("ESC")) == {"CANCELLED"}
    with pytest.raises(sw.WorkerError) as err:
        job.wait(timeout=30)
    assert err.value.type == "Cancelled"
    assert time.monotonic() - t1 < CANCEL_LIMIT_S
    assert not ctx.window_manager.stablewrap_job.running
    assert_unchanged(before_s, src)
    assert_unchanged(before_t, tgt)
