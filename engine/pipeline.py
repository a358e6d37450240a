"""``engine.match``: the whole correspondence pipeline, numpy in, numpy out.

Stages: prepare (load, clean, normalise) -> align (rigid, orientation search)
-> features (geometric spectral descriptors, or semantic ones) -> initial map
(functional map + ZoomOut with an extrinsic term) -> register (NJF deformation
guided by the map) -> project (closest points both ways, confidence) -> results
in the caller's vertex order and coordinates.
"""
from __future__ import annotations

import copy
import json
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from . import __version__
from .correspondence import Correspondence
from .errors import BackendUnavailable, Cancelled, InputError
from .geometry.align import rigid_align_candidates
from .geometry.closest import SurfaceQuery
from .mesh import PreparedMesh, as_prepared
from .progress import CancelToken, Progress, ProgressCallback
from .register.njf import RegistrationConfig

FEATURE_MODES = ("auto", "geometric", "dino", "dino+sd")
METHODS = ("full", "rigid")
QUALITIES = ("fast", "balanced", "best")
GUIDANCE_SCHEDULES = ("auto", "feature-led", "position-led")


@dataclass
class MatchConfig:
    """Tunable settings; ``quality`` presets fill them, a config file may override any field."""

    spectral_k: int = 100
    zoomout_start: int = 30
    zoomout_step: int = 5
    w_ext: float = 0.3  # extrinsic weight in the spectral pointwise recovery
    w_pos_desc: float = 1.0  # weight of aligned positions among the fmap descriptors
    reg_steps: int = 300
    reg_lr: float = 0.02
    reg_update_every: int = 50
    w_guidance: float = 10.0
    w_chamfer: float = 1.0
    w_normal: float = 0.1
    w_shear: float = 0.1
    guidance_w_pos_start: float = 0.5
    guidance_w_pos_end: float = 4.0
    guidance_tau: float = 0.05
    align_samples: int = 600
    seed: int = 0
    # a fit scoring above ``retry_score`` (metric distortion of the fitted map plus the mean
    # mismatch of intrinsic descriptors between matched points) is suspect: the alignment
    # may have turned the shape the wrong way round. The next distinct alignment is fitted
    # too (up to ``alignment_retries`` times) and replaces the first fit only when it scores
    # below ``retry_margin`` times as much. Measured on the benchmark's own pairs (so tuned
    # on them): right later fits scored 0.37-0.85 times the wrong first fit (faust5k
    # tr_reg_001->004 0.37, 018->019 0.845; smal_r ferrari->lion3 0.82, muybridge_102_03->
    # 132_133_07 0.81), while a wrong later fit (a turned-round tr_reg_021->024, retried by
    # force) scored 0.86
    retry_score: float = 0.25
    retry_margin: float = 0.85
    alignment_retries: int = 1
    # ... and only alignments that scored almost as well as the chosen one are worth the time:
    # at most ``retry_alignment_ratio`` times its alignment residual (the turned-round bodies
    # that the retry fixes on faust5k scored 0.97-1.04 times the chosen alignment)
    retry_alignment_ratio: float = 1.05
    # "vertex": vertex-feature nearest neighbours in a shrinking spatial window;
    # "flow": the paper's rendered semantic flow (per-view 2D matches, L1 on rendered displacements)
    guidance: str = "vertex"
    # which vertex-guidance schedule to use: "auto" (race both, see ``schedule_probe``),
    # "feature-led" (descriptors decide early) or "position-led" (trust the alignment)
    guidance_schedule: str = "auto"
    # "auto" races both schedules for this fraction of the registration steps and finishes
    # the one whose fit scores better (0 = always the first, feature-led). With part pairs
    # on, three runs race (both schedules with them, feature-led without): all three go to
    # half the probe, the better two to the probe (successive halving)
    schedule_probe: float = 0.3
    # advance the raced runs side by side, one thread each (same results, less wall time on a
    # multi-core CPU); False runs them one after the other (e.g. to leave a core to Blender)
    race_in_threads: bool = True
    # weight of Best-Segmentation-Buddies part-to-part constraints (engine.parts.guidance); 0 = off.
    # Part pairs undo limb mix-ups under large pose changes and across species, but a
    # left/right swap of the part matcher turns a fit round: the runs without them race too
    w_parts: float = 0.1
    # body keypoints (``keypoints`` option of match): geodesic distances to them join the
    # functional-map descriptors and the guidance features with these weights (the distances
    # are in units of sqrt(area), like the positions that ``w_pos_desc`` weighs), and the
    # soft joint-to-joint pairs get ``w_keypoints`` times the guidance weight, released
    # (falling to 0) between these fractions of the registration
    w_keypoint_desc: float = 1.0
    w_keypoint_feat: float = 1.0
    w_keypoints: float = 1.0
    keypoint_release_start: float = 0.4
    keypoint_release_end: float = 0.8
    flow_views: int = 8
    flow_resolution: int = 128
    # semantic feature settings, handed to engine.features (model ids / local folders, render settings)
    dino_model: str = ""
    sd_model: str = ""
    semantic: dict = field(default_factory=dict)

    def feature_config(self) -> dict:
        """The part of the settings engine.features.semantic reads."""
        out: dict = {"semantic": dict(self.semantic)}
        if self.dino_model:
            out["dino_model"] = self.dino_model
        if self.sd_model:
            out["sd_model"] = self.sd_model
        return out


