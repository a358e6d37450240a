"""``engine.match``: the correspondence pipeline, numpy in, numpy out.

Stages over one pair context (engine.pair_context): prepare (load, clean, normalise) ->
keypoints (body landmarks, when both meshes show a body) -> align (rigid: keypoints or
landmarks, else an orientation search) -> features + initial map -> register (NJF
deformation under guidance; candidates race when the orientation is in doubt) -> maps
(closest points both ways, confidence, verdict) -> the result in the caller's terms.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import __version__
from .config import FEATURE_MODES, GUIDANCE_SCHEDULES, METHODS, QUALITIES, MatchConfig, load_config  # noqa: F401
from .correspond import final_maps
from .correspondence import Correspondence
from .device import resolve_device
from .errors import InputError
from .geometry.main_part import SpectralPart  # noqa: F401  (re-exported: engine.pipeline.SpectralPart)
from .inputs import parse_exclude, parse_landmarks, read_exclude_file, read_landmarks_file  # noqa: F401
from .mesh import Mesh, as_prepared
from .full_fit import cover_verdict, to_full
from .geometry.align import ORIENTATIONS
from .pair_context import PairContext, build_pair_context, clock, peak_rss_mb
from .progress import CancelToken, Progress, ProgressCallback
from .threads import SINGLE_THREAD_FACES, single_thread

STAGES = (("prepare", 1), ("keypoints", 2), ("align", 2), ("features", 3), ("initial map", 2), ("part features", 1),
          ("register", 10), ("project", 1), ("fit surface", 2))


@dataclass
class Fit:
    """One registration from one rigid alignment, projected onto the target."""

    rigid: object
    deformed: np.ndarray
    maps: final_maps.Maps
    guidance: str | None = None
    score: float | None = None
    distortion: float | None = None
    schedule_scores: dict | None = None


def match(source, target, *, method: str = "full", features: str = "auto", quality: str = "balanced",
          device: str = "auto", landmarks=None, exclude=None, config=None, keypoints: str = "auto",
          orientation: str = "auto", skin=None, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> Correspondence:
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
    config : dict / JSON or TOML file overriding :class:`engine.config.MatchConfig` fields
    keypoints : "auto" | "on" | "off": body keypoints from the pose model on renders decide the
        orientation and guide the fit ("auto": when both meshes show a body)
    orientation : "auto" (searched) | "as-is" (the meshes stand upright and face the same way, as
        two characters in one scene do: only small turns are searched, and the keypoints' left and
        right follow from it; engine.correspond.stated_orientation)
    skin : source vertex indices or (Vs,) bool mask (or a file): the pieces holding them are the
        skin to match; by default found from the geometry (engine.geometry.pieces). Every other
        piece (eyes, teeth, helpers, props) rides along with the skin (meta "pieces")
    progress : callback(stage, fraction); returning False cancels
    cancel : CancelToken checked between and inside stages

    Returns
    -------
    Correspondence (see engine.correspondence)
    """
    from .correspond.keypoint_pairs import KEYPOINT_MODES

    if method not in METHODS:
        raise InputError(f"method: unknown method {method!r}; use one of {', '.join(METHODS)}")
    if keypoints not in KEYPOINT_MODES:
        raise InputError(f"keypoints: unknown mode {keypoints!r}; use one of {', '.join(KEYPOINT_MODES)}")
    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation: unknown value {orientation!r}; use one of {', '.join(ORIENTATIONS)}")
    cfg = load_config(config, quality)
    dev_t = resolve_device(device)
    prog = Progress(progress, cancel, STAGES)
    t0 = clock()

    prog.stage("prepare")
    src = as_prepared(source, "source", check=prog.token.raise_if_cancelled)
    prog.update(0.2)
    tgt = as_prepared(target, "target", check=prog.token.raise_if_cancelled)
    if cfg.memory_check:
        from .memory import check_match_memory

        check_match_memory(src.mesh.n_vertices, tgt.mesh.n_vertices)
    prog.update(0.4)
    riders = _riders(src, skin, prog)
    if riders is None:
        return _match_prepared(src, tgt, method, features, quality, landmarks, exclude, keypoints, orientation, cfg,
                               dev_t, prog, t0)
    if isinstance(landmarks, (str, os.PathLike)):
        landmarks = read_landmarks_file(os.fspath(landmarks))
    skin_match = _match_prepared(riders.prepared, tgt, method, features, quality, riders.landmarks(landmarks),
                                 riders.exclude(parse_exclude(exclude, src)), keypoints, orientation, cfg, dev_t, prog, t0)
    return riders.extend(skin_match)


