"""Working copies (engine.geometry.working_copy): large meshes are matched on a decimated copy
and the deformation is carried back to every full vertex."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

import engine
from engine.geometry.working_copy import WorkingCopy
from engine.mesh import Mesh


def _sphere_mesh(subdivisions: int = 5) -> Mesh:
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    v = s.vertices * np.array([1.0, 0.7, 0.5])
    return Mesh(v, s.faces, "ellipsoid")


def test_a_small_mesh_is_its_own_working_copy():
    m = _sphere_mesh(2)
    c = WorkingCopy(m, 6000)
    assert not c.decimated and c.mesh is m
    np.testing.assert_array_equal(c.carry(m.vertices + 1.0), m.vertices + 1.0)
    np.testing.assert_array_equal(c.to_working([3, 5]), [3, 5])


def test_carrying_a_similarity_moves_every_full_vertex_by_it():
    m = _sphere_mesh(5)  # 10242 vertices
    c = WorkingCopy(m, 1000)
    assert c.decimated and 800 <= c.mesh.n_vertices <= 1100
    assert c._ties is None  # tied on the first carry only (a target's copy is never carried)
    # the identity carries the full mesh onto itself
    np.testing.assert_allclose(c.carry(c.mesh.vertices), m.vertices, atol=1e-9)
    R = trimesh.transformations.rotation_matrix(1.1, [1, -2, 0.5])[:3, :3]
    moved = 2.5 * c.mesh.vertices @ R.T + [3.0, -1.0, 0.5]
    np.testing.assert_allclose(c.carry(moved), 2.5 * m.vertices @ R.T + [3.0, -1.0, 0.5], atol=1e-8)


def test_the_working_copy_of_a_flat_subdivided_mesh_has_no_slivers_and_stays_closed():
    """Decimating a midpoint-subdivided mesh leaves triangles on collinear vertices; they are
    collapsed (not dropped: that would cut slits)."""
    s = trimesh.creation.icosphere(subdivisions=3)
    v, f = trimesh.remesh.subdivide(s.vertices, s.faces)
    v, f = trimesh.remesh.subdivide(v, f)  # 10242 vertices, flat within each original triangle
    c = WorkingCopy(Mesh(v, f), 1500)
    w = c.mesh
    p = w.vertices[w.faces]
    quality = 4 * np.sqrt(3) * w.face_areas / (np.linalg.norm(p[:, [1, 2, 0]] - p, axis=2) ** 2).sum(axis=1)
    assert quality.min() > 0.02
    assert trimesh.Trimesh(w.vertices, w.faces, process=False).is_watertight
    assert w.non_manifold_edge_count == 0


def test_indices_and_masks_go_to_the_nearest_working_vertex():
    m = _sphere_mesh(4)
    c = WorkingCopy(m, 500)
    top = int(np.argmax(m.vertices[:, 2]))
    w = c.to_working([top])[0]
    assert np.linalg.norm(c.mesh.vertices[w] - m.vertices[top]) < 0.15
    mask = m.vertices[:, 0] > 0.5
    wm = c.mask_to_working(mask)
    assert wm.shape == (c.mesh.n_vertices,) and wm.any()
    assert np.all(c.mesh.vertices[wm, 0] > 0.4)


def test_a_match_on_working_copies_returns_full_resolution_results_as_accurate(small_pair):
    src = (small_pair.source_vertices, small_pair.source_faces)
    tgt = (small_pair.target_vertices, small_pair.target_faces)
    kw = dict(quality="fast", features="geometric")
    direct = engine.match(src, tgt, **kw)
    coarse = engine.match(src, tgt, config={"working_vertices": 350}, **kw)
    ns, nt = len(small_pair.source_vertices), len(small_pair.target_vertices)
    assert coarse.meta["working_vertices"][0] < ns and coarse.meta["working_vertices"][1] < nt
    assert coarse.fitted_vertices.shape == (ns, 3) and coarse.tgt_to_src_face.shape == (nt,)
    diag = np.linalg.norm(small_pair.target_vertices.max(0) - small_pair.target_vertices.min(0))

    def median_error(r):
        return np.median(np.linalg.norm(r.fitted_vertices - small_pair.gt_src_to_tgt, axis=1)) / diag

    assert median_error(coarse) < max(1.5 * median_error(direct), 0.03), (median_error(coarse), median_error(direct))
    assert coarse.meta["surface_fit"]["flipped_pct"] < 0.5


def test_a_large_decimation_runs_in_a_child_and_gives_the_same_copy(monkeypatch):
    """Above CHILD_DECIMATION_FACES a decimation with a cancel token runs in a child process
    (a cancel can end it): the same library call, so the same working copy as in this process."""
    from engine.geometry import working_copy
    from engine.progress import CancelToken

    monkeypatch.setattr(working_copy, "CHILD_DECIMATION_FACES", 1000)
    calls = []
    import engine.isolated as isolated

    real = isolated.run_isolated

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(isolated, "run_isolated", spy)
    m = _sphere_mesh(4)  # 2562 vertices, 5120 faces
    here = working_copy.decimate(m.vertices, m.faces, 500)
    child = working_copy.decimate(m.vertices, m.faces, 500, CancelToken())
    assert calls == ["engine.geometry.working_copy:_simplify"]
    np.testing.assert_array_equal(child[1], here[1])
    np.testing.assert_allclose(child[0], here[0], rtol=0, atol=0)


def test_cancel_ends_a_large_decimation_within_a_second():
    """A 1.3M-face decimation is one library call of seconds (2.8 s here); with a cancel token it
    runs in a child, and a cancel while it runs raises Cancelled at once and leaves no child behind."""
    import threading
    import time

    import pytest

    from engine.errors import Cancelled
    from engine.isolated import live_children
    from engine.geometry import working_copy
    from engine.progress import CancelToken

    m = _sphere_mesh(8)  # 655362 vertices, 1310720 faces
    assert len(m.faces) >= working_copy.CHILD_DECIMATION_FACES
    token, cancelled_at = CancelToken(), []

    def cancel_once_the_child_runs():
        deadline = time.monotonic() + 60
        while not live_children() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # the child has imported numpy and is inside the library call
        cancelled_at.append(time.perf_counter())
        token.cancel()

    threading.Thread(target=cancel_once_the_child_runs, daemon=True).start()
    with pytest.raises(Cancelled):
        WorkingCopy(m, 3000, token)
    assert cancelled_at and time.perf_counter() - cancelled_at[0] < 1.0
    assert not live_children()


def test_decimations_in_two_threads_at_once_give_what_each_gives_alone():
    """The match makes the target's working copy in a thread beside the source's; the library
    keeps its mesh in global state, so the two must not interleave."""
    from concurrent.futures import ThreadPoolExecutor

    from engine.geometry.working_copy import decimate

    a, b = _sphere_mesh(5), _sphere_mesh(4)
    b = Mesh(b.vertices * 0.5 + 2.0, b.faces)
    alone = [decimate(m.vertices, m.faces, 700) for m in (a, b)]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(4):
            jobs = [pool.submit(decimate, m.vertices, m.faces, 700) for m in (a, b)]
            for job, ref in zip(jobs, alone):
                v, f = job.result()
                np.testing.assert_array_equal(f, ref[1])
                np.testing.assert_array_equal(v, ref[0])


def _decimate_with_a_token(vertices, faces, max_vertices):
    """(In engine.isolated's child, where a batch or benchmark match runs) a decimation given a cancel token."""
    from engine import isolated
    from engine.geometry import working_copy
    from engine.progress import CancelToken

    def no_grandchild(*args, **kwargs):
        raise AssertionError("a decimation in an isolated child started a child of its own")

    isolated.run_isolated = no_grandchild
    working_copy.CHILD_DECIMATION_FACES = 1000
    return working_copy.decimate(vertices, faces, max_vertices, CancelToken())


def test_a_match_in_an_isolated_child_decimates_in_place():
    """Batch and benchmark matches run in engine.isolated's children, which whoever runs them
    ends on a cancel: a large decimation there runs in the match's process, no grandchild."""
    from engine.geometry.working_copy import decimate
    from engine.isolated import run_isolated

    m = _sphere_mesh(4)
    res = run_isolated("tests.test_working_copy:_decimate_with_a_token", (m.vertices, m.faces, 500), timeout=120)
    assert res["ok"], res.get("error")
    here = decimate(m.vertices, m.faces, 500)
    np.testing.assert_array_equal(res["value"][1], here[1])


def test_a_large_decimation_from_a_script_on_stdin_runs_in_its_child():
    """A script read from stdin: multiprocessing's spawned child had to re-run it and died
    starting (the mesh written to it while it started once hung the match for good, later the
    decimation fell back to the script's process). The child re-runs nothing now: it decimates."""
    import subprocess
    import sys

    code = (
        "import numpy as np, trimesh\n"
        "from engine.geometry import working_copy\n"
        "from engine import isolated\n"
        "from engine.progress import CancelToken\n"
        "real, children = isolated.run_isolated, []\n"
        "isolated.run_isolated = lambda *a, **k: children.append(real(*a, **k)) or children[-1]\n"
        "working_copy.CHILD_DECIMATION_FACES = 1000\n"
        "m = trimesh.creation.icosphere(subdivisions=7)\n"  # 164k vertices: a 7.8 MB array to send
        "v, f = working_copy.decimate(np.asarray(m.vertices), np.asarray(m.faces), 2000, CancelToken())\n"
        "print('child', [c['ok'] for c in children])\n"
        "print('copy', len(v))\n"
    )
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120,
                         cwd=os.fspath(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "child [True]" in out.stdout, out.stdout
    n = int(out.stdout.split()[-1])
    assert 1500 <= n <= 2500


def test_a_read_only_mesh_decimates():
    """The library takes writable C-ordered arrays only; a read-only one (a cached file's) was a
    TypeError from inside it."""
    from engine.geometry.working_copy import decimate

    m = _sphere_mesh(4)
    v, f = m.vertices.copy(), m.faces.copy()
    v.setflags(write=False)
    f.setflags(write=False)
    dv, df = decimate(v, f, 500)
    assert 450 <= len(dv) <= 550 and df.max() < len(dv)


def test_a_reduction_far_beyond_one_pass_is_made_in_passes_and_reaches_its_size(monkeypatch):
    """The library's single pass stops short of a large reduction; more than ONE_PASS_RATIO times
    the target is taken down 4x per pass first, then one pass lands on the size asked for."""
    import fast_simplification

    from engine.geometry import working_copy

    calls = []
    simplify = fast_simplification.simplify

    def counted(v, f, **kw):
        calls.append(len(v))
        return simplify(v, f, **kw)

    monkeypatch.setattr(fast_simplification, "simplify", counted)
    m = _sphere_mesh(6)  # 40962 vertices
    monkeypatch.setattr(working_copy, "ONE_PASS_RATIO", 8)
    v, f = working_copy.decimate(m.vertices, m.faces, 400)
    assert len(calls) == 3 and calls[0] == m.n_vertices and calls[1] < m.n_vertices / 3 and calls[2] <= 8 * 400
    assert 380 <= len(v) <= 420 and f.max() < len(v)
    assert trimesh.Trimesh(v, f, process=False).is_watertight
    calls.clear()
    monkeypatch.setattr(working_copy, "ONE_PASS_RATIO", 64)
    v, f = working_copy.decimate(m.vertices, m.faces, 1000)  # within 64x: one pass, as before
    assert calls == [m.n_vertices] and 950 <= len(v) <= 1050
