"""The guidance candidates of a match: which correspondence sources steer the registration.

``make_guidances(ctx, aligned_source, feature_mode, rigid)`` builds the per-vertex features
(spectral: a functional map refined by ZoomOut; or semantic: lifted DINOv2 / SD features),
adds the body-keypoint distances when keypoints are used, and returns the registrations to
run as :class:`GuidanceCandidate`: one when body keypoints decided the orientation (or a
schedule is forced), else the candidates the registration race chooses from.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .correspond.guidance_source import GuidanceSource
from .pair_context import PairContext


@dataclass(frozen=True)
class GuidanceCandidate:
    """One registration a match may run.

    source : the prepared guidance (its ``loss`` / ``update`` steer the registration)
    schedule : its name (what the race reports and ``meta["guidance"]`` records)
    weight : its guidance loss's weight, relative to ``MatchConfig.w_guidance``
    """

    source: GuidanceSource
    schedule: str
    weight: float = 1.0


def make_guidances(ctx: PairContext, S, mode: str, rigid) -> list[GuidanceCandidate]:
    """The correspondence sources to run (see the module docstring).

    S : the rigidly aligned source Mesh (the target is ``ctx.T``); mode : "geometric" or a
    semantic feature mode; rigid : the alignment (keypoint joints are carried by it)
    """
    from .correspond.functional_map import fit_functional_map, zoomout
    from .correspond.vertex_nn import VertexFeatureGuidance

    cfg, prog, device, T = ctx.config, ctx.progress, ctx.feature_device, ctx.T
    spec_s, spec_t = ctx.source.part, ctx.target.part
    basis_s, basis_t = ctx.source.basis, ctx.target.basis
    pk = ctx.keypoints if ctx.keypoints_used else None
    xs, xt = spec_s.restrict(S.vertices), spec_t.restrict(T.vertices)
    kd_s = kd_t = None
    if pk is not None:
        from .correspond.keypoint_guidance import keypoint_distance_features

        kd_s = keypoint_distance_features(spec_s.mesh, spec_s.to_main(pk.pairs[:, 0]), ctx.source.geodesics)
        kd_t = keypoint_distance_features(spec_t.mesh, spec_t.to_main(pk.pairs[:, 1]), ctx.target.geodesics)
    if mode == "geometric":
        Ds = np.concatenate([ctx.source.wks_main, cfg.w_pos_desc * xs], axis=1)
        Dt = np.concatenate([ctx.target.wks_main, cfg.w_pos_desc * xt], axis=1)
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
            features=(feat_s, feat_t), device=ctx.device, views=cfg.flow_views, resolution=cfg.flow_resolution,
            match_filter=BicyclicFlowFilter(feat_s, feat_t, tau=cfg.guidance_tau),
            match_dim=None if str(ctx.device).startswith("cuda") else 64,
        )
        g.prepare(S, T)
        return [GuidanceCandidate(g, "rendered-flow")]
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
    def vertex_guidance(name: str, w_pos, weight: float) -> GuidanceCandidate:
        g = VertexFeatureGuidance(feat_s, feat_t, w_pos=w_pos, tau=cfg.guidance_tau)
        g.prepare(S, T)
        return GuidanceCandidate(g, name, weight)

    if pk is not None:
        # keypoints decided the orientation and tell the sides apart: one feature-led run,
        # pulled joint to joint early on (no race, no part pairs: those guard against the
        # orientation and side mix-ups that the keypoints rule out)
        from .correspond.keypoint_guidance import KeypointGuidance
        from .parts.guidance import CombinedGuidance

        g = vertex_guidance(*candidates[0])
        src, tgt = pk.source, pk.target
        si = [src.index(n) for n in pk.names]
        ti = [tgt.index(n) for n in pk.names]
        kg = KeypointGuidance.from_keypoints(S, T, rigid.apply(src.points[si]), pk.pairs[:, 0], tgt.points[ti],
                                             pk.pairs[:, 1], pk.weights,
                                             release=(cfg.keypoint_release_start, cfg.keypoint_release_end))
        combined = CombinedGuidance([(g.source, 1.0), (kg, cfg.w_keypoints)], prepared=True)
        return [GuidanceCandidate(combined, g.schedule + "+keypoints", g.weight)]
    if cfg.w_parts <= 0:
        return [vertex_guidance(*c) for c in candidates]
    from .parts.guidance import CombinedGuidance, PartGuidance

    # the part matcher's descriptors, from the pair's eigenpairs
    pg = PartGuidance(weight=1.0, source_features=ctx.source.part_descriptors, target_features=ctx.target.part_descriptors)
    pg.prepare(S, T, prog)
    out = []
    for c in candidates:
        g = vertex_guidance(*c)
        # a shallow copy per schedule: the prepared part pairs are shared, the per-run state is not
        combined = CombinedGuidance([(g.source, 1.0), (copy.copy(pg), cfg.w_parts / max(g.weight, 1e-6))], prepared=True)
        out.append(GuidanceCandidate(combined, g.schedule + "+parts", g.weight))
    if len(candidates) > 1:
        # Part pairs are a strong pull: right, they undo limb mix-ups; wrong (a left/right swap
        # of the part matcher, seen on faust5k bodies), they turn the fit round. So the
        # feature-led run without them races too. The position-led run without them is left
        # out: measured on smal_r, it won the race on 6 of 30 pairs, by small margins, and was
        # worse than its twin with part pairs on 5 of them (e.g. fox-06->muybridge_014_01
        # 11.63 without, 7.73 with).
        out.append(vertex_guidance(*candidates[0]))
    return out
