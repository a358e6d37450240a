"""Match settings: :class:`MatchConfig`, the quality presets, and strict loading from a dict or file.

Every field says what it does and what values it takes; ``load_config`` checks
types and ranges (``"false"`` is not a boolean, 0 steps between guidance
updates is an error), never mutates the caller's dict, and raises a one-line
InputError naming the setting, the value and what is allowed. Nothing is
half-applied: the config is built whole or not at all.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields, replace

from .errors import InputError
from .features.select import FEATURE_MODES  # noqa: F401  (re-exported: the modes' one definition lives with the features)
METHODS = ("full", "rigid")
QUALITIES = ("fast", "balanced", "best")
GUIDANCE_SCHEDULES = ("auto", "feature-led", "position-led")
GUIDANCE_KINDS = ("vertex", "flow")

INF = math.inf


def _f(default, lo=-INF, hi=INF, choices=None):
    """A dataclass field with its allowed range (numbers, inclusive) or choices (strings)."""
    return field(default=default, metadata={"range": (lo, hi), "choices": choices})


@dataclass
class MatchConfig:
    """Tunable settings; ``quality`` presets fill them, a config dict / file may override any field."""

    # --- spectral descriptors and the initial functional map
    # Laplacian eigenpairs per mesh. 80, not 100: dev pairs faust5k 1, 4, ..., 28 2.30 against 2.29,
    # smal_r 1, 4, ..., 28 18.04 against 18.18; a 3000-vertex working copy's eigenbasis 0.22 -> 0.14 s
    spectral_k: int = _f(80, 10, 1000)
    zoomout_start: int = _f(30, 2, 1000)  # functional-map size ZoomOut starts from
    # 10 eigenpairs per ZoomOut iteration (8 iterations, not 15): with the registration below, dev
    # pairs faust5k 2, 5, ..., 23 mean 2.35 against 2.36 and smal_r 1, 5, ..., 21 21.31 against 21.66
    zoomout_step: int = _f(10, 1, 100)  # eigenpairs added per ZoomOut iteration
    w_ext: float = _f(0.3, 0.0)  # extrinsic (aligned position) weight in the spectral pointwise recovery
    w_pos_desc: float = _f(1.0, 0.0)  # weight of aligned positions among the functional-map descriptors
    # --- registration (NJF deformation through a Poisson solve)
    # 65 steps at a learning rate of 0.055, guidance every 13 (five updates, as before): with the
    # ZoomOut step above, registration + features 4.1 -> 3.0 s per faust5k pair at the same error
    # (dev pairs above); before that 100 steps at 0.04 every 20 had replaced 300 at 0.02 every 50
    # (faust5k dev 1, 5, 8, 12, 20: 2.85 in 3.1 s against 2.79 in 7.5 s); the surface fit settles
    # what the shorter run leaves
    reg_steps: int = _f(65, 1, 100000)  # optimisation steps
    reg_lr: float = _f(0.055, 1e-6, 10.0)  # Adam learning rate on the per-face Jacobians
    reg_update_every: int = _f(13, 1, 100000)  # steps between guidance recomputations
    w_guidance: float = _f(10.0, 0.0)  # correspondence term (the paper's flow weight)
    w_chamfer: float = _f(1.0, 0.0)
    w_normal: float = _f(0.1, 0.0)
    w_shear: float = _f(0.1, 0.0)
    guidance_w_pos_start: float = _f(0.5, 0.0)  # position weight in vertex-feature matching, first step ...
    guidance_w_pos_end: float = _f(4.0, 0.0)  # ... and last step (a shrinking spatial window)
    guidance_tau: float = _f(0.05, 1e-6, 1.0)  # bicyclic round-trip tolerance, fraction of sqrt(area)
    align_samples: int = _f(600, 50, 100000)  # surface samples scored per candidate rotation
    seed: int = _f(0, 0, 2**31 - 1)
    # --- alignment retry: a fit scoring above ``retry_score`` (engine.correspond.fit_score:
    # metric distortion + descriptor mismatch + the share of area turned against the target) is suspect;
    # the next distinct alignment is fitted too (at most ``alignment_retries`` times, only when
    # that alignment's residual is within ``retry_alignment_ratio`` of the chosen one) and
    # replaces the first fit when it scores below ``retry_margin`` times as much. Tuned on the
    # faust5k / smal_r dev pairs (right later fits scored 0.37-0.85 times the wrong first fit,
    # a wrong later fit 0.86; set before the turned share counted in full, which changed no
    # decision on dev pairs 1-10 of each). Not used when body keypoints decide the orientation.
    retry_score: float = _f(0.25, 0.0)
    retry_margin: float = _f(0.85, 0.0, 1.0)
    alignment_retries: int = _f(1, 0, 10)
    retry_alignment_ratio: float = _f(1.05, 0.0)
    # --- guidance
    # "vertex": vertex-feature nearest neighbours in a shrinking spatial window;
    # "flow": the paper's rendered semantic flow (per-view 2D matches, L1 on rendered displacements)
    guidance: str = _f("vertex", choices=GUIDANCE_KINDS)
    # "auto" races the feature-led and position-led schedules (see ``schedule_probe``);
    # or force one ("feature-led": descriptors decide early; "position-led": trust the alignment)
    guidance_schedule: str = _f("auto", choices=GUIDANCE_SCHEDULES)
    # fraction of the steps the raced runs make before the better one is finished (0 = no race)
    schedule_probe: float = _f(0.3, 0.0, 1.0)
    # advance raced runs side by side, one thread each (same results; False leaves cores free)
    race_in_threads: bool = _f(True)
    # weight of Best-Segmentation-Buddies part-to-part pairs (engine.parts.guidance); 0 = off
    w_parts: float = _f(0.1, 0.0)
    # --- body keypoints (``keypoints`` option of match): geodesic distances to them join the
    # functional-map descriptors and the guidance features with these weights (distances are in
    # units of sqrt(area), like the positions ``w_pos_desc`` weighs); the soft joint-to-joint
    # pairs get ``w_keypoints`` times the guidance weight, released (falling to 0) between
    # the two fractions of the registration. Weights chosen a priori (unit weights) and checked on
    # 5 faust5k dev pairs (1, 5, 8, 12, 20): guidance features at 0.3 gave 2.86 against 2.89,
    # keypoint pairs at 3 3.02, descriptors at 3 3.18. Release over the last fifth, chosen on the
    # 30 dev pairs (python -m engine.bench --split dev, one run): 40-80 % 2.37, 80-100 % 2.25, held
    # to the end 2.24; an early release let the Chamfer term pull a hand onto the thigh beside
    # it (tr_reg_000 -> 006: 3.61 against 2.42). The surface fit comes after: it is not pinned.
    w_keypoint_desc: float = _f(1.0, 0.0)
    w_keypoint_feat: float = _f(1.0, 0.0)
    w_keypoints: float = _f(1.0, 0.0)
    keypoint_release_start: float = _f(0.8, 0.0, 1.0)
    keypoint_release_end: float = _f(1.0, 0.0, 1.0)
    # --- working size: larger meshes are matched on copies decimated to this many vertices (the
    # alignment, descriptors, guidance and registration; the surface fit and the maps then run at
    # full resolution). 3000: on the faust5k dev pairs 1, 5, 8, 12, 20 the 5k bodies matched on
    # 3000-vertex copies gave mean 2.79 against 2.89 undecimated and 2.96 on 2000-vertex copies,
    # at about half the registration time of 5k; 0: never decimate
    working_vertices: int = _f(3000, 0, 10_000_000)
    # --- the fitted source (engine.register.surface_fit): settle the registered source onto the
    # target without flipping or folding its triangles (False: project every vertex, as the
    # rigid baseline does); pulls onto the target, each with several shape-preserving steps
    surface_fit: bool = _f(True)
    # 8 pulls, not 14: on the 10 dev pairs the same error (2.29 against 2.30), flipped 0.04 against 0.03 %,
    # p99 distance 0.47 against 0.62 %, the fit 0.95 -> 0.73 s; MakeHuman -> FAUST / X Bot / ogre
    # flipped 0.10 / 0.15 / 0.07 % against 0.11 / 0.14 / 0.10 % (all within the 0.2 % bar)
    surface_fit_iterations: int = _f(8, 1, 1000)
    # a source above this size is fitted as a copy decimated to it, then its full mesh takes that
    # fit with its own detail and settles in ``surface_fit_finish`` pulls (0: always at full size).
    # The fit's cost grows with the source (64 s at 80k vertices in 14 pulls, before they were 8); 20000 keeps most
    # templates (MakeHuman's body: 13k) fitted whole
    surface_fit_vertices: int = _f(20000, 0, 10_000_000)
    surface_fit_finish: int = _f(3, 1, 1000)
    # the fit's two other pulls (engine.register.surface_fit): target samples pull the fitted
    # surface over the whole target (hands, feet, jaws of other proportions), triangles' centres
    # are pulled onto the target (no webs); each against the vertices' own pull, 0 = off
    surface_fit_cover: float = _f(1.0, 0.0, 100.0)
    surface_fit_web: float = _f(1.0, 0.0, 100.0)
    # --- stop before the work when the meshes need more memory than the machine has free
    # (engine.memory: a one-line error with the size that fits); False skips the check
    memory_check: bool = _f(True)
    # --- rendered-flow guidance
    flow_views: int = _f(8, 1, 64)
    flow_resolution: int = _f(128, 32, 2048)
    # --- semantic features: model ids / local folders and render settings for engine.features
    dino_model: str = _f("")
    sd_model: str = _f("")
    semantic: dict = field(default_factory=dict, metadata={"range": (-INF, INF), "choices": None})

    def feature_config(self) -> dict:
        """The part of the settings engine.features.semantic reads."""
        out: dict = {"semantic": dict(self.semantic)}
        if self.dino_model:
            out["dino_model"] = self.dino_model
        if self.sd_model:
            out["sd_model"] = self.sd_model
        return out


# fast: a preview (2000-vertex working copies, 60 steps, 8 surface-fit pulls); best: the former
# balanced registration (300 steps on 6000-vertex copies) with a larger basis
PRESETS = {
    "fast": dict(spectral_k=60, zoomout_start=20, zoomout_step=10, reg_steps=60, reg_update_every=15, reg_lr=0.05,
                 working_vertices=2000, align_samples=400,
                 surface_fit_iterations=6),  # 10 dev pairs: error 2.78 as with 8, fit 0.75 -> 0.68 s
    "balanced": dict(),
    "best": dict(spectral_k=150, zoomout_step=5, reg_steps=300, reg_lr=0.02, reg_update_every=50, align_samples=1000,
                 working_vertices=6000),
}


def _read_file(path: str) -> dict:
    if not os.path.exists(path):
        raise InputError(f"{path}: config file not found")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            if path.endswith(".toml"):
                import tomllib

                data = tomllib.loads(fh.read())
            else:
                data = json.load(fh)
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot parse config ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{os.path.basename(path)}: a config file must hold a mapping of settings, not {type(data).__name__}")
    return data


def _check_value(f: dataclasses.Field, value):
    """The value converted to the field's type, or an InputError naming setting, value and what is allowed."""
    name, kind = f.name, f.type if isinstance(f.type, str) else f.type.__name__
    lo, hi = f.metadata["range"]
    choices = f.metadata["choices"]
    bad = f"config: setting {name!r} has the invalid value {value!r}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{bad}; use true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise InputError(f"{bad}; an integer between {lo:g} and {hi:g} is needed")
        value = int(value)
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{bad}; a number between {lo:g} and {hi:g} is needed")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise InputError(f"{bad}; a string is needed")
        if choices and value not in choices:
            raise InputError(f"{bad}; use one of {', '.join(choices)}")
        return value
    elif kind == "dict":
        if not isinstance(value, dict):
            raise InputError(f"{bad}; a mapping of settings is needed")
        return dict(value)
    if not lo <= value <= hi:
        raise InputError(f"{bad}; it must lie between {lo:g} and {hi:g}")
    return value


