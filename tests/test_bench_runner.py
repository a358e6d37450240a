"""The benchmark command: rows (variants), per-pair worker processes, failures, outputs, bad input.

A synthetic data set (two copies of a flat grid with identity ground truth) in
tmp_path, and stand-in matchers defined here (run through the ``_call`` hook in
spawned workers). The test marked ``data`` runs one faust5k pair with the rigid
baseline and is skipped when ../shared/data or engine.pipeline is absent.
"""
import csv
import json
import importlib.util
import os
import time

import numpy as np
import pytest

from engine.bench import cli
from engine.bench.datasets import default_data_dir, load_pairs, load_triangles, read_vts
from engine.bench.report import markdown_table, results_markdown, summarize_runs
from engine.bench.runner import (
    BASELINE_NAME,
    MatchRun,
    Variant,
    build_variants,
    parse_variant,
    run_benchmark,
    run_match_subprocess,
)
from engine.correspondence import Correspondence
from engine.errors import InputError
from tests.test_bench_metrics import flat_grid, identity_map, locate_on_grid

HERE = "tests.test_bench_runner"
N = 9  # grid side of the synthetic shapes


# --------------------------------------------------------------------------- stand-in matchers (run in workers)


def _result(face, bary, n_target):
    n = len(face)
    return Correspondence(
        src_to_tgt_face=face.astype(np.int32),
        src_to_tgt_bary=bary.astype(np.float32),
        tgt_to_src_face=np.zeros(n_target, np.int32),
        tgt_to_src_bary=np.tile(np.float32([1, 0, 0]), (n_target, 1)),
        fitted_vertices=np.zeros((n, 3), np.float32),
        confidence=np.ones(n, np.float32),
        meta={"stage_seconds": {"load": 0.01, "match": 0.02}, "features": "fake", "guidance": "fake-schedule"},
    )


def identity_match(path_a, path_b, **options):
    V, F = load_triangles(path_a)
    face, bary = identity_map(V, F)
    return _result(face, bary, len(load_triangles(path_b)[0]))


def shifted_match(path_a, path_b, shift=0.25, device=None):
    V, F = load_triangles(path_b)
    P = V.copy()
    P[:, 0] = np.minimum(P[:, 0] + shift, 1.0)
    face, bary = locate_on_grid(V, F, N, P)
    return _result(face, bary, len(V))


def raising_match(path_a, path_b, **options):
    raise InputError(f"{os.path.basename(path_a)}: pretend this mesh is broken")


def crashing_match(path_a, path_b, **options):
    os._exit(7)


def killed_match(path_a, path_b, **options):
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def hanging_match(path_a, path_b, **options):
    time.sleep(120)