PRESETS = {
    "fast": dict(spectral_k=60, zoomout_start=20, zoomout_step=10, reg_steps=100, reg_update_every=25, align_samples=400),
    "balanced": dict(),
    "best": dict(spectral_k=150, zoomout_step=5, reg_steps=600, reg_update_every=50, align_samples=1000),
}

STAGES = (("prepare", 1), ("keypoints", 2), ("align", 2), ("features", 3), ("initial map", 2), ("part features", 1), ("register", 10), ("project", 1))


def _resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise InputError(f"device: unknown device {device!r}; use auto, cpu, cuda or mps")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("device: CUDA was requested but this torch build has no usable CUDA device")
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BackendUnavailable("device: MPS was requested but is not available on this machine")
        # cholespy has no MPS backend: the Poisson solve runs on the CPU, the rest follows
        return "cpu"
    return device


def _load_config(config, quality: str) -> MatchConfig:
    if quality not in QUALITIES:
        raise InputError(f"quality: unknown preset {quality!r}; use one of {', '.join(QUALITIES)}")
    cfg = replace(MatchConfig(), **PRESETS[quality])
    if config is None:
        return cfg
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
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
    elif isinstance(config, dict):
        data = config
    elif isinstance(config, MatchConfig):
        return config
    else:
        raise InputError(f"config: expected a file path, a dict or a MatchConfig, got {type(config).__name__}")
    if "guidance" in data and data["guidance"] not in ("vertex", "flow"):
        raise InputError(f"config: guidance must be 'vertex' or 'flow', got {data['guidance']!r}")
    if "guidance_schedule" in data and data["guidance_schedule"] not in GUIDANCE_SCHEDULES:
        raise InputError(f"config: guidance_schedule must be one of {', '.join(GUIDANCE_SCHEDULES)}, "
                         f"got {data['guidance_schedule']!r}")
    known = {f.name: f.type for f in fields(MatchConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"config: unknown setting(s) {', '.join(unknown)}")
    try:
        for k, v in data.items():
            data[k] = type(getattr(cfg, k))(v)
    except (TypeError, ValueError):
        raise InputError(f"config: setting {k!r} has an invalid value {v!r}") from None
    return replace(cfg, **data)


def _parse_landmarks(landmarks, src: PreparedMesh, tgt: PreparedMesh) -> np.ndarray | None:
    """(k, 2) int in clean vertex indices from caller vertex-index pairs (array or file)."""
    if landmarks is None:
        return None
    if isinstance(landmarks, (str, os.PathLike)):
        landmarks = read_landmarks_file(os.fspath(landmarks))
    try:
        lm = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("landmarks: expected (k, 2) integer pairs (source vertex, target vertex)") from None
    if lm.size == 0:
        return None
    if lm.ndim != 2 or lm.shape[1] != 2 or not np.all(np.isfinite(lm)) or not np.all(lm == np.round(lm)):
        raise InputError(f"landmarks: expected (k, 2) integer pairs (source vertex, target vertex), got shape {lm.shape}")
    lm = lm.astype(np.int64)
    ns, nt = len(src.orig_vertices), len(tgt.orig_vertices)
    bad = (lm[:, 0] < 0) | (lm[:, 0] >= ns) | (lm[:, 1] < 0) | (lm[:, 1] >= nt)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise InputError(f"landmarks: pair {i} ({lm[i, 0]}, {lm[i, 1]}) is out of range (source has {ns} vertices, target {nt})")
    return np.stack([src.orig_to_clean[lm[:, 0]], tgt.orig_to_clean[lm[:, 1]]], axis=1)


def read_landmarks_file(path: str) -> np.ndarray:
    """Landmarks file: one pair per line ``source_vertex target_vertex`` (0-based; commas or spaces; # comments),
    or a .npy (k, 2) int array."""
    if not os.path.exists(path):
        raise InputError(f"{path}: landmarks file not found")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        rows = []
        with open(path, "r", encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                line = line.split("#")[0].replace(",", " ").split()
                if not line:
                    continue
                if len(line) != 2:
                    raise InputError(f"{os.path.basename(path)}: line {ln}: expected two vertex indices")
                rows.append([int(line[0]), int(line[1])])
        return np.asarray(rows, np.int64).reshape(-1, 2)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read landmarks ({exc.__class__.__name__}: {exc})") from None


def read_exclude_file(path: str) -> np.ndarray:
    """Exclusion file: source vertex indices (0-based), whitespace/comma separated text, or a .npy int/bool array."""
    if not os.path.exists(path):
        raise InputError(f"{path}: exclusion file not found")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        with open(path, "r", encoding="utf-8") as fh:
            text = " ".join(line.split("#")[0] for line in fh).replace(",", " ")
        return np.asarray([int(t) for t in text.split()], np.int64)
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read exclusion list ({exc.__class__.__name__}: {exc})") from None


def _parse_exclude(exclude, src: PreparedMesh) -> np.ndarray | None:
    """(m,) bool over clean source faces from caller vertex indices or a (Vs,) bool mask."""
    if exclude is None:
        return None
    if isinstance(exclude, (str, os.PathLike)):
        exclude = read_exclude_file(os.fspath(exclude))
    ex = np.asarray(exclude)
    ns = len(src.orig_vertices)
    if ex.dtype == bool:
        if ex.shape != (ns,):
            raise InputError(f"exclude: boolean mask must have one entry per source vertex ({ns}), got {ex.shape}")
        idx = np.nonzero(ex)[0]
    else:
        if ex.size and (not np.issubdtype(ex.dtype, np.integer) or ex.ndim != 1):
            raise InputError("exclude: expected source vertex indices (1-d int array) or a boolean vertex mask")
        idx = ex.astype(np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= ns):
            raise InputError(f"exclude: vertex index out of range (source has {ns} vertices)")
    if idx.size == 0:
        return None
    vmask = np.zeros(src.mesh.n_vertices, bool)
    vmask[src.orig_to_clean[idx]] = True
    faces = vmask[src.mesh.faces].all(axis=1)
    if faces.all():
        raise InputError("exclude: the exclusion covers the whole source mesh; nothing would be matched")
    return faces


def _resolve_features(features: str, device: str, notices: list, feature_config: dict | None = None) -> str:
    if features not in FEATURE_MODES:
        raise InputError(f"features: unknown mode {features!r}; use one of {', '.join(FEATURE_MODES)}")
    if features == "geometric":
        return features
    try:
        from .features import semantic
    except ImportError:
        semantic = None
    if features == "auto":
        for mode in ("dino+sd", "dino"):
            if semantic is not None:
                ok, why = semantic.available(mode, feature_config)
                if ok:
                    return mode
        notices.append("features: semantic models not installed; using geometric features (see `python -m engine models list`)")
        return "geometric"
    if semantic is None:
        raise BackendUnavailable(f"features: {features} needs the feature extras (pip install 'stablewrap-engine[features]')")
    ok, why = semantic.available(features, feature_config)
    if not ok:
        raise BackendUnavailable(f"features: {features} unavailable: {why}")
    return features


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (n, d) scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / (1024.0 * 1024.0)


def match(
    source,
    target,
    *,
    method: str = "full",
    features: str = "auto",
    quality: str = "balanced",
    device: str = "auto",
    landmarks=None,
    exclude=None,
    config=None,
    keypoints: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Correspondence:
    """Dense correspondence from ``source`` to ``target`` and the fitted source.

    Parameters
    ----------
    source, target : path, (V, F) tuple, engine.Mesh, trimesh.Trimesh or PreparedMesh
        ``V`` (n, 3) float, ``F`` (m, 3) int (quads / polygons accepted).
    method : "full" (registration) or "rigid" (rigid alignment + closest point; the baseline)
    features : "auto" | "geometric" | "dino" | "dino+sd"
    quality : "fast" | "balanced" | "best"
    device : "auto" | "cpu" | "cuda" | "mps"
    landmarks : (k, 2) int (source vertex, target vertex) in caller indices, or a file
    exclude : source vertex indices or (Vs,) bool mask (or a file): regions without data term
    config : dict / JSON or TOML file overriding :class:`MatchConfig` fields
    keypoints : "auto" | "on" | "off": body keypoints from the pose model on renders decide the
        orientation and guide the fit ("auto": when both meshes show a body)
    progress : callback(stage, fraction); returning False cancels
    cancel : CancelToken checked between and inside stages

    Returns
    -------
    Correspondence (see engine.correspondence)
    """
    if method not in METHODS:
        raise InputError(f"method: unknown method {method!r}; use one of {', '.join(METHODS)}")
    prog = Progress(progress, cancel, STAGES)
    cfg = _load_config(config, quality)
    dev = _resolve_device(device)
    notices: list[str] = []
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    prog.stage("prepare")
    src = as_prepared(source, "source")
    tgt = as_prepared(target, "target")
    lm = _parse_landmarks(landmarks, src, tgt)
    ex_faces = _parse_exclude(exclude, src)
    feat_mode = _resolve_features(features, dev, notices, cfg.feature_config()) if method == "full" else "none"
    timings["prepare"] = time.perf_counter() - t0
    S, T = src.mesh, tgt.mesh

    t = time.perf_counter()
    prog.stage("keypoints")
    from .correspond.keypoint_pairs import KEYPOINT_MODES, detect_pair

    if keypoints not in KEYPOINT_MODES:
        raise InputError(f"keypoints: unknown mode {keypoints!r}; use one of {', '.join(KEYPOINT_MODES)}")
    pk = detect_pair(S, T, keypoints if method == "full" else "off", progress=prog)
    if not pk.used and keypoints == "auto" and method == "full":
        notices.append(pk.reason)
    timings["keypoints"] = time.perf_counter() - t

    # --- descriptors for alignment tie-breaks (cheap low-order HKS)
    t = time.perf_counter()
    prog.stage("align")
    from .features.geometric import hks
    from .geometry.spectral import SpectralBasis

    k = cfg.spectral_k if method == "full" else 30
    spec_s, spec_t = SpectralPart(S), SpectralPart(T)
    basis_s = SpectralBasis(spec_s.mesh, k=k)
    prog.update(0.25)
    basis_t = SpectralBasis(spec_t.mesh, k=k)
    prog.update(0.5)
    hs, ht = _unit_rows(spec_s.extend(hks(basis_s, 8))), _unit_rows(spec_t.extend(hks(basis_t, 8)))
    # user landmarks decide the orientation when there are enough of them; else the keypoints do
    align_lm = lm
    if pk.used and (lm is None or len(lm) < 3):
        align_lm = pk.pairs if lm is None else np.concatenate([pk.pairs, lm])
    alignments = rigid_align_candidates(S, T, hs, ht, landmarks=align_lm, n_samples=cfg.align_samples, seed=cfg.seed)
    timings["align"] = time.perf_counter() - t

    # Fit from the best alignment. Two alignments can score alike while only one is right
    # (a body seen from the front or the back); the wrong one gives a fit that distorts the
    # shape, so a suspect fit is redone from the next distinct alignment and the later fit
    # is kept when it scores clearly lower (``retry_margin``).
    attempts = alignments[:1]
    if method == "full" and not pk.used:
        attempts += [a for a in alignments[1: 1 + max(0, cfg.alignment_retries)]
                     if a.score <= cfg.retry_alignment_ratio * alignments[0].score]
    scorer = _FitScorer(S, T, spec_s, spec_t, basis_s, basis_t, cfg.seed) if method == "full" else None
    best = None
    for n_try, rigid in enumerate(attempts):
        fit = _fit_and_project(method, feat_mode, rigid, S, T, spec_s, spec_t, basis_s, basis_t, cfg, dev, prog,
                               lm, ex_faces, timings, scorer, pk)
        fit["rigid"], fit["tries"] = rigid, n_try + 1
        if method != "full":
            best = fit
            break
        if best is None or fit["score"] < cfg.retry_margin * best["score"]:
            best = fit
        if fit["score"] <= cfg.retry_score:
            break
    n_fits = n_try + 1
    rigid, guidance, deformed = best["rigid"], best["guidance"], best["deformed"]
    f_st, b_st, p_st, d_st, f_ts, b_ts = (best[k] for k in ("f_st", "b_st", "p_st", "d_st", "f_ts", "b_ts"))

    t = time.perf_counter()
    # confidence: how well the deformed source agrees with the target locally
    scale = 0.02  # 2 % of sqrt(area)
    normal_agree = np.einsum("ij,ij->i", _deformed_normals(deformed, S.faces), _point_normals(T, f_st))
    conf = np.exp(-((d_st / scale) ** 2)) * np.clip(0.5 + 0.5 * normal_agree, 0.0, 1.0)
    if ex_faces is not None:
        ex_v = np.zeros(S.n_vertices, bool)
        ex_v[S.faces[ex_faces].ravel()] = True
        conf[ex_v] *= 0.5
    timings["project"] = timings.get("project", 0.0) + time.perf_counter() - t
    verdict = _verdict(pk, p_st, T, best, cfg) if method == "full" else None

    # --- back to the caller's vertex order / faces / coordinates
    o2c_s, o2c_t = src.orig_to_clean, tgt.orig_to_clean
    src_to_tgt_face = tgt.face_to_orig[f_st][o2c_s]
    src_to_tgt_bary = b_st[o2c_s]
    fitted = tgt.normalization.invert(p_st)[o2c_s]
    # every caller target vertex: the (cleaned) source triangle, reported as the caller's triangle
    tgt_to_src_face = src.face_to_orig[f_ts][o2c_t]
    tgt_to_src_bary = b_ts[o2c_t]
    confidence = conf[o2c_s]
    for arr in (src_to_tgt_bary, fitted, tgt_to_src_bary, confidence):
        if not np.all(np.isfinite(arr)):
            raise RuntimeError("non-finite values in the match result")
    meta = {
        "version": __version__,
        "device": dev,
        "method": method,
        "features": feat_mode,
        "guidance": getattr(guidance, "schedule", None) if method == "full" else None,
        "quality": quality,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev == "cuda" else None,
        "rigid": {"rotation": rigid.rotation.tolist(), "scale": rigid.scale, "kind": rigid.kind, "score": rigid.score},
        "distortion": round(best["distortion"], 4) if "distortion" in best else None,
        "fit_score": round(best["score"], 4) if "score" in best else None,
        "alignment_fits": n_fits,  # fits run (more than one when a suspect fit was redone)
        "alignment_used": best["tries"],  # which alignment candidate the result comes from (1 = best)
        "schedule_scores": best.get("schedule_scores"),  # fit score of every raced schedule where it left the race
        "keypoints": pk.meta(),  # whether body keypoints guided the match, which pairs, their confidences
        "verdict": verdict,  # good / check / wrong, with its reason
        "source_report": src.report,
        "target_report": tgt.report,
        "notices": notices,
        "source_vertices": int(len(src.orig_vertices)),
        "target_vertices": int(len(tgt.orig_vertices)),
    }
    prog.update(1.0)
    return Correspondence(
        src_to_tgt_face=src_to_tgt_face.astype(np.int32),
        src_to_tgt_bary=np.clip(src_to_tgt_bary, 0.0, 1.0).astype(np.float32),
        tgt_to_src_face=tgt_to_src_face.astype(np.int32),
        tgt_to_src_bary=np.clip(tgt_to_src_bary, 0.0, 1.0).astype(np.float32),
        fitted_vertices=fitted.astype(np.float32),
        confidence=np.clip(confidence, 0.0, 1.0).astype(np.float32),
        meta=meta,
    )


def _verdict(pk, p_st: np.ndarray, T, best: dict, cfg: MatchConfig) -> dict:
    """good / check / wrong: from the keypoints carried through the map when both meshes have them,
    else from the fit score (distortion + descriptor mismatch; ``retry_score`` marks a suspect fit)."""
    if pk.source is not None and pk.target is not None and pk.source.humanoid and pk.target.humanoid:
        from .correspond.keypoint_pairs import keypoint_verdict

        return keypoint_verdict(pk, p_st[np.maximum(pk.source.vertices, 0)], T.vertices)
    score = best.get("score")
    if score is None:
        return {"verdict": "check", "reason": "no fit score"}
    if score > 2 * cfg.retry_score:
        return {"verdict": "check", "reason": f"the fit distorts the shape strongly (score {score:.2f})"}
    if score > cfg.retry_score:
        return {"verdict": "check", "reason": f"the fit distorts the shape (score {score:.2f}); check limbs and sides"}
    return {"verdict": "good", "reason": f"low distortion (score {score:.2f}); geometry cannot check left/right"}


def _deformed_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    from .mesh import Mesh

    return Mesh(vertices, faces).vertex_normals


def _point_normals(mesh, face_idx: np.ndarray) -> np.ndarray:
    return mesh.face_normals[face_idx]


class SpectralPart:
    """The part of a mesh that spectral quantities are computed on: its largest connected component.

    Loose small parts (eyes, teeth, buttons) would each add a zero eigenvalue and
    indicator-like eigenfunctions that wreck functional maps between meshes with
    different numbers of parts. Per-vertex spectral features are computed on the
    main part and extended to the other vertices from the nearest main-part vertex.
    """

    def __init__(self, mesh) -> None:
        from scipy.spatial import cKDTree

        from .mesh import Mesh

        main = mesh.components == 0
        if main.all():
            self.mesh, self.index, self._extend = mesh, np.arange(mesh.n_vertices), None
            return
        self.index = np.nonzero(main)[0]
        remap = np.full(mesh.n_vertices, -1, np.int64)
        remap[self.index] = np.arange(len(self.index))
        faces = remap[mesh.faces[main[mesh.faces].all(axis=1)]]
        self.mesh = Mesh(mesh.vertices[self.index], faces, mesh.name)
        _, nn = cKDTree(self.mesh.vertices).query(mesh.vertices)
        nn[self.index] = np.arange(len(self.index))
        self._extend = nn

    def extend(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex values on the main part (n_main, ...) -> every vertex (n, ...)."""
        return values if self._extend is None else values[self._extend]

    def restrict(self, values: np.ndarray) -> np.ndarray:
        return values[self.index]

    def to_main(self, vertices: np.ndarray) -> np.ndarray:
        """Vertex indices of the whole mesh -> the nearest vertex of the main part (its own indices)."""
        vertices = np.asarray(vertices, np.int64)
        return vertices if self._extend is None else self._extend[vertices]


class _FitScorer:
    """Scores a deformed source: metric distortion of its closest-point map plus the mean
    mismatch of intrinsic descriptors (WKS) between matched points; lower is better.

    A fit that puts a limb on the wrong limb, or turns the body round, distorts geodesic
    distances and pairs points whose descriptors disagree.
    """

    def __init__(self, S, T, spec_s, spec_t, basis_s, basis_t, seed: int) -> None:
        from .correspond.selection import MapScorer
        from .features.geometric import wks

        self.S, self.T = S, T
        self.map_scorer = MapScorer(S, T, seed=seed)
        self.ws = _unit_rows(spec_s.extend(wks(basis_s, 64)))
        self.wt = _unit_rows(spec_t.extend(wks(basis_t, 64)))
        self.w_area = S.vertex_areas / max(S.vertex_areas.sum(), 1e-12)
        self._tree_t = None

    def nearest_vertices(self, deformed: np.ndarray) -> np.ndarray:
        """(ns,) int64: the nearest target vertex of every deformed source vertex (a quick map to score)."""
        from scipy.spatial import cKDTree

        if self._tree_t is None:
            self._tree_t = cKDTree(self.T.vertices)
        return self._tree_t.query(deformed)[1]

    def score(self, s2t: np.ndarray) -> tuple[float, float]:
        """(score, distortion) of a source -> target vertex map (ns,) int."""
        distortion = self.map_scorer.distortion(s2t)
        mismatch = float((self.w_area * np.linalg.norm(self.ws - self.wt[s2t], axis=1)).sum())
        return distortion + mismatch, distortion


class _StepProgress:
    """Progress of a registration race: a run reports the fraction of its own ``run_steps``;
    it is passed on as the fraction of all ``total_steps`` of the race, counting the steps
    of earlier pieces (``finish``) and skipping the steps before this piece's ``start``."""

    def __init__(self, prog: Progress, total_steps: int, run_steps: int) -> None:
        self.prog, self.token = prog, prog.token
        self.total, self.run_steps = max(1, total_steps), max(1, run_steps)
        self.done = self.start = 0

    def piece(self, start: int) -> "_StepProgress":
        self.start = start
        return self

    def finish(self, n: int) -> None:
        self.done += n

    def update(self, fraction: float) -> None:
        step = fraction * self.run_steps - self.start
        self.prog.update((self.done + max(0.0, step)) / self.total)

    def steps(self, n: int) -> None:
        """Report ``n`` steps done in the current piece (all of its runs together)."""
        self.prog.update((self.done + n) / self.total)


class _StopFlag:
    """The caller's cancel token, plus a stop set when a sibling run of a race failed."""

    def __init__(self, token: CancelToken) -> None:
        self.outer, self.stop = token, threading.Event()

    def raise_if_cancelled(self) -> None:
        self.outer.raise_if_cancelled()
        if self.stop.is_set():
            raise Cancelled("a sibling registration failed")


class _RunProgress:
    """What a registration run in a worker thread sees of the progress: the stop flag only
    (the main thread reports the race's progress, so callbacks never run in a worker)."""

    def __init__(self, flag: _StopFlag) -> None:
        self.token = flag

    def update(self, fraction: float) -> None:
        self.token.raise_if_cancelled()


def _advance_together(runs: list, stop: int, start: int, sp: _StepProgress) -> None:
    """Advance several registrations to step ``stop`` at once, one thread each.

    The runs share nothing they write (the Poisson factor they share locks its solve), and
    the heavy parts of a step (torch kernels, k-d tree queries, the sparse solve) release
    the GIL (measured on faust5k, 2 cores: the median register stage 20.7 s in turn,
    16.4 s side by side); each run computes exactly what it computes alone. Progress and cancellation
    stay in the calling thread; a failure or a cancel stops every run within one step.
    """
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if len(runs) == 1:
        runs[0].advance(stop, sp)
        return
    flag = _StopFlag(sp.token)
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="registration") as pool:
        futures = [pool.submit(r.advance, stop, _RunProgress(flag)) for r in runs]
        try:
            pending = futures
            while pending:
                _, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                sp.steps(sum(r.step - start for r in runs))
                for f in futures:
                    if f.done() and f.exception() is not None:
                        raise f.exception()
        except BaseException:
            flag.stop.set()
            wait(futures)
            raise


def _fit_and_project(method, feat_mode, rigid, S, T, spec_s, spec_t, basis_s, basis_t, cfg, dev, prog, lm, ex_faces,
                     timings, scorer: _FitScorer | None = None, pk=None) -> dict:
    """Register the rigidly aligned source onto the target (method "full") and project both ways.

    With several guidance schedules, each registration is run for the first
    ``schedule_probe`` of its steps (with more than two, all run half of that and the
    better half goes on), the runs are scored (``scorer``) and only the best is
    finished. Adds the stage times to ``timings``; returns the deformed source vertices
    (n_s, 3), the guidance, the closest-point maps both ways and (method "full") the
    fit score and distortion.
    """
    from .mesh import Mesh
    from .register.njf import Registration

    aligned = rigid.apply(S.vertices)
    guidance = None
    deformed = aligned
    out: dict = {}
    if method == "full":
        S_al = Mesh(aligned, S.faces, S.name)
        t = time.perf_counter()
        prog.stage("features")
        guidances = _make_guidances(feat_mode, S_al, T, spec_s, spec_t, basis_s, basis_t, cfg, dev, prog,
                                    pk if pk is not None and pk.used else None, rigid)
        timings["features+initial map"] = timings.get("features+initial map", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        prog.stage("register")
        runs = []
        solver = None
        for g in guidances:
            reg_cfg = RegistrationConfig(
                steps=cfg.reg_steps, lr=cfg.reg_lr, update_every=cfg.reg_update_every,
                w_guidance=cfg.w_guidance * getattr(g, "weight_scale", 1.0),
                w_chamfer=cfg.w_chamfer, w_normal=cfg.w_normal, w_shear=cfg.w_shear, seed=cfg.seed,
            )
            runs.append(Registration(S_al, T, g, reg_cfg, landmarks=lm, exclude_faces=ex_faces, device=dev, solver=solver))
            solver = runs[-1].solver  # the runs share the source: factor the Poisson system once
        n = len(runs)
        probe = int(round(min(cfg.schedule_probe, 1.0) * cfg.reg_steps)) if n > 1 else 0
        # race stages (start step, stop step, runs in the stage). Successive halving: with more
        # than two runs, all go to half the probe and the better half goes on to the probe
        if n > 2 and probe >= 2:
            stages = [(0, probe // 2, n), (probe // 2, probe, max(2, n // 2))]
        else:
            stages = [(0, probe, n)]
        race_steps = sum(k * (stop - start) for start, stop, k in stages)
        sp = _StepProgress(prog, race_steps + cfg.reg_steps - probe, cfg.reg_steps)
        run = runs[0]
        if probe > 0:
            scores: dict[int, float] = {}
            alive = list(range(n))
            for start, stop, k in stages:
                alive = sorted(alive, key=lambda i: scores.get(i, 0.0))[:k]  # stable: no scores yet keeps the order
                live = [runs[i] for i in alive]
                for group in ([live] if cfg.race_in_threads else [[r] for r in live]):
                    _advance_together(group, stop, start, sp.piece(start))
                    sp.finish(len(group) * (stop - start))
                for i in alive:
                    scores[i] = scorer.score(scorer.nearest_vertices(runs[i].vertices()))[0]
            run = runs[min(alive, key=scores.__getitem__)]
            out["schedule_scores"] = {runs[i].guidance.schedule: round(v, 4) for i, v in scores.items()}
        run.advance(cfg.reg_steps, sp.piece(probe))
        guidance = run.guidance
        deformed = run.result().vertices
        timings["register"] = timings.get("register", 0.0) + time.perf_counter() - t

    # --- final maps by closest points, both ways
    t = time.perf_counter()
    prog.stage("project")
    if not np.all(np.isfinite(deformed)):
        raise RuntimeError("registration produced non-finite vertices")
    f_st, b_st, p_st, d_st = SurfaceQuery(T.vertices, T.faces).closest(deformed)
    prog.update(0.5)
    f_ts, b_ts, _, _ = SurfaceQuery(deformed, S.faces).closest(T.vertices)
    if scorer is not None:
        out["score"], out["distortion"] = scorer.score(T.faces[f_st, np.argmax(b_st, axis=1)])
    timings["project"] = timings.get("project", 0.0) + time.perf_counter() - t
    out.update(guidance=guidance, deformed=deformed, f_st=f_st, b_st=b_st, p_st=p_st, d_st=d_st, f_ts=f_ts, b_ts=b_ts)
    return out


def _make_guidances(mode: str, S, T, spec_s: SpectralPart, spec_t: SpectralPart, basis_s, basis_t, cfg: MatchConfig,
                    device: str, prog: Progress, pk=None, rigid=None) -> list:
    """The correspondence sources to try in the registration: spectral (geometric) or semantic
    vertex features, under one or more guidance schedules (raced by ``_fit_and_project``)."""
    from .correspond.functional_map import fit_functional_map, zoomout
    from .correspond.vertex_nn import VertexFeatureGuidance
    from .features.geometric import wks

    xs, xt = spec_s.restrict(S.vertices), spec_t.restrict(T.vertices)
    kd_s = kd_t = None
    if pk is not None:
        from .correspond.keypoint_guidance import keypoint_distance_features

        kd_s = keypoint_distance_features(spec_s.mesh, spec_s.to_main(pk.pairs[:, 0]))
        kd_t = keypoint_distance_features(spec_t.mesh, spec_t.to_main(pk.pairs[:, 1]))
    if mode == "geometric":
        Ds = np.concatenate([wks(basis_s, 64), cfg.w_pos_desc * xs], axis=1)
        Dt = np.concatenate([wks(basis_t, 64), cfg.w_pos_desc * xt], axis=1)
        if kd_s is not None:
            Ds = np.concatenate([Ds, cfg.w_keypoint_desc * kd_s], axis=1)
            Dt = np.concatenate([Dt, cfg.w_keypoint_desc * kd_t], axis=1)
        k0 = min(cfg.zoomout_start, basis_s.k, basis_t.k)
        C0 = fit_functional_map(basis_s, basis_t, Ds, Dt, k=k0)
        prog.update(0.3)
        prog.stage("initial map")
        _, C = zoomout(basis_s, basis_t, None, k0, min(basis_s.k, basis_t.k), cfg.zoomout_step, xs, xt, cfg.w_ext, C0=C0, progress=prog)
        kt, ks = C.shape
        norm = 1.0 / np.sqrt(ks)
        feat_s = spec_s.extend(basis_s.evecs[:, :ks] * norm)
        feat_t = spec_t.extend((basis_t.evecs[:, :kt] @ C) * norm)
    else:
        from .features import semantic

        feat_s, feat_t = semantic.vertex_features(S, T, mode, device=device, progress=prog, config=cfg.feature_config())
        prog.stage("initial map")
    if kd_s is not None and cfg.w_keypoint_feat > 0:
        feat_s = np.concatenate([feat_s, cfg.w_keypoint_feat * spec_s.extend(kd_s)], axis=1)
        feat_t = np.concatenate([feat_t, cfg.w_keypoint_feat * spec_t.extend(kd_t)], axis=1)
    if cfg.guidance == "flow":
        from .correspond.semantic_flow import BicyclicFlowFilter, RenderedFlowGuidance

        g = RenderedFlowGuidance(
            features=(feat_s, feat_t), device=device, views=cfg.flow_views, resolution=cfg.flow_resolution,
            match_filter=BicyclicFlowFilter(feat_s, feat_t, tau=cfg.guidance_tau),
            match_dim=None if str(device).startswith("cuda") else 64,
        )
        g.prepare(S, T)
        g.schedule = "rendered-flow"
        return [g]
    # Two candidate schedules: feature-led (features decide early, positions late) and
    # position-led (trust the rigid alignment). Which one is right depends on the pair
    # (measured: feature-led on faust5k bodies in new poses, position-led on the
    # non-isometric smal_r animals, where a mixed-up spectral map misleads), and the
    # initial maps do not tell: both registrations are started and the one whose fit
    # distorts the shape less after ``schedule_probe`` of the steps is finished.
    # Position-led guidance is mostly nearest-point matching with features as tie-breakers: it
    # gets a tenth of the weight, so that Chamfer and the regularisers lead.
    candidates = [
        ("feature-led", (cfg.guidance_w_pos_start, cfg.guidance_w_pos_end), 1.0),
        ("position-led", (cfg.guidance_w_pos_end * 2.0, cfg.guidance_w_pos_end * 2.0), 0.1),
    ]
    if cfg.guidance_schedule != "auto":
        candidates = [c for c in candidates if c[0] == cfg.guidance_schedule]
    if cfg.schedule_probe <= 0:
        candidates = candidates[:1]
    if pk is not None:
        # keypoints decided the orientation and tell the sides apart: one feature-led run,
        # pulled joint to joint early on (no race, no part pairs: those guard against the
        # orientation and side mix-ups that the keypoints rule out)
        from .correspond.keypoint_guidance import KeypointGuidance
        from .parts.guidance import CombinedGuidance

        name, w_pos, weight = candidates[0]
        g = VertexFeatureGuidance(feat_s, feat_t, w_pos=w_pos, tau=cfg.guidance_tau)
        g.prepare(S, T)
        src, tgt = pk.source, pk.target
        si = [src.index(n) for n in pk.names]
        ti = [tgt.index(n) for n in pk.names]
        kg = KeypointGuidance.from_keypoints(S, T, rigid.apply(src.points[si]), pk.pairs[:, 0], tgt.points[ti],
                                             pk.pairs[:, 1], pk.weights,
                                             release=(cfg.keypoint_release_start, cfg.keypoint_release_end))
        combined = CombinedGuidance([(g, 1.0), (kg, cfg.w_keypoints)], prepared=True)
        combined.schedule, combined.weight_scale = name + "+keypoints", weight
        return [combined]

    def vertex_guidance(name: str, w_pos, weight: float):
        g = VertexFeatureGuidance(feat_s, feat_t, w_pos=w_pos, tau=cfg.guidance_tau)
        g.prepare(S, T)
        g.schedule, g.weight_scale = name, weight
        return g

    if cfg.w_parts <= 0:
        return [vertex_guidance(*c) for c in candidates]
    from .features.geometric import geometric_descriptors
    from .parts.guidance import CombinedGuidance, PartGuidance

    # the part matcher's descriptors, from the eigenpairs computed above
    pg = PartGuidance(weight=1.0, source_features=spec_s.extend(geometric_descriptors(spec_s.mesh, basis_s)),
                      target_features=spec_t.extend(geometric_descriptors(spec_t.mesh, basis_t)))
    pg.prepare(S, T, prog)
    out = []
    for c in candidates:
        g = vertex_guidance(*c)
        # a shallow copy per schedule: the prepared part pairs are shared, the per-run state is not
        combined = CombinedGuidance([(g, 1.0), (copy.copy(pg), cfg.w_parts / max(g.weight_scale, 1e-6))], prepared=True)
        combined.schedule, combined.weight_scale = g.schedule + "+parts", g.weight_scale
        out.append(combined)
    if len(candidates) > 1:
        # Part pairs are a strong pull: right, they undo limb mix-ups; wrong (a left/right swap
        # of the part matcher, seen on faust5k bodies), they turn the fit round. So the
        # feature-led run without them races too. The position-led run without them is left
        # out: measured on smal_r, it won the race on 6 of 30 pairs, by small margins, and was
        # worse than its twin with part pairs on 5 of them (e.g. fox-06->muybridge_014_01
        # 11.63 without, 7.73 with).
        out.append(vertex_guidance(*candidates[0]))
    return out
