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
    fit_cfg, lo = SurfaceFitConfig(iterations=cfg.surface_fit_iterations), 0.05
    if cfg.surface_fit_vertices and S.n_vertices > cfg.surface_fit_vertices:
        start = fit_decimated_surface(ctx, start, fixed, target, fit_cfg, SubProgress(ctx.progress, 0.05, 0.55))
        # the full mesh starts on the target already: it only settles (the pull starts strong)
        fit_cfg, lo = SurfaceFitConfig(iterations=cfg.surface_fit_finish, mu_start=FINISH_MU_START,
                                       reattach_steps=FINISH_REATTACH_STEPS), 0.6
    res = SurfaceFitter(S.vertices, S.faces).fit(start, target, fixed, fit_cfg,
                                                 progress=SubProgress(ctx.progress, lo, 0.9 - lo))
    fit.deformed = res.vertices
    fit.maps = final_maps.project(res.vertices, S.faces, ctx.full_target.surface, ctx.target_vertices_all, fitted=True,
                                  support=res.support)
    ctx.lap("fit surface", t)
    m = len(S.faces)
    unsupported = float(np.mean(res.support < 0.5))
    if res.no_surface > 0.05:
        ctx.notices.append(f"{100 * res.no_surface:.0f} % of the source has no target surface under it "
                           "(holes or missing parts): kept in the source's shape there, with low confidence")
    return {"flipped": res.flipped, "flipped_pct": round(100.0 * res.flipped / m, 3), "folds": res.folds,
            "folds_pct": round(100.0 * res.folds / m, 3), "unsupported_pct": round(100.0 * unsupported, 2),
            "no_surface_pct": round(100.0 * res.no_surface, 2)}


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
