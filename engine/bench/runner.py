"""Run matcher variants on benchmark pairs, one fresh process per match.

A *variant* is one row of the benchmark table: a name and the keyword options
passed to :func:`engine.match` (``{"features": "geometric"}``, ``{"method":
"rigid"}``, ``{"parts": True}``...). Later work adds rows by adding variants;
a variant may also name another callable with the reserved key ``"_call"``
(``"package.module:function"``, called as ``function(path_a, path_b,
**options)`` and returning a :class:`engine.Correspondence`).

Every match runs in its own fresh process, so that the peak resident memory
(``ru_maxrss``) is that of one pair, and a crash, a hang (``timeout``) or an
exception fails that pair only.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from ..errors import InputError
from ..features.select import FEATURE_MODES
from ..isolated import resolve, run_isolated
from .datasets import BenchPair, load_triangles
from .geodesics import geodesic_matrix
from .metrics import map_errors

BASELINE_NAME = "rigid (baseline)"
CALL_KEY = "_call"


@dataclass(frozen=True)
class Variant:
    """One benchmark row: a name and the options of :func:`engine.match`."""

    name: str
    options: dict = field(default_factory=dict)

    def call_target(self) -> str:
        return str(self.options.get(CALL_KEY, "engine:match"))

    def match_options(self, device: str | None) -> dict:
        opts = {k: v for k, v in self.options.items() if k != CALL_KEY}
        if device is not None and "device" not in opts:
            opts["device"] = device
        return opts


def baseline_variant() -> Variant:
    """Rigid pre-alignment + nearest surface point."""
    return Variant(BASELINE_NAME, {"method": "rigid"})


def feature_variant(mode: str) -> Variant:
    if mode not in FEATURE_MODES:
        raise InputError(f"--features: unknown mode {mode!r}; use one of {', '.join(FEATURE_MODES)}")
    return Variant(mode, {"features": mode})


def parse_variant(spec: str) -> Variant:
    """Parse ``NAME=JSON_OPTIONS`` (e.g. ``parts={"parts": true}``)."""
    name, sep, raw = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(f"--variant {spec!r}: expected NAME=JSON_OPTIONS, e.g. parts='{{\"parts\": true}}'")
    try:
        options = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"--variant {name}: options are not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(options, dict):
        raise InputError(f"--variant {name}: options must be a JSON object, got {type(options).__name__}")
    call = options.get(CALL_KEY)
    if call is not None and (not isinstance(call, str) or ":" not in call):
        raise InputError(f"--variant {name}: {CALL_KEY} must be 'package.module:function'")
    return Variant(name, options)


def build_variants(features: Iterable[str], extra: Iterable[str] = (), baseline: bool = True) -> list[Variant]:
    """The baseline, one row per feature mode, then the ``--variant`` rows; names must be unique."""
    variants = [baseline_variant()] if baseline else []
    variants += [feature_variant(m.strip()) for m in features if m.strip()]
    variants += [parse_variant(s) for s in extra]
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise InputError(f"benchmark row {v.name!r} is given twice")
        seen.add(v.name)
    if not variants:
        raise InputError("nothing to run: give --features and/or --variant")
    return variants


# --------------------------------------------------------------------------- one match in a child process


def bench_child(call: str, path_a: str, path_b: str, options: dict) -> dict:
    """(In the per-match process) run one match and return what the benchmark scores: the map,
    the match call's seconds (imports excluded), its meta and the fitted source's quality."""
    if call == "engine:match":
        try:  # import the pipeline before timing: imports are not the matcher's work
            import engine.pipeline  # noqa: F401
        except ImportError:
            pass
    fn = resolve(call)
    t0 = time.perf_counter()
    corr = fn(path_a, path_b, **options)
    result = {"seconds": time.perf_counter() - t0, "face": np.asarray(corr.src_to_tgt_face),
              "bary": np.asarray(corr.src_to_tgt_bary)}
    result["meta"] = json.loads(json.dumps(getattr(corr, "meta", {}) or {}, default=str))
    if hasattr(corr, "fitted_vertices"):  # after the timing: not the matcher's work
        from .metrics import fitted_quality

        result["quality"] = fitted_quality(path_a, path_b, corr)
    return result


@dataclass
class MatchRun:
    """The outcome of one variant on one pair."""

    pair: BenchPair
    variant: str
    ok: bool
    error: str = ""
    seconds: float = float("nan")
    peak_rss: float = float("nan")  # bytes, whole process
    peak_gpu: float = float("nan")  # bytes of CUDA memory torch allocated at most; NaN without CUDA
    errors: np.ndarray | None = None  # (k,) float64 per ground-truth point
    sym_errors: np.ndarray | None = None  # against the mirrored ground truth, when the set has it
    meta: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)  # engine.geometry.mesh_quality.fit_quality of the fitted source

    @property
    def mean(self) -> float:
        return float(self.errors.mean()) if self.errors is not None and self.errors.size else float("nan")

    @property
    def median(self) -> float:
        return float(np.median(self.errors)) if self.errors is not None and self.errors.size else float("nan")

    @property
    def sym_mean(self) -> float:
        return float(self.sym_errors.mean()) if self.sym_errors is not None and self.sym_errors.size else float("nan")


def run_match_subprocess(
    path_a: str,
    path_b: str,
    options: dict,
    *,
    call: str = "engine:match",
    timeout: float = 600.0,
    threads: Optional[int] = None,
) -> dict:
    """Run one match in a fresh process (engine.isolated).

    Returns the child's dict: ``ok``, ``seconds``, ``peak_rss`` and ``peak_gpu`` (bytes), and
    ``face``/``bary``/``meta`` on success or ``error`` (one line) on failure.
    A crash or a timeout becomes ``ok=False`` with a description.
    """
    res = run_isolated("engine.bench.runner:bench_child", (call, os.fspath(path_a), os.fspath(path_b), options),
                       timeout=timeout, threads=threads)
    if not res.get("ok"):
        return {"ok": False, "error": res.get("error", ""), "seconds": res.get("seconds", float("nan")),
                "peak_rss": res.get("peak_rss", float("nan")), "peak_gpu": res.get("peak_gpu", float("nan"))}
    out = dict(res["value"])
    out.update(ok=True, peak_rss=res["peak_rss"], peak_gpu=res["peak_gpu"])
    return out


# --------------------------------------------------------------------------- a whole benchmark


class GeodesicStore:
    """Distance matrices of target shapes, computed once (disk cache) and kept open."""

    def __init__(self, cache_dir=None, log: Callable[[str], None] | None = None) -> None:
        self.cache_dir = cache_dir
        self.log = log
        self._tables: dict[str, np.ndarray] = {}

    def get(self, path) -> np.ndarray:
        key = os.fspath(path)
        if key not in self._tables:
            v, f = load_triangles(key)
            t0 = time.perf_counter()
            self._tables[key] = geodesic_matrix(v, f, cache_dir=self.cache_dir)
            dt = time.perf_counter() - t0
            if self.log is not None and dt > 1.0:
                self.log(f"  geodesics of {os.path.basename(key)} ({len(v)} vertices): {dt:.1f} s (cached for next time)")
        return self._tables[key]


def evaluate_run(pair: BenchPair, face: np.ndarray, bary: np.ndarray, store: GeodesicStore) -> tuple[np.ndarray, np.ndarray | None]:
    """Errors of a map A -> B against the ground truth (and the mirrored one when present)."""
    _, tri_b = load_triangles(pair.path_b)
    va, _ = load_triangles(pair.path_a)
    if len(face) != len(va):
        raise InputError(f"map has {len(face)} source entries but {pair.name_a}.off has {len(va)} vertices")
    geo = store.get(pair.path_b)
    gt_a, gt_b = pair.ground_truth()
    errors = map_errors(geo, tri_b, face, bary, gt_a, gt_b)
    sym = pair.symmetric_ground_truth()
    sym_errors = map_errors(geo, tri_b, face, bary, sym[0], sym[1]) if sym is not None else None
    return errors, sym_errors


def run_benchmark(
    pairs: list[BenchPair],
    variants: list[Variant],
    *,
    device: str | None = "cpu",
    timeout: float = 600.0,
    threads: Optional[int] = None,
    cache_dir=None,
    log: Callable[[str], None] | None = None,
    runner: Callable[..., dict] = run_match_subprocess,
) -> list[MatchRun]:
    """Run every variant on every pair (pair by pair) and evaluate the maps.

    ``runner`` is :func:`run_match_subprocess` (tests may pass an in-process
    stand-in with the same signature and result dict).
    """
    store = GeodesicStore(cache_dir, log)
    runs: list[MatchRun] = []
    total = len(pairs) * len(variants)
    k = 0
    for pair in pairs:
        for variant in variants:
            k += 1
            res = runner(
                os.fspath(pair.path_a),
                os.fspath(pair.path_b),
                variant.match_options(device),
                call=variant.call_target(),
                timeout=timeout,
                threads=threads,
            )
            run = MatchRun(
                pair=pair,
                variant=variant.name,
                ok=bool(res.get("ok")),
                error=str(res.get("error", "")),
                seconds=float(res.get("seconds", float("nan"))),
                peak_rss=float(res.get("peak_rss", float("nan"))),
                peak_gpu=float(res.get("peak_gpu", float("nan"))),
                meta=res.get("meta") or {},
                quality=res.get("quality") or {},
            )
            if run.ok:
                try:
                    run.errors, run.sym_errors = evaluate_run(pair, res["face"], res["bary"], store)
                except InputError as exc:
                    run.ok, run.error = False, f"evaluation: {exc}"
            runs.append(run)
            if log is not None:
                if run.ok:
                    extra = f"  (mirrored gt {100 * run.sym_mean:.2f})" if run.sym_errors is not None and run.sym_mean < run.mean else ""
                    q = run.quality
                    fitq = (f", flipped {q['flipped_pct']:.2f} % folds {q['folds_pct']:.2f} % dist p99 "
                            f"{q['dist_p99_pct']:.2f} %") if q else ""
                    log(
                        f"[{k}/{total}] {pair.label} {variant.name}: error {100 * run.mean:.2f}{extra}, "
                        f"{run.seconds:.1f} s, {run.peak_rss / 2**20:.0f} MiB{fitq}"
                    )
                else:
                    log(f"[{k}/{total}] {pair.label} {variant.name}: FAILED {run.error}")
    return runs
