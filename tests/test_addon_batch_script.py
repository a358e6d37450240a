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


def _env(tmp_path, matcher: str = "nearest_vertex_match") -> dict:
    """The script's environment: this venv's engine with a stand-in matcher, a fresh profile."""
    return dict(os.environ, STABLEWRAP_ENGINE_PYTHON=sys.executable, PYTHONPATH=REPO, OMP_NUM_THREADS="1",
                STABLEWRAP_MATCH_IMPL=f"tests.test_worker_fakes:{matcher}", BLENDER_USER_RESOURCES=str(tmp_path / "profile"))


def _three_meshes(tmp_path) -> None:
    _write_obj(tmp_path / "a.obj")
    _write_obj(tmp_path / "b.obj", bend=0.3, n=10)
    _write_obj(tmp_path / "c.obj", bend=-0.2, n=6)


def _write_pairs(tmp_path, header, *rows) -> None:
    with open(tmp_path / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _run_batch(tmp_path, env, *options):
    """The batch script on tmp_path/pairs.csv with the extension from the source folder."""
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "batch_match_csv.py"), str(tmp_path / "pairs.csv"),
                           "--addon-dir", os.path.join(REPO, "blender_addon"), *map(str, options)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=str(tmp_path))


def test_batch_script_processes_every_pair(tmp_path):
    pytest.importorskip("bpy")
    _three_meshes(tmp_path)
    _write_pairs(tmp_path, ["source", "target", "quality"], ["a.obj", "b.obj", "fast"],
                 ["a", "c.obj", ""],  # 'a' is the object imported by the first row
                 ["a", "missing.obj", ""])
    env = _env(tmp_path)
    out_blend = tmp_path / "out.blend"
    res = _run_batch(tmp_path, env, "--save", out_blend)
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


_MAKE_GLB = r"""
import bpy, bmesh, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
arm_data = bpy.data.armatures.new("Rig")
arm = bpy.data.objects.new("Rig", arm_data)
bpy.context.scene.collection.objects.link(arm)
bpy.context.view_layer.objects.active = arm
bpy.ops.object.mode_set(mode="EDIT")
bone = arm_data.edit_bones.new("spine")
bone.head, bone.tail = (0, 0, 0), (0, 0, 1)
bpy.ops.object.mode_set(mode="OBJECT")
def mesh(name, maker, loc):
    me = bpy.data.meshes.new(name)
    bm = bmesh.new()
    maker(bm)
    bm.to_mesh(me)
    bm.free()
    ob = bpy.data.objects.new(name, me)
    ob.location = loc
    bpy.context.scene.collection.objects.link(ob)
    return ob
def grid_cube(bm, cuts):
    bmesh.ops.create_cube(bm, size=1.0)
    bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=cuts, use_grid_fill=True)
body = mesh("Body", lambda bm: grid_cube(bm, 3), (0, 0, 0.5))
body.parent = arm
group = body.vertex_groups.new(name="spine")
group.add(list(range(len(body.data.vertices))), 1.0, "REPLACE")
body.modifiers.new("Armature", "ARMATURE").object = arm
mesh("BoneSphere", lambda bm: bmesh.ops.create_icosphere(bm, subdivisions=2, radius=0.05), (0, 0, 0.5))
mesh("Crate", lambda bm: grid_cube(bm, 8), (8, 0, 0))
bpy.ops.export_scene.gltf(filepath=sys.argv[-1], export_format="GLB")
"""


def test_a_glb_batch_row_matches_the_skinned_character_and_says_when_the_map_is_doubtful(tmp_path):
    """A rigged .glb with a bone-display sphere and a larger prop: the row matches the skinned
    body, and a match whose verdict is not good is a "check" row, not "ok"."""
    pytest.importorskip("bpy")
    glb = tmp_path / "char.glb"
    res = subprocess.run([sys.executable, "-c", _MAKE_GLB, str(glb)], capture_output=True, text=True, timeout=120)
    assert glb.is_file(), res.stdout[-2000:] + res.stderr[-2000:]
    _write_obj(tmp_path / "b.obj", bend=0.3, n=10)
    _write_pairs(tmp_path, ["source", "target"], ["char.glb", "b.obj"])
    env = _env(tmp_path, "doubtful_parts_match")
    out_blend = tmp_path / "out.blend"
    res = _run_batch(tmp_path, env, "--save", out_blend)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    with open(tmp_path / "pairs_report.csv", newline="") as fh:
        report = list(csv.DictReader(fh))
    assert report[0]["status"] == "check" and "Matched 'char' to 'b'" in report[0]["message"]
    assert "1 with a verdict to check" in res.stdout
    # the matched object is the skinned body; the sphere and the crate are untouched
    check = ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); o = bpy.data.objects['char']; "
             "print('CHAR', [m.type for m in o.modifiers], 'sw_target_face' in o.data.attributes, "
             "sorted(x.name for x in bpy.data.objects if x.type == 'MESH' and 'sw_target_face' not in x.data.attributes))")
    res2 = subprocess.run([sys.executable, "-c", check, str(out_blend)], capture_output=True, text=True, timeout=60, env=env)
    line = next((x for x in res2.stdout.splitlines() if x.startswith("CHAR")), "")
    assert line.startswith("CHAR ['ARMATURE'] True") and "'BoneSphere'" in line and "'Crate'" in line, res2.stdout + res2.stderr
    # (the importer's own bone display shape, 'Icosphere', is never picked either)


