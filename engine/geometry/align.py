"""Rigid (similarity) pre-alignment that does not need the inputs to be aligned.

Both meshes arrive normalised (centred, unit area), so translation and scale
are already roughly right. The rotation is searched: first rotations about
each coordinate axis (shapes that share an "up" axis differ by a turn about
it), then a uniform sample of all rotations; the best candidates are refined
by similarity ICP and scored by a symmetric, trimmed Chamfer distance plus the
agreement of intrinsic descriptors at the matched points (which tells a
raised arm from a leg when the poses differ). Landmark pairs, when given,
fix the rotation directly (three or more) or join the score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..mesh import Mesh

TRIM = 0.9  # quantile of nearest-point distances kept by the Chamfer score (ignore stray parts)
ORIENTATIONS = ("auto", "as-is")
# "as-is": both meshes stand and face alike (two characters in one scene); the search covers turns
# of up to AS_IS_SEARCH_DEG about each axis (a character leaning or turned a little), and the refined
# alignment may end at most AS_IS_MAX_DEG from no turn at all (beyond it the ICP slid into another
# orientation: the stated one is kept)
AS_IS_SEARCH_DEG = 20.0
AS_IS_MAX_DEG = 30.0


@dataclass
class RigidTransform:
    """x -> scale * x @ rotation.T + translation."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scale: float = 1.0
    score: float = 0.0
    kind: str = ""  # "axis", "general", "landmarks", "identity"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(x, np.float64) @ self.rotation.T + self.translation


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True,
            scale_bounds: tuple[float, float] = (0.5, 2.0)):
    """Least-squares similarity (R, t, s) with s R src + t ~ dst. src, dst: (k, 3)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = (w[:, None] * src).sum(0)
    mu_d = (w[:, None] * dst).sum(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = (w[:, None] * xd).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = 1.0
    if with_scale:
        var = (w * (xs**2).sum(1)).sum()
        s = float(np.clip(np.trace(np.diag(S) @ D) / max(var, 1e-12), *scale_bounds))
    t = mu_d - s * R @ mu_s
    return R, t, s


def _sample(mesh: Mesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to n vertices drawn with probability proportional to vertex area."""
    p = mesh.vertex_areas / mesh.vertex_areas.sum()
    n = min(n, mesh.n_vertices)
    return rng.choice(mesh.n_vertices, size=n, replace=False, p=p)


def _axis_rotations(axes=(1, 2), step_deg: float = 15.0) -> np.ndarray:
    """Identity and turns about the given coordinate axes (0 = x, 1 = y, 2 = z)."""
    angles = np.deg2rad(np.arange(0.0, 360.0, step_deg))
    mats = [np.eye(3)]
    for i in axes:
        for a in angles[1:]:
            mats.append(Rotation.from_rotvec(np.eye(3)[i] * a).as_matrix())
    return np.asarray(mats)


def _general_rotations(n: int = 480, seed: int = 0) -> np.ndarray:
    # the 24 rotations of the cube plus n uniformly random ones from a fixed seed (deterministic,
    # not a low-discrepancy set: at n = 480 any rotation is within 17 degrees of one (median), 37 at worst)
    cube = Rotation.create_group("O").as_matrix()
    rnd = Rotation.random(n, random_state=seed).as_matrix()
    return np.concatenate([cube, rnd])


