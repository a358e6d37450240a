"""Benchmark the extension's Blender <-> numpy data exchange on a large mesh (bpy wheel).

    .venv/bin/python scripts/bench_addon_exchange.py [--vertices 500000] [--repeat 3]

Builds a grid with about ``--vertices`` vertices (quads, so triangulation is
exercised), then times what a Match does on the Blender side with the
extension's own helpers (``blender_addon/mesh_io.py``): read vertices and
triangles, write one shape key and one point attribute; plus the ``.npz``
round trip to the worker. Prints a table (best of ``--repeat``). The bar is
read + write <= 1 s for 500k vertices.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_mesh_io():
    import bpy  # noqa: F401  (mesh_io needs it)

    spec = importlib.util.spec_from_file_location("sw_mesh_io", os.path.join(REPO, "blender_addon", "mesh_io.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vertices", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ns = ap.parse_args(argv)

    import bpy

    mesh_io = _load_mesh_io()
    side = int(np.ceil(np.sqrt(ns.vertices)))
    t0 = time.perf_counter()
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=side - 1, y_subdivisions=side - 1, size=2.0)
    obj = bpy.context.object
    build_s = time.perf_counter() - t0
    n = len(obj.data.vertices)

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(ns.repeat):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        return best, out

    rows = []
    t_read_v, verts = timed(lambda: mesh_io.read_positions(obj.data))
    rows.append(("read vertices (position attribute)", t_read_v))
    t_read_f, (tris, loops, polys) = timed(lambda: mesh_io.read_triangles(obj.data))
    rows.append(("read triangles (loop triangles)", t_read_f))
    target = verts + np.float32(0.01)
    obj.shape_key_add(name="Basis", from_mix=False)
    t_key, _ = timed(lambda: mesh_io.write_shape_key(obj, "bench", target, 1.0))
    rows.append(("write one shape key", t_key))
    values = np.linspace(0, 1, n, dtype=np.float32)
    t_attr, _ = timed(lambda: mesh_io.write_attribute(obj.data, "bench_attr", values, "FLOAT"))
    rows.append(("write one FLOAT attribute", t_attr))
    total = t_read_v + t_read_f + t_key + t_attr

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npz")

        def npz_round_trip():
            np.savez(path, vertices=verts, faces=tris)
            with np.load(path) as z:
                return z["vertices"].shape, z["faces"].shape

        t_npz, _ = timed(npz_round_trip)

    # correctness of what was timed
    back = mesh_io.read_shape_key(obj, "bench")
    assert np.array_equal(back, target), "shape key round trip differs"
    assert np.array_equal(mesh_io.read_attribute(obj.data, "bench_attr"), values), "attribute round trip differs"

    print(f"mesh: {n} vertices, {len(obj.data.polygons)} quads, {len(tris)} triangles (built in {build_s:.2f} s)")
    print(f"{'step':<40}{'seconds':>10}")
    print("-" * 50)
    for name, secs in rows:
        print(f"{name:<40}{secs:>10.3f}")
    print("-" * 50)
    print(f"{'read + write (the <= 1 s bar)':<40}{total:>10.3f}")
    print(f"{'npz round trip to the worker (extra)':<40}{t_npz:>10.3f}")
    return 0 if total <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
