"""``python -m engine``: every bad input of issue 2 gives either a correct result or one error line.

Failures: exit code != 0, exactly one line on stderr starting with ``error:``, no
output file. Successes: exit code 0 and an .npz whose arrays have the contract's
keys, shapes and dtypes, finite values and valid ranges.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from engine import cli
from engine.correspondence import NPZ_KEYS

from .conftest import write_obj

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--quality", "fast", "--features", "geometric"]


def run_cli(capsys, *args) -> tuple[int, list[str], str]:
    """engine.cli.main in-process; returns (exit code, non-empty stderr lines, stdout)."""
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out


def assert_one_line_failure(code, err, out_path, *needles):
    assert code != 0
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err
    assert not Path(out_path).exists()
    leftovers = [p for p in Path(out_path).parent.glob(".sw-*")] if Path(out_path).parent.is_dir() else []
    assert not leftovers, leftovers


def check_npz(path, n_src, n_tgt, n_src_tris, n_tgt_tris):
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(NPZ_KEYS)
        data = {k: z[k] for k in z.files}
    expect = {
        "src_to_tgt_face": ((n_src,), np.int32),
        "src_to_tgt_bary": ((n_src, 3), np.float32),
        "tgt_to_src_face": ((n_tgt,), np.int32),
        "tgt_to_src_bary": ((n_tgt, 3), np.float32),
        "fitted_vertices": ((n_src, 3), np.float32),
        "confidence": ((n_src,), np.float32),
    }
    for key, (shape, dtype) in expect.items():
        assert data[key].shape == shape, key
        assert data[key].dtype == dtype, key
        assert np.all(np.isfinite(data[key])), key
    assert data["src_to_tgt_face"].min() >= 0 and data["src_to_tgt_face"].max() < n_tgt_tris
    assert data["tgt_to_src_face"].min() >= 0 and data["tgt_to_src_face"].max() < n_src_tris
    for key in ("src_to_tgt_bary", "tgt_to_src_bary"):
        b = data[key]
        assert b.min() >= 0 and b.max() <= 1
        np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-4)
    assert 0 <= data["confidence"].min() and data["confidence"].max() <= 1
    meta = json.loads(str(data["meta"]))
    assert {"version", "device", "features", "seconds", "peak_rss_mb"} <= set(meta)
    return data, meta


def sphere(subdiv=3, scale=(1.0, 0.7, 0.5)):
    s = trimesh.creation.icosphere(subdivisions=subdiv)
    return np.asarray(s.vertices) * np.asarray(scale), np.asarray(s.faces)


# --------------------------------------------------------------------------- help / wiring


def test_help_lists_every_command_and_documents_the_files(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for command in ("match", "transfer", "part", "models", "bench", "demo"):
        assert command in text
        assert f"(unavailable" not in text, text
    with pytest.raises(SystemExit):
        cli.main(["match", "--help"])
    text = capsys.readouterr().out
    for needle in ("source_vertex target_vertex", "0-based", ".npy", "--exclude", "--config", "MatchConfig",
                   "--quality", "--method", "fitted_vertices"):
        assert needle in text, needle


def test_usage_error_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["match", "a.obj"])  # no TARGET, no -o
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ")


def test_broken_optional_module_does_not_break_match(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "PLUGIN_COMMANDS", cli.PLUGIN_COMMANDS + (("broken", "engine.no_such_module"),))
    parser = cli.build_parser()
    assert parser.parse_args(["match", "a.obj", "b.obj", "-o", "c.npz"]).func is cli.cmd_match
    code, err, _ = run_cli(capsys, "broken", "x")
    assert code != 0 and len(err) == 1 and "unavailable" in err[0] and "engine.no_such_module" in err[0]


def test_unexpected_exception_is_one_line_internal_error(monkeypatch, capsys, tmp_path, small_pair_files):
    import engine.pipeline

    def boom(*a, **k):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(engine.pipeline, "match", boom)
    out = tmp_path / "out.npz"
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    code, err, _ = run_cli(capsys, "match", *small_pair_files, "-o", out)
    assert_one_line_failure(code, err, out, "internal error", "something broke", cli.DEBUG_ENV)
    assert code == cli.EXIT_INTERNAL
    # with the debug variable set, the traceback comes first and the one-line error last
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    code, err, _ = run_cli(capsys, "match", *small_pair_files, "-o", out)
    assert code == cli.EXIT_INTERNAL
    assert err[0].startswith("Traceback") and err[-1].startswith("error: internal error")


# --------------------------------------------------------------------------- bad input: failures


def _bad_inputs(tmp: Path) -> dict:
    """name -> (source path, expected words in the error)."""
    cases = {}
    cases["missing file"] = (tmp / "nope.obj", ["nope.obj", "not found"])
    garbage = tmp / "garbage.ply"
    garbage.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99999\n" + os.urandom(64))
    cases["unreadable file"] = (garbage, ["garbage.ply"])
    xyz = tmp / "points.xyz"
    xyz.write_text("0 0 0\n1 0 0\n")
    cases["unsupported format"] = (xyz, ["unsupported", ".xyz"])
    empty = tmp / "empty.obj"
    empty.write_text("# nothing here\n")
    cases["empty mesh"] = (empty, ["empty"])
    nofaces = tmp / "nofaces.obj"
    nofaces.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n")
    cases["no faces"] = (nofaces, ["no faces"])
    v, f = sphere(2)
    vn = v.copy()
    vn[5, 1] = np.nan
    cases["NaN coordinates"] = (write_obj(tmp / "nan.obj", vn, f), ["NaN"])
    vi = v.copy()
    vi[7, 2] = np.inf
    cases["infinite coordinates"] = (write_obj(tmp / "inf.obj", vi, f), ["infinite"])
    cloud = tmp / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).normal(size=(200, 3))).export(cloud)
    cases["point cloud"] = (cloud, ["cloud.ply"])  # today "mesh is empty"; "no faces" would be clearer
    cases["single triangle"] = (write_obj(tmp / "tri.obj", np.eye(3), [[0, 1, 2]]), ["only 1 valid face"])
    cases["face index out of range"] = (write_obj(tmp / "badidx.obj", v, np.vstack([f, [[0, 1, len(v) + 5]]])), ["out of range"])
    folder = tmp / "a_folder.obj"
    folder.mkdir()
    cases["folder as input"] = (folder, ["folder"])
    return cases


BAD_NAMES = ["missing file", "unreadable file", "unsupported format", "empty mesh", "no faces", "NaN coordinates",
             "infinite coordinates", "point cloud", "single triangle", "face index out of range", "folder as input"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("role", ["source", "target"])
def test_bad_mesh_is_one_line_error_and_no_output(tmp_path, capsys, small_pair_files, name, role):
    bad, needles = _bad_inputs(tmp_path)[name]
    good_src, good_tgt = small_pair_files
    src, tgt = (bad, good_tgt) if role == "source" else (good_src, bad)
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", src, tgt, "-o", out, *FAST)
    assert_one_line_failure(code, err, out, *needles)
    assert code == cli.EXIT_ERROR


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_permissions(tmp_path, capsys, small_pair_files):
    locked = Path(write_obj(tmp_path / "locked.obj", *sphere(1)))
    locked.chmod(0)
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", locked, small_pair_files[1], "-o", out, *FAST)
    assert_one_line_failure(code, err, out, "not readable")


def test_invalid_output_fails_fast(tmp_path, capsys, small_pair_files):
    t0 = time.perf_counter()
    out = tmp_path / "no" / "such" / "folder" / "out.npz"
    code, err, _ = run_cli(capsys, "match", *small_pair_files, "-o", out, *FAST)
    assert_one_line_failure(code, err, out, "does not exist")
    code, err, _ = run_cli(capsys, "match", *small_pair_files, "-o", tmp_path, *FAST)
    assert code != 0 and len(err) == 1 and "is a folder" in err[0]
    assert time.perf_counter() - t0 < 2.0  # nothing heavy ran


@pytest.mark.parametrize("option, content, needle", [
    ("--landmarks", "0 1 2\n", "expected two vertex indices"),
    ("--landmarks", "0 99999\n", "out of range"),
    ("--exclude", "a b c\n", "cannot read exclusion"),
    ("--skin", "a b c\n", "cannot read skin list"),
    ("--skin", "99999\n", "skin: vertex index out of range"),
    ("--config", '{"no_such_setting": 1}', "unknown setting"),
    ("--config", "{not json", "cannot parse config"),
])
def test_bad_option_files(tmp_path, capsys, small_pair_files, option, content, needle):
    f = tmp_path / ("opt.json" if option == "--config" else "opt.txt")
    f.write_text(content)
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", *small_pair_files, "-o", out, option, f, *FAST)
    assert_one_line_failure(code, err, out, needle)


def test_missing_option_file(tmp_path, capsys, small_pair_files):
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", *small_pair_files, "-o", out, "--landmarks", tmp_path / "lm.txt", *FAST)
    assert_one_line_failure(code, err, out, "lm.txt", "not found")


# --------------------------------------------------------------------------- bad input: successes


def _messy_source(tmp: Path, pair) -> tuple[str, int, int]:
    """The sample source as a triangle soup (every face its own vertices: duplicates to weld), plus
    zero-area faces, a repeated face and a fin that makes an edge non-manifold. Written as OBJ."""
    v, f = pair.source_vertices, pair.source_faces
    soup_v = v[f].reshape(-1, 3)
    soup_f = np.arange(len(soup_v)).reshape(-1, 3)
    extra_v = [v[f[0, 0]], v[f[0, 1]], v[f[0, 0]] + 1e-3 * (v[f[0, 1]] - v[f[0, 0]])]  # collinear: zero area
    fin_apex = v[f[10]].mean(0) + 0.3 * np.cross(v[f[10, 1]] - v[f[10, 0]], v[f[10, 2]] - v[f[10, 0]]) / 1e-3
    fin_apex = v[f[10]].mean(0) + 0.05 * (fin_apex - v[f[10]].mean(0)) / np.linalg.norm(fin_apex - v[f[10]].mean(0))
    n0 = len(soup_v)
    all_v = np.vstack([soup_v, extra_v, [fin_apex]])
    extra_f = [[n0, n0 + 1, n0 + 2],  # zero area
               [soup_f[3, 0], soup_f[3, 1], soup_f[3, 1]],  # repeated index
               list(soup_f[5]),  # duplicate face
               [soup_f[10, 0], soup_f[10, 1], n0 + 3]]  # third face on an edge: non-manifold
    all_f = np.vstack([soup_f, extra_f])
    path = write_obj(tmp / "messy.obj", all_v, all_f)
    return path, len(all_v), len(all_f)


def _scaled_target(tmp: Path, pair) -> tuple[str, np.ndarray]:
    scale, shift = 100.0, np.array([300.0, -50.0, 20.0])
    v = scale * pair.target_vertices + shift
    gt = scale * pair.gt_src_to_tgt + shift
    return write_obj(tmp / "target_x100.obj", v, pair.target_faces), gt


def test_messy_source_to_100x_target(tmp_path, capsys, small_pair):
    """Duplicate vertices, zero-area / duplicate faces, a non-manifold edge; target (re-posed, rotated by the
    sample generator) 100x larger and moved far away: the fit lands near the ground truth, in target coordinates."""
    src, n_src, n_src_tris = _messy_source(tmp_path, small_pair)
    tgt, gt = _scaled_target(tmp_path, small_pair)
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", src, tgt, "-o", out, *FAST)
    assert code == 0, err
    # no progress bar when stderr is not a terminal: only the fallback notes, the verdict and the
    # fit's coverage, one line each
    assert all(line.startswith(("note: ", "verdict: ", "coverage: ")) for line in err), err
    assert any("no body found on the source mesh 'messy.obj'" in line for line in err)
    assert sum(line.startswith("verdict: ") for line in err) == 1
    assert sum(line.startswith("coverage: ") and "% of the target not covered" in line for line in err) == 1
    data, meta = check_npz(out, n_src, len(small_pair.target_vertices), n_src_tris, len(small_pair.target_faces))
    rep = meta["source_report"]
    assert rep["welded_vertices"] > 0 and rep["degenerate_faces_dropped"] >= 2 and rep["duplicate_faces_dropped"] >= 1
    assert rep["non_manifold_edges"] >= 1
    # the soup's copies of one sample vertex land at one point; the result is in the target's (100x) frame
    diag = np.linalg.norm(gt.max(0) - gt.min(0))
    soup_gt = gt[small_pair.source_faces.reshape(-1)]
    err_rel = np.linalg.norm(data["fitted_vertices"][: len(soup_gt)] - soup_gt, axis=1) / diag
    assert np.median(err_rel) < 0.10, np.median(err_rel)


def test_several_components_and_rotated_target(tmp_path, capsys):
    """Two separate bodies in each mesh; the target has another tessellation and is turned by 120 degrees.
    The source's smaller body, apart from the larger, is not skin: it is kept in place beside it
    and named (engine.geometry.pieces)."""
    a_v, a_f = sphere(3, (1.0, 0.6, 0.5))
    b_v, b_f = sphere(2, (0.4, 0.4, 0.9))
    src_v = np.vstack([a_v, b_v + [2.5, 0, 0]])
    src_f = np.vstack([a_f, b_f + len(a_v)])
    c_v, c_f = sphere(2, (1.1, 0.6, 0.5))
    d_v, d_f = sphere(3, (0.4, 0.45, 0.9))
    R = Rotation.from_euler("zx", [120, 30], degrees=True).as_matrix()
    tgt_v = np.vstack([c_v, d_v + [2.8, 0.2, 0]]) @ R.T
    tgt_f = np.vstack([c_f, d_f + len(c_v)])
    src = write_obj(tmp_path / "two_src.obj", src_v, src_f)
    tgt = write_obj(tmp_path / "two_tgt.obj", tgt_v, tgt_f)
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", src, tgt, "-o", out, *FAST)
    assert code == 0, err
    data, meta = check_npz(out, len(src_v), len(tgt_v), len(src_f), len(tgt_f))
    assert meta["source_report"]["components"] == 2 and meta["target_report"]["components"] == 2
    assert meta["pieces"]["kinds"] == {"skin": 1, "apart": 1} and meta["pieces"]["riding"][0]["carried"] == "kept"
    assert any("kept in place" in line for line in err)


def test_rigid_method_on_ply_and_off(tmp_path, capsys, small_pair):
    """--method rigid (the baseline) with the two meshes in other formats (.ply, .off)."""
    src = tmp_path / "s.ply"
    trimesh.Trimesh(small_pair.source_vertices, small_pair.source_faces, process=False).export(src)
    tgt = tmp_path / "t.off"
    trimesh.Trimesh(small_pair.target_vertices, small_pair.target_faces, process=False).export(tgt)
    out = tmp_path / "out.npz"
    code, err, _ = run_cli(capsys, "match", src, tgt, "-o", out, "--method", "rigid", "--quality", "fast")
    assert code == 0, err
    _, meta = check_npz(out, len(small_pair.source_vertices), len(small_pair.target_vertices),
                        len(small_pair.source_faces), len(small_pair.target_faces))
    assert meta["method"] == "rigid"


# --------------------------------------------------------------------------- subprocess: exit codes, Ctrl-C


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop(cli.DEBUG_ENV, None)
    return env


def test_subprocess_missing_file_one_line(tmp_path):
    out = tmp_path / "out.npz"
    r = subprocess.run([sys.executable, "-m", "engine", "match", "missing_a.obj", "missing_b.obj", "-o", str(out)],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["error: missing_a.obj: source mesh not found"]
    assert not out.exists()


def test_ctrl_c_cancels_cleanly(tmp_path, small_pair_files):
    out = tmp_path / "out.npz"
    cfg = tmp_path / "long.json"  # a registration of minutes: the Ctrl-C lands inside the match however fast it got
    cfg.write_text('{"reg_steps": 20000}')
    proc = subprocess.Popen([sys.executable, "-m", "engine", "match", *small_pair_files, "-o", str(out),
                             "--features", "geometric", "--config", str(cfg)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
                            # a test run started as a background job inherits an ignored SIGINT: restore Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(6.0)  # past the imports (slow on a busy machine), well inside the match
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert [ln for ln in stderr.splitlines() if ln.strip()] == ["error: cancelled"]
    assert not out.exists()
    assert not list(tmp_path.glob(".sw-*"))


def test_ctrl_c_inside_code_run_from_a_string_still_exits_130(tmp_path):
    """CPython marks a Ctrl-C caught after it landed in exec'd code (dataclasses and
    namedtuple build methods that way) as unhandled, and ``python -m`` then kills
    itself with SIGINT (-2) at exit: the cancel path must clear that mark."""
    pkg = tmp_path / "sigint_in_exec"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import sys\n"
        "from engine import cli\n"
        "def interrupted(args):\n"
        "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10000): pass')\n"
        "sys.exit(cli._run(interrupted, None))\n")
    env = dict(_env(), PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    r = subprocess.run([sys.executable, "-m", "sigint_in_exec"], capture_output=True, text=True, env=env,
                       timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == "error: cancelled"


# --------------------------------------------------------------------------- demo (the one end-to-end test)


def test_demo_writes_meshes_match_and_picture(tmp_path, capsys):
    out = tmp_path / "demo_out"
    code = cli.main(["demo", "--out", str(out), "--quality", "fast", "--features", "geometric"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("source.obj", "target.obj", "match.npz", "correspondence.png"):
        assert (out / name).is_file(), name
    from PIL import Image

    with Image.open(out / "correspondence.png") as im:
        assert im.size[0] > 1000 and im.size[1] > 300
        pixels = np.asarray(im.convert("RGB"), np.float64)
    assert pixels.std() > 10  # something was drawn
    from engine.mesh import load_mesh

    src, tgt = load_mesh(out / "source.obj"), load_mesh(out / "target.obj")
    assert 2000 <= len(src.orig_vertices) <= 5000 and 2000 <= len(tgt.orig_vertices) <= 5000
    assert len(src.orig_vertices) != len(tgt.orig_vertices)  # remeshed, not a copy
    check_npz(out / "match.npz", len(src.orig_vertices), len(tgt.orig_vertices), len(src.orig_triangles),
              len(tgt.orig_triangles))
    assert "error against the ground truth" in printed and "mean" in printed


def test_sample_ground_truth_is_consistent():
    """The generator's ground truth lies on the target surface and equals the analytic deformation of the
    source vertex's sphere point (up to the target's piecewise-linear tessellation)."""
    from engine.samples import TARGET_LIMB_SCALE, creature, icosphere, make_pair, repose

    pair = make_pair(source_subdivisions=2, target_vertices=900, rotation_deg=0.0, scale=1.0)
    tv, tf = pair.target_vertices, pair.target_faces
    diag = np.linalg.norm(tv.max(0) - tv.min(0))
    from engine.geometry.closest import SurfaceQuery

    _, _, _, dist = SurfaceQuery(tv, tf).closest(pair.gt_src_to_tgt)
    assert dist.max() < 1e-9 * diag
    q, _ = icosphere(2)
    analytic = repose(q, creature(q, TARGET_LIMB_SCALE)) + np.array([0.4, -1.2, 2.0])
    gap = np.linalg.norm(pair.gt_src_to_tgt - analytic, axis=1) / diag
    assert np.median(gap) < 0.01 and gap.max() < 0.05