def _riders(src, skin, prog):
    """engine.correspond.riders.SkinSource of a source in pieces (None: all of it is skin)."""
    from .correspond.riders import SkinSource
    from .geometry.pieces import find_pieces
    from .inputs import parse_vertex_set

    named = parse_vertex_set(skin, src, "skin")
    pieces = find_pieces(src.mesh, skin=named)
    if pieces.all_skin:
        return None
    prog.token.raise_if_cancelled()
    return SkinSource(src, pieces, check=prog.token.raise_if_cancelled)


def _match_prepared(src, tgt, method, features, quality, landmarks, exclude, keypoints, orientation, cfg, dev_t, prog,
                    t0) -> Correspondence:
    """``match`` from the prepared meshes on (the source: all skin)."""
    from .correspond.keypoint_pairs import detect_pair, match_verdict
    from .features.select import choose_feature_mode

    k = cfg.spectral_k if method == "full" else 30
    ctx = build_pair_context(src, tgt, k, cfg, dev_t, prog, parse_landmarks(landmarks, src, tgt), parse_exclude(exclude, src))
    ctx.orientation = orientation
    feat_mode = choose_feature_mode(features, ctx.notices, cfg.feature_config()) if method == "full" else "none"
    ctx.lap("prepare", t0)

    t = clock()
    prog.stage("keypoints")
    with single_thread(_small(ctx)):  # working-size renders and eigen solves: see engine.threads
        finer = (ctx.full_source.mesh if ctx.source_copy.decimated else None,
                 ctx.full_target.mesh if ctx.target_copy.decimated else None)
        ctx.keypoints = detect_pair(ctx.S, ctx.T, keypoints if method == "full" else "off", progress=prog,
                                    meanwhile=lambda: _spectra(ctx), finer=finer)
    if not ctx.keypoints.used and keypoints == "auto" and method == "full":
        ctx.notices.append(ctx.keypoints.reason)
    ctx.lap("keypoints", t)

    t = clock()
    prog.stage("align")
    with single_thread(_small(ctx)):  # working-size eigen solves: see engine.threads
        alignments = _align(ctx, check_mirror=method == "full")
    ctx.lap("align", t)

    fit, n_fits = _fit_alignments(ctx, alignments, method, feat_mode)
    verdict = match_verdict(ctx.keypoints, fit.maps.p_st, ctx.T.vertices, fit.score, cfg.retry_score) if method == "full" else None
    surface = to_full(ctx, fit, method)
    verdict = cover_verdict(verdict, surface)
    if verdict is not None and ctx.orientation_doubt and verdict.get("verdict") == "good":
        verdict = {**verdict, "verdict": "check", "reason": f"{ctx.orientation_doubt}; {verdict['reason']}"}

    t = clock()
    conf = final_maps.confidence(fit.deformed, ctx.full_source.mesh.faces, ctx.full_target.mesh, fit.maps, ctx.full_exclude)
    if ctx.target_body_faces is not None:  # body faces -> the target's clean faces
        fit.maps.f_st = ctx.target_body_faces[fit.maps.f_st]
    arrays = final_maps.to_caller(src, tgt, fit.maps, conf)
    ctx.lap("project", t)
    meta = {
        "version": __version__, "device": ctx.device, "method": method, "features": feat_mode,
        "guidance": fit.guidance, "quality": quality,
        "seconds": {key: round(v, 3) for key, v in ctx.timings.items()},
        "cpu_seconds": {key: round(v, 3) for key, v in ctx.cpu_timings.items()},
        "stage_peak_rss_mb": ctx.stage_peak_mb,  # the process's peak memory at the end of each stage
        "total_seconds": round(time.perf_counter() - t0[0], 3),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if ctx.device.startswith("cuda") else None,
        "orientation": orientation,  # "auto" (searched) or "as-is" (stated by the caller)
        "rigid": {"rotation": fit.rigid.rotation.tolist(), "scale": fit.rigid.scale, "kind": fit.rigid.kind,
                  "score": fit.rigid.score},
        "distortion": None if fit.distortion is None else round(fit.distortion, 4),
        "fit_score": None if fit.score is None else round(fit.score, 4),
        "alignment_fits": n_fits,  # fits run (more than one when a suspect fit was redone)
        "alignment_used": next(i for i, a in enumerate(alignments, 1) if a is fit.rigid),  # which candidate (1 = best)
        "schedule_scores": fit.schedule_scores,  # fit score of every raced schedule where it left the race
        "fallbacks": ctx.fallbacks + _geodesic_fallbacks(ctx),  # slower or other methods taken, and why
        "keypoints": ctx.keypoints.meta(),  # whether body keypoints guided the match, which pairs, their confidences
        "verdict": verdict,  # good / check / wrong, with its reason
        # flipped / folded triangles left, share of the source with no target surface under it, target
        # surface the fit leaves uncovered and fit surface off the target (engine.geometry.coverage)
        "surface_fit": surface,
        "working_vertices": [ctx.S.n_vertices, ctx.T.n_vertices],  # sizes the stages up to the registration ran at
        "target_parts": ctx.target_parts,  # parts of the target, how many were left out of the match and their area
        "source_report": src.report, "target_report": tgt.report, "notices": ctx.notices,
        "source_vertices": int(len(src.orig_vertices)), "target_vertices": int(len(tgt.orig_vertices)),
    }
    prog.update(1.0)
    return Correspondence(meta=meta, **arrays)


