"""scripts/batch_match_csv.py: every CSV row is matched headless, failures are reported, not fatal."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_obj(path, bend=0.0, n=8):
    """A bumpy quad grid, optionally bent, as OBJ."""
    u, v = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    z = 0.2 * np.sin(2 * u) + bend * u ** 2
    V = np.stack([u.ravel(), v.ravel(), z.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n) + 1
    with open(path, "w") as fh:
        for p in V:
            fh.write(f"v {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n")
        for a, b, c, d in zip(idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()):
            fh.write(f"f {a} {b} {c} {d}\n")


def test_batch_script_processes_every_pair(tmp_path):
    pytest.importorskip("bpy")
    _write_obj(tmp_path / "a.obj")
    _write_obj(tmp_path / "b.obj", bend=0.3, n=10)
    _write_obj(tmp_path / "c.obj", bend=-0.2, n=6)
    with open(tmp_path / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "target", "quality"])
        w.writerow(["a.obj", "b.obj", "fast"])
        w.writerow(["a", "c.obj", ""])  # 'a' is the object imported by the first row
        w.writerow(["a", "missing.obj", ""])
    env = dict(os.environ, STABLEWRAP_ENGINE_PYTHON=sys.executable, PYTHONPATH=REPO, OMP_NUM_THREADS="1",
               STABLEWRAP_MATCH_IMPL="tests.test_worker_fakes:nearest_vertex_match",
               BLENDER_USER_RESOURCES=str(tmp_path / "profile"))
    out_blend = tmp_path / "out.blend"
    res = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "batch_match_csv.py"), str(tmp_path / "pairs.csv"),
                          "--addon-dir", os.path.join(REPO, "blender_addon"), "--save", str(out_blend)],
                         capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path))
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    with open(tmp_path / "pairs_report.csv", newline="") as fh:
        report = list(csv.DictReader(fh))
    assert [r["status"] for r in report] == ["ok", "ok", "failed"]
    assert report[0]["message"].startswith("Matched 'a' to 'b'")
    assert "missing.obj: file not found" in report[2]["message"]
    assert out_blend.is_file()
    # the saved file holds the results
    check = ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); m = bpy.data.objects['a'].data; "
             "print('KEYS', [k.name for k in m.shape_keys.key_blocks], 'sw_target_face' in m.attributes, "
             "'sw_source_face' in bpy.data.objects['c'].data.attributes)")
    res2 = subprocess.run([sys.executable, "-c", check, str(out_blend)], capture_output=True, text=True, timeout=60, env=env)
    assert "KEYS ['Basis', 'StableWrap fit'] True True" in res2.stdout, res2.stdout + res2.stderr