def _check_semantic(sub: dict) -> None:
    from .features.semantic import SemanticSettings

    known = {f.name for f in fields(SemanticSettings)}
    unknown = sorted(set(sub) - known)
    if unknown:
        raise InputError(f"config: unknown semantic setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def load_config(config, quality: str = "balanced") -> MatchConfig:
    """The settings of one match: the ``quality`` preset, then ``config`` on top.

    config : None, a MatchConfig (used as is), a dict, or a .json / .toml file path
    Raises InputError (one line) for an unknown quality, an unreadable file, an unknown
    setting or a value of the wrong type or range.
    """
    if quality not in QUALITIES:
        raise InputError(f"quality: unknown preset {quality!r}; use one of {', '.join(QUALITIES)}")
    cfg = replace(MatchConfig(), **PRESETS[quality])
    if config is None:
        return cfg
    if isinstance(config, MatchConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        data = _read_file(os.fspath(config))
    elif isinstance(config, dict):
        data = config
    else:
        raise InputError(f"config: expected a file path, a dict or a MatchConfig, got {type(config).__name__}")
    by_name = {f.name: f for f in fields(MatchConfig)}
    unknown = sorted(set(data) - set(by_name))
    if unknown:
        raise InputError(f"config: unknown setting(s) {', '.join(map(str, unknown))}")
    values = {k: _check_value(by_name[k], v) for k, v in data.items()}
    if "semantic" in values:
        _check_semantic(values["semantic"])
    out = replace(cfg, **values)
    if out.keypoint_release_start > out.keypoint_release_end:
        raise InputError(f"config: keypoint_release_start ({out.keypoint_release_start}) must not exceed "
                         f"keypoint_release_end ({out.keypoint_release_end})")
    return out