def _small(ctx: PairContext) -> bool:
    """The working meshes are small enough for the single-thread stages (engine.threads)."""
    return ctx.device == "cpu" and max(ctx.S.n_faces, ctx.T.n_faces) <= SINGLE_THREAD_FACES


def _spectra(ctx: PairContext) -> None:
    """The working copies' eigenbases, HKS and WKS (what the align and features stages read
    first; cached on the contexts), computed while the pose model works on the keypoint renders
    (in its own process: engine.keypoints.pose_server), so on two cores the two overlap (a fresh 5k
    pair: keypoints and spectra 1.7 -> 1.4 s; on a thread of their own the spectra held Python's
    lock against the renders and gained nothing)."""
    for mesh in (ctx.source, ctx.target):
        mesh.hks, mesh.wks  # noqa: B018  (cached properties)


def _geodesic_fallbacks(ctx: PairContext) -> list[str]:
    """Graph (Dijkstra) distances in place of the heat method, per mesh where geodesics were used:
    the keypoint features and the fit score then measure other distances."""
    out = []
    for side, mesh in (("source", ctx.source), ("target", ctx.target)):
        for attr in ("geodesics", "full_geodesics"):
            solver = mesh.__dict__.get(attr)  # computed only where a stage used it (cached property)
            if solver is not None and solver.method == "dijkstra":
                out.append(f"{side} geodesics: graph distances, not the heat method ({solver.fallback_reason})")
                break
    return out


def _align(ctx: PairContext, check_mirror: bool = True) -> list:
    """Rigid alignment candidates, best first: from the user's landmarks (3 or more) or the body
    keypoint pairs when there are such (one candidate), else an orientation search. With the
    orientation stated ("as-is"): small turns only (the keypoints do not turn it), the keypoints'
    sides taken from it, and a notice when the free search fits far better. An orientation from
    geometry alone (``check_mirror``) is doubted when the source's mirror image aligns as well."""
    from .geometry.align import rigid_align_candidates

    as_is = ctx.orientation == "as-is"
    lm = ctx.landmarks
    if ctx.keypoints_used and not as_is and (lm is None or len(lm) < 3):
        lm = ctx.keypoints.pairs if lm is None else np.concatenate([ctx.keypoints.pairs, lm])
    hs = ctx.source.hks  # low-order HKS: tie-breaks between orientations (and the ICP's matching)
    ctx.progress.update(0.5)
    kw = dict(landmarks=lm, n_samples=ctx.config.align_samples, seed=ctx.config.seed)
    out = rigid_align_candidates(ctx.S, ctx.T, hs, ctx.target.hks, orientation=ctx.orientation, **kw)
    if check_mirror and not as_is and not ctx.keypoints_used and (lm is None or len(lm) < 3):  # geometry alone
        from .geometry.align import MIRROR_CLOSE, mirror_score

        mirror = mirror_score(ctx.S, ctx.T, hs, ctx.target.hks, n_samples=ctx.config.align_samples, seed=ctx.config.seed)
        if mirror <= MIRROR_CLOSE * out[0].score:
            ctx.orientation_doubt = (f"orientation from geometry alone: the source's mirror image aligns as well "
                                     f"(score {mirror:.3f} against {out[0].score:.3f}), so left and right may be swapped")
    if as_is:
        from .correspond.stated_orientation import sides_from_orientation, statement_check

        free = rigid_align_candidates(ctx.S, ctx.T, hs, ctx.target.hks, **kw)[0]
        ctx.orientation_doubt = statement_check(out[0].score, free.score)
        if ctx.orientation_doubt:
            ctx.notices.append(ctx.orientation_doubt)
        if ctx.keypoints_used:
            ctx.keypoints, notice = sides_from_orientation(ctx.keypoints, out[0], ctx.S.vertices, ctx.T.vertices)
            if notice:
                ctx.notices.append(notice)
                ctx.orientation_doubt = ctx.orientation_doubt or "the keypoints' sides crossed the stated orientation"
    return out