def test_one_row_of_the_csv_alone_as_a_farm_task_runs_it(tmp_path):
    """--row N matches data row N only (a Flamenco task per pair); a row the CSV lacks is a
    one-line error before any work."""
    pytest.importorskip("bpy")
    _three_meshes(tmp_path)
    _write_pairs(tmp_path, ["source", "target"], ["a.obj", "b.obj"], ["a.obj", "c.obj"], ["b.obj", "missing.obj"])
    env = _env(tmp_path)

    def run(row, report):
        return _run_batch(tmp_path, env, "--row", row, "--report", tmp_path / report)

    res = run(2, "pair-2.csv")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    with open(tmp_path / "pair-2.csv", newline="") as fh:
        report = list(csv.DictReader(fh))
    assert [(r["source"], r["target"], r["status"]) for r in report] == [("a.obj", "c.obj", "ok")]
    res = run(3, "pair-3.csv")
    assert res.returncode == 1  # the row failed: the farm task fails, the others go on
    res = run(4, "pair-4.csv")
    assert res.returncode == 100 and res.stderr.strip().splitlines()[-1] == "error: --row 4: " + str(tmp_path / "pairs.csv") + " has 3 data rows"


def test_the_flamenco_job_type_makes_one_blender_task_per_row():
    """scripts/flamenco/stablewrap_batch.js compiled against stand-ins of Flamenco's job API (Node):
    3 rows -> 3 tasks running the batch script on rows 1..3, each with its own report and .blend."""
    import json
    import shutil

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the job type is JavaScript for the Flamenco Manager)")
    harness = r"""
const fs = require("fs"), vm = require("vm");
const author = {
  Task: (name, type) => ({name, type, commands: [], addCommand(c) { this.commands.push(c); }}),
  Command: (type, params) => ({type, params}),
};
const job = {settings: JSON.parse(process.argv[2]), tasks: [], addTask(t) { this.tasks.push(t); }};
const ctx = {author, print: console.log};
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8") + "\nthis.JOB_TYPE = JOB_TYPE; this.compileJob = compileJob;", ctx);
try { ctx.compileJob(job); } catch (e) { console.log(JSON.stringify({error: String(e)})); process.exit(0); }
console.log(JSON.stringify({label: ctx.JOB_TYPE.label, keys: ctx.JOB_TYPE.settings.map(s => s.key), tasks: job.tasks}));
"""
    script = os.path.join(REPO, "scripts", "flamenco", "stablewrap_batch.js")
    settings = {"pairs_csv": "/farm/pairs.csv", "rows": 3, "blendfile": "/farm/empty.blend",
                "script": "/farm/stablewrap/scripts/batch_match_csv.py", "output_dir": "/farm/out/",
                "quality": "fast", "uvs": True, "weights": False, "addon_dir": ""}
    res = subprocess.run([node, "-e", harness, script, json.dumps(settings)], capture_output=True, text=True, timeout=60)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["label"] == "StableWrap Batch" and {"pairs_csv", "rows", "script", "output_dir"} <= set(out["keys"])
    assert [t["name"] for t in out["tasks"]] == ["pair-1", "pair-2", "pair-3"]
    for row, task in enumerate(out["tasks"], start=1):
        (cmd,) = task["commands"]
        assert cmd["type"] == "blender-render" and cmd["params"]["blendfile"] == "/farm/empty.blend"
        assert cmd["params"]["args"] == ["--python", settings["script"], "--", "/farm/pairs.csv", "--row", str(row),
                                         "--report", f"/farm/out/pair-{row}_report.csv", "--save", f"/farm/out/pair-{row}.blend",
                                         "--quality", "fast", "--uvs"]
    bad = subprocess.run([node, "-e", harness, script, json.dumps({**settings, "rows": 0})], capture_output=True, text=True, timeout=60)
    assert "rows must be a whole number of pairs" in json.loads(bad.stdout.strip().splitlines()[-1])["error"]
