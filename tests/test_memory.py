"""The memory check before a match: a mesh too large for the free memory stops with one line that
names the mesh and the size that would fit, before any stage runs."""
import pytest

import engine
from engine import memory
from engine.errors import InputError
from engine.samples import make_pair


def test_estimate_grows_with_both_meshes_and_names_the_size_that_fits():
    est = memory.check_match_memory(5000, 5000, free=64 * 2**30)
    assert est.bytes < 2**30 < memory.MemoryEstimate(5000, 300_000).bytes
    free = 2 * 2**30
    with pytest.raises(InputError) as e:
        memory.check_match_memory(5000, 2_000_000, free=free)
    msg = str(e.value)
    assert msg.startswith("target: 2,000,000 vertices") and "\n" not in msg and "2.0 GB is free" in msg
    fit = memory.MemoryEstimate(5000, 2_000_000).largest_fitting(free, "target")
    assert f"decimate the target to about {fit:,} vertices" in msg
    assert memory.MemoryEstimate(5000, fit).bytes <= free < memory.MemoryEstimate(5000, fit + 1000).bytes
    with pytest.raises(InputError, match=r"^source: 900,000 vertices"):
        memory.check_match_memory(900_000, 5000, free=free)
    with pytest.raises(InputError, match="is free; close other programs"):
        memory.check_match_memory(5000, 5000, free=2**20)


def test_available_bytes_reads_this_machine():
    free = memory.available_bytes()
    assert free is None or free > 0


def test_match_stops_before_the_work_when_memory_is_short(monkeypatch):
    pair = make_pair(source_subdivisions=2, target_vertices=400, rotation_deg=0.0, scale=1.0)
    src, tgt = (pair.source_vertices, pair.source_faces), (pair.target_vertices, pair.target_faces)
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * 2**20)
    stages = []
    with pytest.raises(InputError, match=r"^(source|target): .* vertices: the match needs about"):
        engine.match(src, tgt, method="rigid", progress=lambda s, f: stages.append(s))
    assert set(stages) == {"prepare"}
    corr = engine.match(src, tgt, method="rigid", config={"memory_check": False})
    assert corr.meta["method"] == "rigid"


def test_peak_memory_of_a_spawned_process_is_its_own_not_its_parents():
    """ru_maxrss survives exec: a child started by a large parent would report the parent's size."""
    import numpy as np

    from engine.isolated import run_isolated

    ballast = np.ones(400 * 2**20 // 8)  # the parent holds 400 MB, resident
    assert ballast.sum() > 0
    res = run_isolated("engine.memory:peak_rss_bytes", timeout=120)
    assert res["ok"] and res["value"] < 350 * 2**20, res["value"] / 2**20  # a bare interpreter
    assert memory.peak_rss_bytes() > 400 * 2**20