def _fit_alignments(ctx: PairContext, alignments: list, method: str, feat_mode: str) -> tuple[Fit, int]:
    """Fit from the best alignment; a suspect fit (score above ``retry_score``) is redone from the next
    distinct alignment when that one scored almost as well (``retry_alignment_ratio``), and the later
    fit is kept when it scores below ``retry_margin`` times the first: two alignments can score alike
    when only one is right (a body seen from the front or the back). Keypoints rule that out: no retry."""
    from .correspond.fit_score import FitScorer

    cfg = ctx.config
    attempts = alignments[:1]
    if method == "full" and not ctx.keypoints_used:
        attempts += [a for a in alignments[1: 1 + cfg.alignment_retries]
                     if a.score <= cfg.retry_alignment_ratio * alignments[0].score]
    scorer = FitScorer(ctx.source, ctx.target, cfg.seed) if method == "full" else None
    best = None
    for n, rigid in enumerate(attempts, 1):
        fit = _fit(ctx, rigid, method, feat_mode, scorer)
        if best is None or fit.score < cfg.retry_margin * best.score:
            best = fit
        if method != "full" or fit.score <= cfg.retry_score:
            break
    return best, n


def _fit(ctx: PairContext, rigid, method: str, feat_mode: str, scorer) -> Fit:
    """Register the rigidly aligned source onto the target (method "full") and project both ways."""
    from .guidance_setup import make_guidances
    from .register.njf import Registration, RegistrationConfig
    from .register.race import Candidate, race

    cfg, prog = ctx.config, ctx.progress
    aligned = rigid.apply(ctx.S.vertices)
    deformed, guidance, scores = aligned, None, None
    if method == "full":
        S_al = Mesh(aligned, ctx.S.faces, ctx.S.name)
        t = clock()
        prog.stage("features")
        with single_thread(_small(ctx)):
            guidances = make_guidances(ctx, S_al, feat_mode, rigid)
        ctx.lap("features+initial map", t)
        t = clock()
        prog.stage("register")
        candidates, solver = [], None
        for g in guidances:
            reg_cfg = RegistrationConfig(
                steps=cfg.reg_steps, lr=cfg.reg_lr, update_every=cfg.reg_update_every,
                w_guidance=cfg.w_guidance * g.weight,
                w_chamfer=cfg.w_chamfer, w_normal=cfg.w_normal, w_shear=cfg.w_shear, seed=cfg.seed)
            run = Registration(S_al, ctx.T, g.source, reg_cfg, landmarks=ctx.landmarks, exclude_vertices=ctx.exclude,
                               device=ctx.device, solver=solver)
            solver = run.solver  # the runs share the source: factor the Poisson system once
            candidates.append(Candidate(run, g.schedule))
        if solver is not None and solver.fallback_reason and not any(f.startswith("poisson") for f in ctx.fallbacks):
            ctx.fallbacks.append(f"poisson solve: scipy sparse LU on the CPU, not cholespy ({solver.fallback_reason})")
        winner = race(candidates, cfg.reg_steps, cfg.schedule_probe, scorer.score_deformed, prog, cfg.race_in_threads)
        if len(candidates) > 1:
            scores = {c.name: round(c.score, 4) for c in candidates if c.score is not None}
        deformed, guidance = winner.run.result().vertices, winner.name
        ctx.lap("register", t)
    t = clock()
    prog.stage("project")
    maps = final_maps.project(deformed, ctx.S.faces, ctx.target.surface, ctx.T.vertices, prog)
    fit = Fit(rigid, deformed, maps, guidance, schedule_scores=scores)
    if scorer is not None:
        fit.score, fit.distortion = scorer.score(ctx.T.faces[maps.f_st, np.argmax(maps.b_st, axis=1)])
    ctx.lap("project", t)
    return fit


