"""The match's fit on the whole meshes: the working copy's deformation carried to every source
vertex and settled onto the whole target (the surface fit), or projected (the rigid baseline)."""
from __future__ import annotations

import numpy as np

from .correspond import final_maps
from .pair_context import PairContext, clock


def to_full(ctx: PairContext, fit, method: str) -> dict | None:
    """The fit on the whole meshes: the working copy's deformation carried to every source vertex
    and, for a registration, settled onto the whole target by the surface fit (without it, and
    for the rigid baseline, projected). Returns the surface fit's meta (None without one)."""
    if method == "full" and ctx.config.surface_fit:
        return fit_surface(ctx, fit)
    if ctx.source_copy.decimated or ctx.target_copy.decimated or ctx.target_body_faces is not None:
        t = clock()
        prog = ctx.progress
        prog.stage("project")
        fit.deformed = ctx.source_copy.carry(fit.deformed)
        fit.maps = final_maps.project(fit.deformed, ctx.full_source.mesh.faces, ctx.full_target.surface,
                                      ctx.target_vertices_all, prog)
        ctx.lap("project", t)
    return None


def fit_surface(ctx: PairContext, fit) -> dict:
    """Settle the registered source onto the target without flipping or folding its triangles
    (engine.register.surface_fit), on the whole meshes; ``fit`` takes the fitted source and its
    maps. A source above ``surface_fit_vertices`` is first fitted as a copy decimated to that
    size, which its full mesh then takes with its own detail and finishes in a few pulls.
    Returns the meta."""
    from .progress import SubProgress
    from .register.surface_fit import SurfaceFitConfig, SurfaceFitter

    t = clock()
    cfg = ctx.config
    ctx.progress.stage("fit surface")
    S = ctx.full_source.mesh
    start = ctx.source_copy.carry(fit.deformed)
    fixed = None if ctx.full_exclude is None else (~ctx.full_exclude).astype(np.float64)
    target = ctx.full_target.fit_target  # seconds on a 300k-vertex target: its own progress step
    ctx.progress.update(0.05)
    terms = dict(cover_weight=cfg.surface_fit_cover, web_weight=cfg.surface_fit_web)
    fit_cfg, lo = SurfaceFitConfig(iterations=cfg.surface_fit_iterations, **terms), 0.05
    if cfg.surface_fit_vertices and S.n_vertices > cfg.surface_fit_vertices:
        start = fit_decimated_surface(ctx, start, fixed, target, fit_cfg, SubProgress(ctx.progress, 0.05, 0.55))
        # the full mesh starts on the target already: it only settles (the pull starts strong)
        fit_cfg, lo = SurfaceFitConfig(iterations=cfg.surface_fit_finish, mu_start=FINISH_MU_START,
                                       reattach_steps=FINISH_REATTACH_STEPS, **terms), 0.6
    res = SurfaceFitter(S.vertices, S.faces).fit(start, target, fixed, fit_cfg,
                                                 progress=SubProgress(ctx.progress, lo, 0.9 - lo))
    fit.deformed = res.vertices
    fit.maps = final_maps.project(res.vertices, S.faces, ctx.full_target.surface, ctx.target_vertices_all, fitted=True,
                                  support=res.support)
    cover = _coverage(ctx, res.vertices, target)
    where = _where(ctx, S.vertices, fit.maps.d_st, cover)
    ctx.lap("fit surface", t)
    m = len(S.faces)
    unsupported = float(np.mean(res.support < 0.5))
    if res.no_surface > 0.05:
        ctx.notices.append(f"{100 * res.no_surface:.0f} % of the source has no target surface under it "
                           "(holes or missing parts): kept in the source's shape there, with low confidence")
    if cover.target_uncovered > UNCOVERED_NOTICE:
        ctx.notices.append(f"{100 * cover.target_uncovered:.0f} % of the target's surface is not covered by the fitted "
                           "source (clothing, gear or parts the source lacks)")
    if cover.target_beyond > UNCOVERED_NOTICE:
        ctx.notices.append(f"{100 * cover.target_beyond:.0f} % of the target's surface lies beyond the source's open "
                           "border (no counterpart: e.g. a scan's shoulders below a head template)")
    return {"flipped": res.flipped, "flipped_pct": round(100.0 * res.flipped / m, 3), "folds": res.folds,
            "folds_pct": round(100.0 * res.folds / m, 3), "unsupported_pct": round(100.0 * unsupported, 2),
            "no_surface_pct": round(100.0 * res.no_surface, 2), **cover.meta(), **where}


# a target more than this share uncovered by the fit gets a notice and at best the verdict
# "check": every real character fitted from the MakeHuman body is at most 3 % uncovered
# (docs/decisions.md), a body in bulky gear or a prop (a chair) far more
UNCOVERED_NOTICE = 0.10