def hungry_match(path_a, path_b, mb=300, **options):
    block = np.ones(mb * 2**20 // 8)  # touched: resident
    assert block.sum() > 0
    return identity_match(path_a, path_b)


def bad_map_match(path_a, path_b, **options):
    corr = identity_match(path_a, path_b)
    corr.src_to_tgt_face[0] = 10**6
    return corr


# --------------------------------------------------------------------------- a synthetic set


def _write_off(path, V, F):
    with open(path, "w") as fh:
        fh.write(f"OFF\n{len(V)} {len(F)} 0\n")
        fh.writelines(f"{x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in V)
        fh.writelines(f"3 {a} {b} {c}\n" for a, b, c in F)


@pytest.fixture
def synth(tmp_path):
    """data/toy/{a,b}.off (the same grid), identity ground truth, 2 pairs."""
    root = tmp_path / "data" / "toy"
    (root / "corres").mkdir(parents=True)
    V, F = flat_grid(N)
    for name in ("a", "b"):
        _write_off(root / f"{name}.off", V, F)
        np.savetxt(root / "corres" / f"{name}.vts", np.arange(1, len(V) + 1), fmt="%d")
    (root / "pairs.txt").write_text("a\tb\nb a\n")
    return tmp_path


# --------------------------------------------------------------------------- rows


def test_variants_baseline_first_then_features_then_extra():
    vs = build_variants(["geometric", "auto"], ['parts={"parts": true}', "fast="])
    assert [v.name for v in vs] == [BASELINE_NAME, "geometric", "auto", "parts", "fast"]
    assert vs[0].options == {"method": "rigid"}
    assert vs[1].match_options("cpu") == {"features": "geometric", "device": "cpu"}
    assert vs[3].match_options("cpu") == {"parts": True, "device": "cpu"}
    assert Variant("x", {"device": "cuda"}).match_options("cpu") == {"device": "cuda"}
    assert [v.name for v in build_variants(["geometric"], baseline=False)] == ["geometric"]
    v = parse_variant(f'mine={{"_call": "{HERE}:identity_match", "k": 1}}')
    assert v.call_target() == f"{HERE}:identity_match" and v.match_options(None) == {"k": 1}


@pytest.mark.parametrize(
    "features, extra, message",
    [
        (["nope"], [], "unknown mode"),
        (["geometric", "geometric"], [], "given twice"),
        ([], ["noequals"], "NAME=JSON"),
        ([], ["x={bad json"], "not valid JSON"),
        ([], ["x=[1, 2]"], "JSON object"),
        ([], ['x={"_call": "nocolon"}'], "module:function"),
    ],
)
def test_bad_rows_are_input_errors(features, extra, message):
    with pytest.raises(InputError, match=message):
        build_variants(features, extra)


def test_no_rows_at_all():
    with pytest.raises(InputError, match="nothing to run"):
        build_variants([], [], baseline=False)


# --------------------------------------------------------------------------- workers


def test_worker_returns_map_time_and_its_own_peak_memory(synth):
    a = synth / "data" / "toy" / "a.off"
    # generous timeouts: a spawned child imports numpy/engine first, slow on a loaded 2-core box
    small = run_match_subprocess(a, a, {}, call=f"{HERE}:identity_match", timeout=300)
    # large enough to rise above any transient peak of the child's imports (which depends on what
    # the parent test session has loaded)
    big = run_match_subprocess(a, a, {"mb": 1500}, call=f"{HERE}:hungry_match", timeout=300)
    assert small["ok"] and big["ok"], (small.get("error"), big.get("error"))
    assert small["face"].shape == (N * N,) and small["bary"].shape == (N * N, 3)
    assert small["meta"]["features"] == "fake"
    assert small["seconds"] >= 0  # reported; no bound on it (wall time depends on the machine's load)
    # ru_maxrss of each fresh process: the 1.5 GB block shows in its pair only
    assert big["peak_rss"] - small["peak_rss"] > 700 * 2**20


@pytest.mark.parametrize(
    "fn, timeout, message",
    [
        ("raising_match", 60, "InputError: a.off: pretend this mesh is broken"),
        ("crashing_match", 60, "worker exited with code 7"),
        ("killed_match", 60, "worker killed by SIGKILL"),
        ("hanging_match", 2, "timed out after 2 s"),
    ],
)
def test_worker_failures_become_one_line_results(synth, fn, timeout, message):
    a = synth / "data" / "toy" / "a.off"
    t0 = time.perf_counter()
    res = run_match_subprocess(a, a, {}, call=f"{HERE}:{fn}", timeout=timeout)
    assert not res["ok"]
    assert res["error"].startswith(message) and "\n" not in res["error"]
    assert time.perf_counter() - t0 < timeout + 20


def test_unexpected_exception_says_where(synth):
    a = synth / "data" / "toy" / "a.off"
    res = run_match_subprocess(a, a, {"unknown_option": 1}, call=f"{HERE}:shifted_match", timeout=60)
    assert not res["ok"] and res["error"].startswith("TypeError:")


# --------------------------------------------------------------------------- whole runs


def _fake_runner(table):
    """In-process stand-in for run_match_subprocess: ``table[call]`` gives the result."""

    def run(path_a, path_b, options, *, call, timeout, threads):
        fn = globals()[call.split(":")[1]]
        try:
            corr = fn(path_a, path_b, **{k: v for k, v in options.items() if k != "device"})
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": 0.0, "peak_rss": 1.0}
        out = {"ok": True, "face": corr.src_to_tgt_face, "bary": corr.src_to_tgt_bary, "seconds": table.get(call, 1.0), "peak_rss": 2.0 * 2**20, "meta": corr.meta}
        if "shift" in call:  # a fitted-source quality, as the real runner measures it
            out["quality"] = {"flipped_pct": 0.5 if "a.off" in path_a else 1.5, "folds_pct": 0.25, "dist_p99_pct": 0.1}
        return out

    return run


def test_run_benchmark_scores_rows_and_keeps_failures(synth, tmp_path):
    pairs = load_pairs(synth / "data", "toy")
    variants = [
        Variant("ident", {"_call": f"{HERE}:identity_match"}),
        Variant("shift", {"_call": f"{HERE}:shifted_match", "shift": 0.25}),
        Variant("broken", {"_call": f"{HERE}:raising_match"}),
        Variant("badmap", {"_call": f"{HERE}:bad_map_match"}),
    ]
    runs = run_benchmark(pairs, variants, cache_dir=tmp_path / "cache", runner=_fake_runner({}))
    assert len(runs) == 8
    by = {(r.variant, r.pair.index): r for r in runs}
    assert by["ident", 0].ok and by["ident", 0].mean == 0
    assert 0.15 < by["shift", 1].mean < 0.25  # 0.25 for points that could move that far, less at the border
    assert not by["broken", 0].ok and "pretend" in by["broken", 0].error
    assert not by["badmap", 1].ok and by["badmap", 1].error.startswith("evaluation: map: target face index out of range")
    rows = summarize_runs(runs, [v.name for v in variants])
    assert [r.name for r in rows] == ["ident", "shift", "broken", "badmap"]
    assert rows[0].summary.mean == 0 and rows[0].n_ok == 2 and rows[0].n_failed == 0
    assert rows[0].stage_seconds == {"load": 0.01, "match": 0.02}
    assert rows[1].swaps == 2  # mean error > 0.10 on both pairs
    assert rows[2].summary is None and rows[2].n_failed == 2
    md = results_markdown(rows, runs, {"set": "toy"})
    assert "- ident: features fake (2 pairs)" in md
    assert "- ident: load 0.01, match 0.02" in md
    assert "- broken on a->b: InputError: a.off: pretend this mesh is broken" in md
    assert "- shift on a->b: " in md  # listed among the pairs with mean error > 10
    table = markdown_table(rows)
    assert "| ident | 0.00 | 0.00 | 1.000 | 1.000 | 0 | - | - | - | - | - | 1.0 | 2 MB | 2/0 |" in table
    assert "| broken | - | - | - | - | - | - |" in table
    # fitted-source columns: mean flipped / folds % over pairs, median p99 distance
    assert "| 1.00 | 0.25 | 0.10 |" in table.split("| shift |")[1].split("\n")[0]


def test_cli_end_to_end_in_worker_processes(synth, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(
        [
            "--data", str(synth / "data"), "--set", "toy", "--pairs", "1", "--features", "", "--no-baseline",
            "--variant", f'ident={{"_call": "{HERE}:identity_match"}}',
            "--variant", f'crash={{"_call": "{HERE}:crashing_match"}}',
            "--out", str(out), "--cache", str(tmp_path / "cache"), "-q",
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| ident | 0.00 | 0.00 | 1.000 | 1.000 | 0 |" in printed
    assert "| crash | - |" in printed and "| 0/1 |" in printed
    md = (out / "results.md").read_text()
    assert "| ident | 0.00" in md and "crash on a->b: worker exited with code 7" in md
    with open(out / "pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["ok"]) for r in rows] == [("ident", "1"), ("crash", "0")]
    assert float(rows[0]["mean_x100"]) == 0 and float(rows[0]["peak_rss_mb"]) > 10
    assert json.loads(rows[0]["fit"]) == {"guidance": "fake-schedule"}  # what the matcher chose, per pair
    assert (out / "cumulative_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "errors.npz") as z:
        assert z.files == ["ident|a->b"] and z["ident|a->b"].shape == (N * N,) and not z["ident|a->b"].any()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}/missing"], "benchmark data folder not found"),
        (["--set", "nope"], "unknown benchmark set 'nope'"),
        (["--set", "empty"], "no pairs listed"),
        (["--set", "holes"], "missing file"),
        (["--set", "toy", "--pairs", "0"], "--pairs must be at least 1"),
        (["--set", "toy", "--only", "3"], "pair number 3 is out of range"),
        (["--set", "toy", "--only", "1,x"], "comma-separated pair numbers"),
        (["--set", "toy", "--features", "geometric", "--variant", "geometric={}"], "given twice"),
    ],
)
def test_cli_bad_input_exit_2_with_one_line(synth, tmp_path, capsys, args, message):
    data = synth / "data"
    (data / "empty").mkdir()
    (data / "empty" / "pairs.txt").write_text("\n# nothing here\n")
    (data / "holes").mkdir()
    (data / "holes" / "pairs.txt").write_text("a b\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    full = (["--data", str(data)] if "--data" not in args else []) + args + ["--out", str(tmp_path / "o")]
    assert cli.main(full) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_only_selects_pairs_by_number(synth):
    pairs = load_pairs(synth / "data", "toy", only=[2])
    assert [(p.index, p.name_a, p.name_b) for p in pairs] == [(1, "b", "a")]
    assert [p.index for p in load_pairs(synth / "data", "toy", limit=1, only=[2, 1, 2])] == [1, 0]


def test_read_vts_is_one_based(tmp_path):
    p = tmp_path / "x.vts"
    p.write_text("1\n5\n3\n")
    assert read_vts(p).tolist() == [0, 4, 2]
    p.write_text("0\n1\n")
    with pytest.raises(InputError, match="1-based"):
        read_vts(p)


# --------------------------------------------------------------------------- the real data (tiny)

HAS_DATA = (default_data_dir() / "faust5k" / "pairs.txt").is_file()


@pytest.mark.data
@pytest.mark.skipif(not HAS_DATA, reason="../shared/data not present")
@pytest.mark.skipif(importlib.util.find_spec("engine.pipeline") is None, reason="engine.pipeline not written yet")
def test_faust5k_one_pair_rigid_baseline():
    pairs = load_pairs(default_data_dir(), "faust5k", limit=1)
    gt_a, gt_b = pairs[0].ground_truth()
    assert len(gt_a) == len(gt_b) > 1000
    runs = run_benchmark(pairs, build_variants([]), timeout=300)
    (run,) = runs
    assert run.ok, run.error
    # rigid + nearest point: far from perfect, far from random (README: ~21 for centring + nearest vertex)
    assert 0.01 < run.mean < 0.5
    assert run.peak_rss > 0 and run.seconds > 0
    assert isinstance(run, MatchRun)


def test_split_dev_is_the_first_30_pairs_and_val_the_rest():
    from engine.bench.datasets import split_numbers

    assert split_numbers("faust5k", 97, "dev") == list(range(1, 31))
    assert split_numbers("faust5k", 97, "val") == list(range(31, 98))
    assert split_numbers("smal_r", 60, "all") is None
    assert split_numbers("tosca_iso", 138, "val") == list(range(1, 139))  # never tuned on: all validation
    with pytest.raises(InputError, match="tosca_iso has no dev pairs"):
        split_numbers("tosca_iso", 138, "dev")
    with pytest.raises(InputError, match="unknown split 'train'"):
        split_numbers("faust5k", 97, "train")
    # a small set has only dev pairs; --only and --pairs count within the split
    assert split_numbers("toy", 3, "dev") == [1, 2, 3]
    with pytest.raises(InputError, match="toy has no val pairs"):
        split_numbers("toy", 3, "val")


def test_throughput_rows_one_batch_per_worker_count(monkeypatch, tmp_path):
    """engine.bench.throughput runs the same rows once per worker count, splits the cores into
    threads per worker, and states throughput against the first row."""
    import os

    from engine import batch
    from engine.bench import throughput

    calls, now = [], [0.0]

    def fake_run(rows, out, *, workers, threads, force, cluster, log):
        calls.append((len(rows), workers, threads, force, cluster))
        now[0] += 60.0 / workers  # a fake clock: two workers finish in half the time
        return [batch.RowResult(r.name, r.source, r.target, "done", seconds=1.0, peak_rss_mb=100.0 * workers)
                for r in rows]

    monkeypatch.setattr(batch, "run", fake_run)
    pair = type("P", (), {"path_a": tmp_path / "a.off", "path_b": tmp_path / "b.off", "label": "a->b"})
    monkeypatch.setattr("engine.bench.datasets.load_pairs", lambda data, s, limit: [pair] * 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: now[0])
    table = throughput.run("data", "faust5k", 3, [1, 2], out=str(tmp_path))
    assert calls == [(3, 1, 4, True, "local"), (3, 2, 2, True, "local")]
    assert [r["throughput_x"] for r in table][0] == 1.0 and 1.5 < table[1]["throughput_x"] < 2.5
    assert table[1]["median_peak_mb"] == 200.0 and table[1]["done"] == 3
    assert "| 2 x 2 | 3/3 |" in throughput.markdown(table)


def test_busy_benchmark_times_the_match_quiet_and_beside_spinning_processes(monkeypatch):
    """engine.bench.busy: the same match quiet and with CPU-bound processes beside it; the busy
    runs see the spinners (here: a stand-in match that measures them), which stop afterwards."""
    import multiprocessing as mp

    from engine.bench import busy, runner

    seen = []

    def fake_match(path_a, path_b, options, threads=None):
        seen.append(len(mp.active_children()))
        return {"ok": True, "seconds": 2.0 if seen[-1] else 1.0}

    monkeypatch.setattr(runner, "run_match_subprocess", fake_match)
    r = busy.measure("a.off", "b.off", {"method": "rigid"}, runs=2, busy=1)
    assert seen == [0, 0, 1, 1]
    assert r["quiet_median"] == 1.0 and r["busy_median"] == 2.0 and r["ratio"] == 2.0
    assert r["fair_share"] == max(1.0, 2 / r["cores"])
    assert not mp.active_children()
    table = busy.markdown("pair", r)
    assert "| median | 1.0 | 2.0 | 2.00x |" in table


def test_large_benchmark_subdivides_the_target_once_and_times_every_match_with_fresh_keypoints(monkeypatch, tmp_path):
    """engine.bench.large: the target subdivided to about the asked size (written once), every
    row's matches with an empty keypoint cache of their own, medians, and the ratio to the
    small pair's default match."""
    import os

    import trimesh

    from engine.bench import large, runner
    from engine.bench.geodesics import CACHE_ENV

    box = trimesh.creation.icosphere(subdivisions=2)  # 162 vertices
    src = tmp_path / "ball.ply"
    box.export(src)
    path, n = large.large_target(os.fspath(src), 2000, tmp_path / "big")
    assert n == 2562 and os.path.isfile(path)  # two subdivisions: 162 -> 642 -> 2562
    stamp = os.stat(path).st_mtime_ns
    assert large.large_target(os.fspath(src), 2000, tmp_path / "big") == (path, n)
    assert os.stat(path).st_mtime_ns == stamp  # reused, not written again

    caches = []
    monkeypatch.setenv(CACHE_ENV, "/the/users/cache")

    def fake_match(path_a, path_b, options, threads=None):
        cache = os.environ[CACHE_ENV]
        assert os.path.isdir(cache) and not os.listdir(cache)
        caches.append(cache)
        big = path_b == path
        secs = [3.0, 1.0, 2.0][len(caches) % 3] * (2.5 if big else 1.0)
        return {"ok": True, "seconds": secs, "peak_rss": 2**30 * (2 if big else 1),
                "meta": {"seconds": {"prepare": 0.5, "fit surface": secs - 0.5}}}

    monkeypatch.setattr(runner, "run_match_subprocess", fake_match)
    rows = [("small", "a.off", "b.off", {}), ("big", os.fspath(src), path, {})]
    table = large.measure(rows, runs=3)
    assert len(set(caches)) == 6 and os.environ[CACHE_ENV] == "/the/users/cache"
    assert [r["seconds"] for r in table] == [2.0, 5.0] and table[1]["peak_rss"] == 2 * 2**30
    assert table[0]["stages"] == {"prepare": 0.5, "fit surface": 1.5}
    md = large.markdown(table, "small")
    assert "| big | 5.00 |" in md and "| 2.00 GB | 2.50x |" in md


def test_large_benchmark_names_a_missing_mesh(tmp_path, capsys):
    from engine.bench import large

    assert large.main(["--data", os.fspath(tmp_path), "--template", "nope.obj"]) == 1
    assert "--template: no mesh file at nope.obj" in capsys.readouterr().err
