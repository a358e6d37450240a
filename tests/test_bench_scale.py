"""The benchmark's size sweep (``--scale``): sizes, subdivision, error on the original target, tables.

A synthetic set (a flat grid, identity ground truth, from tests.test_bench_runner) and a stand-in
matcher that maps every source vertex, shifted along x, to the closest target point: its error
is the same at every subdivision of the target, which is what evaluating on the original
surface must give.
"""
import numpy as np
import pytest

from engine.bench import cli
from engine.bench.datasets import load_pairs, load_triangles
from engine.bench.runner import Variant
from engine.bench.scale import errors_on_original, growth_exponent, parse_sizes, run_scale, subdivide_to
from engine.correspondence import Correspondence
from engine.errors import InputError
from tests.test_bench_runner import flat_grid, synth  # noqa: F401  (fixture)

HERE = "tests.test_bench_scale"


def shifted_closest_match(path_a, path_b, shift=0.2, **options):
    """Every source vertex, moved by ``shift`` along x (clamped to the grid), onto the closest target point."""
    from engine.geometry.closest import SurfaceQuery

    va, _ = load_triangles(path_a)
    vb, fb = load_triangles(path_b)
    p = va.copy()
    p[:, 0] = np.minimum(p[:, 0] + shift, 1.0)
    face, bary, _, _ = SurfaceQuery(vb, fb).closest(p)
    n, nt = len(va), len(vb)
    return Correspondence(
        src_to_tgt_face=face.astype(np.int32), src_to_tgt_bary=bary.astype(np.float32),
        tgt_to_src_face=np.zeros(nt, np.int32), tgt_to_src_bary=np.tile(np.float32([1, 0, 0]), (nt, 1)),
        fitted_vertices=p.astype(np.float32), confidence=np.ones(n, np.float32),
        meta={"seconds": {"prepare": 0.01, "match": 0.02}, "cpu_seconds": {"prepare": 0.01, "match": 0.03},
              "stage_peak_rss_mb": {"prepare": 50.0, "match": 60.0}},
    )


def test_parse_sizes_reads_k_and_m_and_rejects_nonsense():
    assert parse_sizes("80k, 5k,20k,5k") == [5000, 20000, 80000]
    assert parse_sizes("1.5m,300") == [300, 1_500_000]
    for bad, message in (("5k,lots", "'lots' is not a size"), ("0", "not a positive size"), (",", "no sizes")):
        with pytest.raises(InputError, match=message):
            parse_sizes(bad)


def test_subdivision_keeps_the_original_vertices_and_the_surface():
    v, f = flat_grid(9)
    v3 = np.c_[v[:, :2], np.sin(3 * v[:, 0])]  # not flat: midpoints must still lie on the original triangles
    sv, sf = subdivide_to(v3, f, 1000)
    assert len(sv) == 1089 and len(sf) == 16 * len(f)  # two levels: 81 -> 289 -> 1089
    np.testing.assert_array_equal(sv[: len(v3)], v3)
    from engine.geometry.closest import SurfaceQuery

    assert SurfaceQuery(v3, f).closest(sv)[3].max() < 1e-12
    assert len(subdivide_to(v3, f, 50)[0]) == 81  # already larger: unchanged
    assert len(subdivide_to(v3, f, 120)[0]) == 81  # 81 is closer to 120 in ratio than 289


def test_growth_exponent_is_the_log_log_slope():
    n = [5e3, 2e4, 8e4, 3.2e5]
    assert growth_exponent(n, [2 * x**1.5 for x in n]) == pytest.approx(1.5)
    assert growth_exponent(n, [7.0] * 4) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(growth_exponent(n[:1], [1.0]))
    assert growth_exponent(n, [1.0, float("nan"), 4.0, 8.0]) > 0  # failed sizes are left out


def _in_process(path_a, path_b, options, *, call, timeout, threads):
    corr = shifted_closest_match(path_a, path_b, **{k: v for k, v in options.items() if k != "device"})
    return {"ok": True, "seconds": 0.1, "peak_rss": 1e8, "face": corr.src_to_tgt_face, "bary": corr.src_to_tgt_bary,
            "meta": corr.meta}


def test_error_is_measured_on_the_original_target_at_every_size(synth, tmp_path):
    pair = load_pairs(synth / "data", "toy", limit=1)[0]
    runs = run_scale(pair, [81, 289, 1089], [Variant("shifted")], "target", tmp_path / "sweep",
                     cache_dir=str(tmp_path / "cache"), runner=_in_process)
    assert [(r.n_source, r.n_target) for r in runs] == [(81, 81), (81, 289), (81, 1089)]
    errs = [r.mean_error for r in runs]
    assert errs[0] > 0.05 and np.allclose(errs, errs[0], atol=1e-6)  # the same map at every size
    both = run_scale(pair, [289], [Variant("shifted")], "both", tmp_path / "sweep", cache_dir=str(tmp_path / "cache"),
                     runner=_in_process)
    assert (both[0].n_source, both[0].n_target) == (289, 289) and both[0].mean_error == pytest.approx(errs[0], abs=1e-6)


def test_errors_on_original_of_an_exact_map_are_zero(synth, tmp_path):
    from engine.bench.runner import GeodesicStore
    from engine.geometry.closest import SurfaceQuery

    pair = load_pairs(synth / "data", "toy", limit=1)[0]
    va, _ = load_triangles(pair.path_a)
    vb, fb = load_triangles(pair.path_b)
    sv, sf = subdivide_to(vb, fb, 289)
    import trimesh

    p = tmp_path / "b_289.ply"
    trimesh.Trimesh(sv, sf, process=False).export(p)
    face, bary, _, _ = SurfaceQuery(*load_triangles(p)).closest(va)
    e = errors_on_original(pair, str(p), face, bary, GeodesicStore(str(tmp_path / "cache")))
    assert e.shape == (len(va),) and e.max() < 1e-6


def test_cli_scale_runs_rows_in_workers_and_writes_tables(synth, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["--data", str(synth / "data"), "--set", "toy", "--scale", "81,300", "--features", "",
                   "--no-baseline", "--variant", f'shifted={{"_call": "{HERE}:shifted_closest_match"}}',
                   "--out", str(out), "--cache", str(tmp_path / "cache"), "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| 81 | 81 | shifted |" in printed and "| 81 | 289 | shifted |" in printed
    assert "## shifted: per stage" in printed and "| prepare | 0.0 / 0.0 / 50 | 0.0 / 0.0 / 50 |" in printed
    assert "## Growth in the target size" in printed
    assert (out / "scale.md").read_text().strip() == printed.strip()
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["b_289.ply"]  # no temp files left


def test_cli_scale_bad_sizes_exit_2(synth, tmp_path, capsys):
    assert cli.main(["--data", str(synth / "data"), "--set", "toy", "--scale", "big", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --scale: 'big' is not a size") and "\n" not in err