def _coverage(ctx: PairContext, fitted: np.ndarray, target):
    """Both shares of engine.geometry.coverage for the fitted source on the full target (its
    matched body), read on the target samples the fit pulled with; excluded source regions left out."""
    from .geometry.coverage import coverage

    T, S = ctx.full_target.mesh, ctx.full_source.mesh
    fit_faces = None if ctx.full_exclude is None else ~ctx.full_exclude[S.faces].any(axis=1)
    return coverage(fitted, S.faces, T.vertices, T.faces, fit_face_mask=fit_faces, target_points=target.cover_samples[0],
                    target_query=target.query)


def _where(ctx: PairContext, rest: np.ndarray, distance: np.ndarray, cover) -> dict:
    """Where the fit leaves the target uncovered and where it lies off the target, by body region
    (the nearest keypoint's, engine.keypoints.detect.body_region) when both meshes showed a body:
    ``uncovered_where`` (% of the target's outer surface) and ``off_target_where`` (% of the source's
    vertices), each region above 0.5 %, largest first. rest : (n, 3) the source; distance : (n,)
    each fitted source vertex's distance to the target (the final maps')."""
    from scipy.spatial import cKDTree

    from .keypoints.detect import body_region

    pk = ctx.keypoints
    if pk is None or not pk.used or pk.kind != "body":
        return {}
    out = {}
    for key, kp, points, far in (("uncovered_where", pk.target, cover.target_points, cover.target_bare),
                                 ("off_target_where", pk.source, rest, distance > cover.tolerance)):
        found = np.nonzero(kp.vertices >= 0)[0]
        if len(found) == 0 or len(points) == 0:
            continue
        nearest = cKDTree(kp.points[found]).query(points[far])[1]
        shares: dict[str, float] = {}
        for name, count in zip(np.asarray(kp.names)[found], np.bincount(nearest, minlength=len(found))):
            region = body_region(str(name))
            shares[region] = shares.get(region, 0.0) + 100.0 * count / len(points)
        out[key] = {r: round(v, 2) for r, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    return out


def cover_verdict(verdict: dict | None, surface: dict | None) -> dict | None:
    """``verdict`` (engine.correspond.keypoint_pairs.match_verdict) no better than "check" where the
    fit leaves more than UNCOVERED_NOTICE of the target uncovered (``surface``: fit_surface's meta)."""
    if verdict is None or surface is None or verdict.get("verdict") != "good":
        return verdict
    share = surface.get("target_uncovered_pct", 0.0) / 100.0
    if share <= UNCOVERED_NOTICE:
        return verdict
    return {**verdict, "verdict": "check",
            "reason": f"{100 * share:.0f} % of the target is not covered by the fit (gear, clothing or a shape "
                      f"far from the source's); {verdict['reason']}"}


# the finishing pulls of a large source start at a tenth of the full pull (SurfaceFitConfig.mu_end
# 300): the carried fit already lies on the target, the pulls only settle its new detail
FINISH_MU_START = 30.0
# one guarded pull back onto the target after the finish's tangle replacement, not two: the
# decimated copy's fit made those pulls already. Faster and no more flips on every large source
# tried (FAUST subdivided to 80k -> tr_reg_007, ogre -> tr_reg_000, X Bot -> tr_reg_000, ogre ->
# MakeHuman body: flipped 131 / 166 / 10 / 234 -> 104 / 162 / 7 / 187 in 1.1 / 0.8 / 0.2 / 1.0 s
# less); of the source off the target (unsupported), read on the first two: 0.25 / 0.5 % more
FINISH_REATTACH_STEPS = 1


def fit_decimated_surface(ctx: PairContext, start: np.ndarray, fixed, target, fit_cfg, progress) -> np.ndarray:
    """The surface fit of the source decimated to ``surface_fit_vertices``, carried back to the
    full source with its detail (engine.geometry.working_copy). ``start`` (n, 3): the full
    source's registered shape; returns (n, 3)."""
    from .geometry.working_copy import WorkingCopy
    from .register.surface_fit import SurfaceFitter

    S = ctx.full_source.mesh
    mid = WorkingCopy(S, ctx.config.surface_fit_vertices)
    # each decimated vertex starts where its rest point on the full source went
    face, bary, _, _ = ctx.full_source.surface.closest(mid.mesh.vertices)
    corners = S.faces[face]
    mid_start = np.einsum("kj,kjd->kd", bary, start[corners])
    mid_fixed = None if fixed is None else np.einsum("kj,kj->k", bary, fixed[corners])
    res = SurfaceFitter(mid.mesh.vertices, mid.mesh.faces).fit(mid_start, target, mid_fixed, fit_cfg, progress=progress)
    return mid.carry(res.vertices)