class _Scorer:
    def __init__(self, src_pts, tgt_pts, src_desc, tgt_desc, desc_weight, src_lm=None, tgt_lm=None, lm_weight=0.0):
        self.src, self.tgt = src_pts, tgt_pts
        self.tree_t = cKDTree(tgt_pts)
        self.sd, self.td = src_desc, tgt_desc
        self.desc_weight = desc_weight
        self.src_lm, self.tgt_lm, self.lm_weight = src_lm, tgt_lm, lm_weight

    def chamfer(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        d1, i1 = self.tree_t.query(x)
        d2, i2 = cKDTree(x).query(self.tgt)
        # trimmed: ignore the worst 10 % each way (partial overlap, stray parts)
        q1, q2 = np.quantile(d1, TRIM), np.quantile(d2, TRIM)
        c = 0.5 * (np.mean(d1[d1 <= q1] ** 2) + np.mean(d2[d2 <= q2] ** 2))
        return c, i1, i2

    def score(self, T: RigidTransform) -> float:
        x = T.apply(self.src)
        c, i1, i2 = self.chamfer(x)
        s = np.sqrt(c)
        if self.sd is not None and self.desc_weight > 0:
            dd = 0.5 * (np.linalg.norm(self.sd - self.td[i1], axis=1).mean() + np.linalg.norm(self.sd[i2] - self.td, axis=1).mean())
            s = s + self.desc_weight * dd
        if self.src_lm is not None and self.lm_weight > 0:
            s = s + self.lm_weight * np.linalg.norm(T.apply(self.src_lm) - self.tgt_lm, axis=1).mean()
        return float(s)

    def icp(self, T: RigidTransform, iters: int = 25, with_scale: bool = True) -> RigidTransform:
        R, t, s = T.rotation, T.translation, T.scale
        tree_s_pts = self.src
        for _ in range(iters):
            x = s * tree_s_pts @ R.T + t
            d1, i1 = self.tree_t.query(x)
            d2, i2 = cKDTree(x).query(self.tgt)
            src = np.concatenate([tree_s_pts, tree_s_pts[i2]])
            dst = np.concatenate([self.tgt[i1], self.tgt])
            d = np.concatenate([d1, d2])
            w = (d <= 2.5 * np.median(d) + 1e-12).astype(np.float64)
            if self.src_lm is not None and self.lm_weight > 0:
                src = np.concatenate([src, np.repeat(self.src_lm, 20, axis=0)])
                dst = np.concatenate([dst, np.repeat(self.tgt_lm, 20, axis=0)])
                w = np.concatenate([w, np.ones(20 * len(self.src_lm))])
            R, t, s = umeyama(src, dst, w, with_scale=with_scale)
        return RigidTransform(R, t, s, kind=T.kind)


def rigid_align(source: Mesh, target: Mesh, *args, **kwargs) -> RigidTransform:
    """The best similarity transform taking ``source`` onto ``target``: the first of
    :func:`rigid_align_candidates` (same parameters)."""
    return rigid_align_candidates(source, target, *args, **kwargs)[0]


def rigid_align_candidates(
    source: Mesh,
    target: Mesh,
    source_desc: np.ndarray | None = None,
    target_desc: np.ndarray | None = None,
    landmarks: np.ndarray | None = None,
    n_samples: int = 600,
    desc_weight: float = 0.1,
    prefer_axis: float = 0.9,
    seed: int = 0,
    min_separation_deg: float = 60.0,
    orientation: str = "auto",
) -> list[RigidTransform]:
    """Similarity transforms taking ``source`` onto ``target`` (both normalised meshes), best first.

    The first is the chosen alignment; the others are the best-scoring alignments whose
    rotation differs from every earlier one by more than ``min_separation_deg`` (a shape
    turned the other way round, a head/tail flip), for a caller that can tell a wrong
    alignment from its result. Landmark alignments come alone.

    Parameters
    ----------
    source_desc, target_desc : (ns, d), (nt, d) float, optional intrinsic descriptors
        (rows comparable across meshes) used to break ties between orientations.
    landmarks : (k, 2) int, optional (source vertex, target vertex) pairs.
    prefer_axis : any other rotation must score below ``prefer_axis`` times the best turn
        about the y or z axis to be chosen (shapes usually share an up axis, Y or Z).
    orientation : "auto" (search every rotation) or "as-is" (the meshes stand and face alike:
        only small turns, one candidate; landmarks, when three or more, still decide)
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation: {orientation!r} is not one of {', '.join(ORIENTATIONS)}")
    rng = np.random.default_rng(seed)
    si, ti = _sample(source, n_samples, rng), _sample(target, n_samples, rng)
    sp_, tp = source.vertices[si], target.vertices[ti]
    sd = None if source_desc is None else np.asarray(source_desc)[si]
    td = None if target_desc is None else np.asarray(target_desc)[ti]
    src_lm = tgt_lm = None
    lm_weight = 0.0
    if landmarks is not None and len(landmarks):
        lm = np.asarray(landmarks, np.int64).reshape(-1, 2)
        src_lm, tgt_lm = source.vertices[lm[:, 0]], target.vertices[lm[:, 1]]
        lm_weight = 1.0
    scorer = _Scorer(sp_, tp, sd, td, desc_weight if sd is not None else 0.0, src_lm, tgt_lm, lm_weight)

    if src_lm is not None and len(src_lm) >= 3:
        R, t, s = umeyama(src_lm, tgt_lm)
        T = scorer.icp(RigidTransform(R, t, s, kind="landmarks"), iters=15)
        T.score = scorer.score(T)
        return [T]

    def search(rots: np.ndarray, kind: str, keep: int) -> list[RigidTransform]:
        coarse = []
        for R in rots:
            T = RigidTransform(R, np.zeros(3), 1.0, kind=kind)
            coarse.append((scorer.score(T), T))
        coarse.sort(key=lambda st: st[0])
        refined = []
        for _, T in coarse[:keep]:
            T = scorer.icp(T)
            T.score = scorer.score(T)
            refined.append(T)
        refined.sort(key=lambda T: T.score)
        return refined

    if orientation == "as-is":
        steps = np.arange(-AS_IS_SEARCH_DEG, AS_IS_SEARCH_DEG + 1e-9, AS_IS_SEARCH_DEG / 2)
        small = np.asarray([Rotation.from_euler("xyz", a, degrees=True).as_matrix()
                            for a in np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)])
        near = [T for T in search(small, "as-is", keep=4) if _rotation_angle_deg(T.rotation) <= AS_IS_MAX_DEG]
        if not near:  # every refinement slid away: no turn (both meshes arrive centred, unit area)
            near = [RigidTransform(np.eye(3), np.zeros(3), 1.0, kind="as-is")]
            near[0].score = scorer.score(near[0])
        return near[:1]

    # "Up" is Y (OBJ, glTF, most scans) or Z (Blender, STL) by convention: turns about those axes
    # keep a shared up axis and are preferred; anything else must score clearly better.
    axis = search(_axis_rotations((1, 2)), "axis", keep=8)
    general = search(np.concatenate([_axis_rotations((0,))[1:], _general_rotations(seed=seed)]), "general", keep=8)
    best = general[0] if general[0].score < prefer_axis * axis[0].score else axis[0]
    final = scorer.icp(best, iters=15)
    final.score = scorer.score(final)
    chosen = final if final.score <= best.score else best
    out = [chosen]
    for T in sorted(axis + general, key=lambda T: T.score):
        if all(_rotation_angle_deg(T.rotation @ U.rotation.T) > min_separation_deg for U in out):
            out.append(T)
    return out


def _rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


# the mirror image aligning within this factor of the chosen alignment's score is "as well": a shape
# symmetric left to right (every body, every animal) aligns with its mirror image as well as with
# itself, so geometry alone cannot tell its sides (not tuned: the scores' own noise between seeds is
# a few per cent; docs/decisions.md for what it flags)
MIRROR_CLOSE = 1.1


def mirror_score(source: Mesh, target: Mesh, source_desc: np.ndarray | None = None,
                 target_desc: np.ndarray | None = None, n_samples: int = 600, seed: int = 0) -> float:
    """The best alignment score (as :func:`rigid_align_candidates`) of the source's mirror image
    onto the target: every reflection is one reflection and a rotation, and the search covers the
    rotations. Intrinsic descriptors are the mirror image's too."""
    mirrored = Mesh(source.vertices * np.array([-1.0, 1.0, 1.0]), source.faces[:, ::-1], source.name)
    return rigid_align_candidates(mirrored, target, source_desc, target_desc, n_samples=n_samples, seed=seed)[0].score
