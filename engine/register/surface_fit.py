"""The fitted template: the registered source settled onto the target surface with its triangles
kept the way the template has them (the last stage of a match).

Projecting every registered vertex onto its closest target point flips and folds triangles
wherever the registration is a little off or the target lacks the template's detail (fingers on
a mitten hand). Instead the fit alternates (non-rigid ICP with an as-similar-as-possible prior):

1. the foot ``c_i`` of every vertex on the tangent plane of its closest target point (the fit
   slides along the surface instead of crowding onto it), with a weight ``a_i`` in [0, 1]: zero where the
   target faces away from the vertex, where the closest point is on a target boundary (a hole:
   no surface under the vertex) or the vertex is excluded;
2. per vertex, the rotation and uniform scale that best carry its rest edges (the template's own
   shape) onto the current ones;
3. one sparse solve of ``sum_edges |x_i - x_j - T_ij (r_i - r_j)|^2 + mu sum_i a_i |x_i - c_i|^2``
   with ``mu`` rising over the iterations, so the fit first keeps the template's shape and ends
   on the target.

The pull goes both ways. Vertices alone on the target leave the target uncovered where the
template is smaller (the template's thin hand inside a thick hand with its own fingers, a short
head under a tall one, a jaw: 12-17 % of real characters' surface) and let triangles span the air
between two parts whose vertices each lie on one (a web from an arm to the chest). So two more
data terms join the vertices' own: every outer target sample pulls the closest point of the fitted
surface onto itself (*cover*), and every triangle's centre is pulled onto its closest target point
(*web*). Both are lumped onto the triangle's corners by barycentric weight (each corner asked to
move by the point's offset), which keeps the system a Laplacian plus a diagonal. A target sample
whose closest fitted point lies on the template's open border off to the side (a head template's
neck cut beside a scan's shoulders) does not pull: surface with no counterpart stays out.

After each solve, the vertices of triangles that flipped (against the rest triangle carried by
the local rotation), folded onto a neighbour or collapsed are *released*: their data weight
halves for good, and the template's shape carries them over the target instead. Tangles left
at the end take the template's shape again, pasted or blended into their rim (an ear or toes
over a smoother target), and come back towards the target only as far as nothing turns bad. ``support``
(the final data weight) says how much of the template lies on target surface.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ..geometry import mesh_quality
from ..geometry.open_border import OpenBorder
from ..geometry.operators import face_areas_normals
from ..geometry.rotations import TRANSPOSED_ENTRIES, best_rotations_flat
from ..geometry.shifted_factor import ShiftedFactor
from ..mesh import Mesh


@dataclass
class SurfaceFitConfig:
    """Schedule of the fit (the defaults hold for any mesh: the energies are scale-free)."""

    iterations: int = 8  # pulls with a rising data weight (engine.config.surface_fit_iterations: why 8)
    # data weight per vertex against one edge's shape term: starts where the template's shape
    # rules (the registration's output is kept), ends where the fit sits on the target to a few
    # thousandths of an edge length
    mu_start: float = 0.3
    mu_end: float = 300.0
    # a target face turned more than 90 degrees from the vertex's normal is another side of the
    # body (the other thigh, the back of a hand): no pull; full pull from 60 degrees on
    normal_cos_zero: float = 0.0
    normal_cos_full: float = 0.5
    # a triangle shrunk below this fraction of its rest area (after the local scale) has collapsed
    collapse_ratio: float = 0.02
    inner_iterations: int = 4  # local + global steps per pull (one factor): tangles need several to relax
    release_rings: int = 2  # the vertex rings around a bad triangle freed with it
    release_hold: int = 3  # iterations a freed vertex stays free (it untangles, then is pulled again)
    settle_iterations: int = 4  # last steps at full pull, tangles freed for good
    hug_halvings: int = 6  # the last projection's step halves this often before a vertex stays
    # tangles left at the end are solved again for the template's shape over patches of 2, 4, 8,
    # 8 and 8 rings: wider patches left the fit off targets that have the detail (MakeHuman ->
    # FAUST: a 16-ring round took whole feet off the target, 5 % of the diagonal); the two more
    # 8-ring rounds take what the first left (captured MakeHuman -> X Bot fits, three starts
    # 1e-12 apart: 0.19-0.23 % flipped after three rounds, 0.12 % after five)
    replace_rounds: int = 5
    replace_max_rings: int = 8  # patches grow to at most this many rings
    # local rotation steps per patch solve (MakeHuman -> FAUST: 110 bad triangles left, 189 by a rigid paste)
    replace_iterations: int = 3
    # full pulls after that, each taken only as far as no clean triangle turns bad: the replaced
    # patches come back towards the target (FAUST tr_reg_036 -> 039: p99 distance 1.60 -> 1.48 %)
    reattach_steps: int = 2
    # the target's samples pulling the fitted surface and the triangles' centres pulled onto the
    # target, each against the vertices' own pull (every term's weights sum to the vertex count):
    # 1 and 1 chosen on the dev characters (docs/decisions.md: MakeHuman -> ogre, X Bot)
    cover_weight: float = 1.0
    web_weight: float = 1.0
    # a target sample pulls only where it lies farther than this many mean edge lengths of the fit
    # from it (full pull from twice that): closer, the fit covers it at its own resolution, and
    # those pulls only moved the template along the surface (faust5k dev pairs 1-8: mean error
    # 2.44 without the cover pull, 2.49 with it ungated, 2.47 gated at 1 edge)
    cover_gap: float = 1.0


@dataclass
class SurfaceFit:
    """Result of :meth:`SurfaceFitter.fit`.

    vertices : (n, 3) float64  the fitted template
    support : (n,) float64 in [0, 1]  how much target surface carries each vertex (0: none under
        it, or released to keep the template's shape)
    flipped : int  triangles flipped against the rest mesh at the end
    folds : int  new fold pairs at the end
    no_surface : float  share of the (not excluded) vertices with no target surface under them
        (the closest target point lies on a hole's rim, off to the side)
    """

    vertices: np.ndarray
    support: np.ndarray
    flipped: int
    folds: int
    no_surface: float = 0.0


def _lumped(n: int, corners: np.ndarray, weight: np.ndarray, offset: np.ndarray):
    """Points on triangles, each asked to move by ``offset`` (p, 3) with ``weight`` (p, 3) spread
    over its triangle's ``corners`` (p, 3) int: per vertex (n,) the summed weight and (n, 3) the
    weighted mean offset (zero where no weight)."""
    c, w = corners.ravel(), weight.ravel()
    total = np.bincount(c, w, n)
    off = np.repeat(offset, 3, axis=0) * w[:, None]
    shift = np.stack([np.bincount(c, off[:, k], n) for k in range(3)], axis=1)
    total[total < 1e-9] = 0.0  # a point on a far corner: no pull (and no division by a denormal)
    return total, np.where(total[:, None] > 0, shift / np.maximum(total, 1e-9)[:, None], 0.0)


@dataclass
class _Checks:
    """The per-face checks of one shape of the template: flipped (m,) bool, new folds per fold
    pair (p,) bool (``OrientationCheck.pairs``), areas (m,) float64."""

    flipped: np.ndarray
    folds: np.ndarray
    area: np.ndarray


class SurfaceFitter:
    """Precomputed template side of the fit: edges, the shape operator, adjacency.

    rest_vertices : (n, 3) float  the template in its own shape; faces : (m, 3) int
    """

    def __init__(self, rest_vertices: np.ndarray, faces: np.ndarray) -> None:
        self.rest = np.asarray(rest_vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        n = len(self.rest)
        self.edges = Mesh(self.rest, self.faces).edges
        self.rest_edges = self.rest[self.edges[:, 0]] - self.rest[self.edges[:, 1]]
        i, j = self.edges[:, 0], self.edges[:, 1]
        A = mesh_quality.vertex_adjacency(self.edges, n)
        self.laplacian = (sp.diags(np.asarray(A.sum(axis=1)).ravel()) - A).tocsr()
        self.ring = (A + sp.identity(n)).tocsr()
        rest_sq = (self.rest_edges ** 2).sum(1)
        # over the two rings around each vertex (its ring's incident edges) of the rest edge lengths
        self.ring_rest_sq = self.ring @ (np.bincount(i, rest_sq, n) + np.bincount(j, rest_sq, n))
        # the local and global steps as fixed sparse operators (each a few milliseconds at 5k
        # vertices against four times that gathering per edge): with D the signed edge incidence
        # (x_i - x_j) and B the unsigned one, the covariances' row a is ring B diag(r_a) D x and
        # the shape term's right side sum_b 0.5 D^T diag(r_b) B^T T[:, :, b]
        e = len(self.edges)
        rows = np.r_[np.arange(e), np.arange(e)]
        D = sp.csr_matrix((np.r_[np.ones(e), -np.ones(e)], (rows, np.r_[i, j])), shape=(e, n))
        B = sp.csr_matrix((np.ones(2 * e), (rows, np.r_[i, j])), shape=(e, n))
        ring_b = (self.ring @ B.T).tocsr()
        self._cov_op = sp.vstack([ring_b @ sp.diags(self.rest_edges[:, a]) @ D for a in range(3)]).tocsr()
        self._rhs_op = sp.hstack([0.5 * D.T @ sp.diags(self.rest_edges[:, b]) @ B for b in range(3)]).tocsr()
        self.check = mesh_quality.OrientationCheck(self.rest, self.faces)
        self.rim = OpenBorder(Mesh(self.rest, self.faces))
        self.rest_area, _ = face_areas_normals(self.rest, self.faces)
        # every pull solves laplacian + diag(data weights): one symbolic analysis for all of them
        self._system = ShiftedFactor(self.laplacian)

    def _similarities(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, 3, 3): per vertex, s R best carrying its rest edges onto the current ones (over the
        two rings around it: a small tangle then turns the way its surroundings do). ``rows``
        (r,) int: only those vertices' (r, 3, 3), the same values (each row is its own sum)."""
        n = len(self.rest)
        if rows is None:
            op, rest_sq, k = self._cov_op, self.ring_rest_sq, n
        else:
            op, rest_sq, k = self._cov_op[np.concatenate([rows, rows + n, rows + 2 * n])], self.ring_rest_sq[rows], len(rows)
        P = (op @ x).reshape(3, k, 3)  # P[a, v] = sum over v's rings of r_a (x_i - x_j)
        C9 = P.transpose(0, 2, 1).reshape(9, k)  # row-major entries of C = sum r (x_i - x_j)^T
        R9 = best_rotations_flat(C9)
        s = (R9 * C9[TRANSPOSED_ENTRIES]).sum(axis=0) / np.maximum(rest_sq, 1e-300)  # tr(R C) / rest
        return (np.maximum(s, 0.0) * R9).T.reshape(k, 3, 3)

    def _shape_rhs(self, T: np.ndarray) -> np.ndarray:
        """(n, 3): the shape term's right side for the per-vertex similarities ``T`` (n, 3, 3)."""
        return self._rhs_op @ np.ascontiguousarray(T.transpose(2, 0, 1)).reshape(-1, 3)

    def _checks(self, x: np.ndarray) -> _Checks:
        """The per-face checks of ``x``."""
        return _Checks(self.check.flipped(x), self.check.new_fold_mask(x), face_areas_normals(x, self.faces)[0])

    def _checks_after_moving(self, checks: _Checks, y: np.ndarray, moved: np.ndarray) -> _Checks:
        """:meth:`_checks` of ``y``, given ``checks`` of a shape that differs from ``y`` only at the
        ``moved`` (n,) bool vertices: only the triangles and fold pairs near them are tested again."""
        flipped = self.check.flipped_after_moving(checks.flipped, y, moved)
        changed = self.check.faces_of(np.nonzero(moved)[0])
        area = checks.area.copy()
        area[changed] = face_areas_normals(y, self.faces[changed])[0]
        pairs = self.check.pairs_of(changed)
        folds = checks.folds.copy()
        folds[pairs] = self.check.new_fold_mask(y, pairs)
        return _Checks(flipped, folds, area)

    def _bad(self, checks: _Checks, cfg: SurfaceFitConfig) -> np.ndarray:
        """(m,) bool: triangles flipped, folded onto a neighbour or collapsed."""
        bad = checks.flipped.copy()
        bad[self.check.pairs[checks.folds].ravel()] = True
        scale2 = checks.area.sum() / max(self.rest_area.sum(), 1e-300)
        bad |= (checks.area < cfg.collapse_ratio * scale2 * self.rest_area) & (self.rest_area > 0)
        return bad

    def _bad_faces(self, x: np.ndarray, cfg: SurfaceFitConfig) -> np.ndarray:
        """(m,) bool: triangles flipped, folded onto a neighbour or collapsed in ``x``."""
        return self._bad(self._checks(x), cfg)

    def _dilate(self, mask: np.ndarray, rings: int) -> np.ndarray:
        for _ in range(rings):
            mask = (self.ring @ mask.astype(np.float64)) > 0
        return mask

    def _cover(self, x: np.ndarray, normals: np.ndarray, target, cfg: SurfaceFitConfig):
        """The target's pull on the fitted surface ``x`` (n, 3) with face ``normals`` (m, 3): each
        outer target sample farther than ``cfg.cover_gap`` edges pulls its closest fitted point onto
        itself (facing it as a vertex's pull must; none where that point is on the template's open
        border off to the side).
        Returns per vertex the weight (n,) and the mean offset (n, 3) (:func:`_lumped`)."""
        from ..geometry.closest import SurfaceQuery

        pts, nrm = target.cover_samples
        face, bary, point, dist = SurfaceQuery(x, self.faces).closest(pts)
        w = _facing(np.einsum("ij,ij->i", normals[face], nrm), cfg)
        w[self.rim.off_to_the_side(face, bary, pts - point, normals[face], dist)] = 0.0
        if cfg.cover_gap > 0:  # a sample about an edge from the fit is covered at the fit's own resolution
            gap = cfg.cover_gap * np.linalg.norm(x[self.edges[:, 0]] - x[self.edges[:, 1]], axis=1).mean()
            w *= np.clip(dist / gap - 1.0, 0.0, 1.0)
        w *= len(x) / max(len(pts), 1)
        return _lumped(len(x), self.faces[face], w[:, None] * bary, pts - point)

    def _web(self, x: np.ndarray, normals: np.ndarray, target, cfg: SurfaceFitConfig):
        """Every triangle's centre of ``x`` (n, 3) pulled onto its closest target point (where
        the triangle, face ``normals`` (m, 3), faces it, and not towards the rim of a hole under
        it). Returns as :meth:`_cover`."""
        centre = x[self.faces].mean(axis=1)
        face, bary, point, dist = target.query.closest(centre)
        w = _facing(np.einsum("ij,ij->i", normals, target.normals[face]), cfg) * (len(x) / len(centre))
        w[target.rim.off_to_the_side(face, bary, centre - point, target.normals[face], dist)] = 0.0  # over a hole
        return _lumped(len(x), self.faces, np.repeat(w[:, None] / 3.0, 3, axis=1), point - centre)

    def _step(self, x, target, weight_mask, mu, cfg):
        """One pull, then ``cfg.inner_iterations`` local + global steps on one factor;
        returns the new x and the data weights used."""
        closest, w_surface, _ = target.pull(x, Mesh(x, self.faces).vertex_normals, cfg, plane=True)
        weight = weight_mask * w_surface
        eps = 1e-6  # keeps the system definite where no vertex has data (a released part)
        total = mu * weight + eps
        data = total[:, None] * np.where(weight[:, None] > 0, closest, x)
        if cfg.cover_weight > 0 or cfg.web_weight > 0:
            normals = face_areas_normals(x, self.faces)[1]
            pulled = weight_mask > 0  # released and excluded vertices take no pull of any kind
            for term, scale in ((self._cover, cfg.cover_weight), (self._web, cfg.web_weight)):
                if scale > 0:
                    w, shift = term(x, normals, target, cfg)
                    w = mu * scale * w * pulled
                    data += w[:, None] * (x + shift)
                    total += w
        factor = self._system.factor(total)
        for _ in range(cfg.inner_iterations):
            x = factor.solve(self._shape_rhs(self._similarities(x)) + data)
        return x, weight

    def fit(self, start: np.ndarray, target, fixed_weight: np.ndarray | None = None,
            config: SurfaceFitConfig | None = None, progress=None) -> SurfaceFit:
        """Settle ``start`` (n, 3) (the registered template) onto ``target`` (a :class:`TargetSurface`).

        fixed_weight : optional (n,) float in [0, 1]  multiplies every vertex's data weight
            (0 on excluded vertices: they follow their surroundings)
        progress : anything with ``update(fraction)`` (checks cancellation)
        """
        cfg = config or SurfaceFitConfig()
        n = len(self.rest)
        x = np.asarray(start, np.float64).copy()
        fixed = np.ones(n) if fixed_weight is None else np.clip(np.asarray(fixed_weight, np.float64), 0.0, 1.0)
        free_until = np.zeros(n, int)  # a vertex of a tangle has no data term until this iteration
        times_freed = np.zeros(n, int)
        mus = np.geomspace(cfg.mu_start, cfg.mu_end, cfg.iterations)
        weight = np.zeros(n)
        for it, mu in enumerate(mus):
            bad = self._bad_faces(x, cfg)
            if bad.any():  # tangles are freed for a while: the template's shape untangles them
                tangled = self._dilate(np.isin(np.arange(n), self.faces[bad]), cfg.release_rings)
                newly = tangled & (free_until <= it)
                times_freed[newly] += 1
                # a vertex freed again and again is detail the target lacks: it stays free longer
                free_until[newly] = it + cfg.release_hold * 2 ** (times_freed[newly] - 1)
            free = free_until > it
            x, weight = self._step(x, target, fixed * ~free, mu, cfg)
            if progress is not None:
                progress.update((it + 1) / (len(mus) + cfg.settle_iterations))
        # settle: what is still tangled at full pull stays free for good
        free = free_until > len(mus)
        for it in range(cfg.settle_iterations):
            bad = self._bad_faces(x, cfg)
            if not bad.any():
                break
            free |= self._dilate(np.isin(np.arange(n), self.faces[bad]), cfg.release_rings)
            x, weight = self._step(x, target, fixed * ~free, mus[-1], cfg)
            if progress is not None:
                progress.update((len(mus) + it + 1) / (len(mus) + cfg.settle_iterations))
        x, replaced = self._replace_tangles(x, cfg)
        weight = np.where(replaced, 0.0, weight)
        for _ in range(cfg.reattach_steps):
            x = self._guarded(x, self._step(x, target, fixed, mus[-1], cfg)[0], cfg)[0]
        x, support, off_rim = self._hug(x, target, fixed, weight, cfg)
        flipped = int(self.check.flipped(x).sum())
        folds = len(self.check.new_folds(x))
        counted = fixed > 0
        no_surface = float(np.mean(off_rim[counted])) if counted.any() else 0.0
        return SurfaceFit(vertices=x, support=support, flipped=flipped, folds=folds, no_surface=no_surface)

    def _replace_tangles(self, x: np.ndarray, cfg: SurfaceFitConfig) -> tuple[np.ndarray, np.ndarray]:
        """Tangles the shape steps could not undo (a crumpled pocket held by its rim: an ear, a
        nostril, toes over a smoother target) take the template's own shape again, placed by the
        similarity that best carries the rim's rest shape onto where the rim is now: pasted in as
        it is, or blended into the rim (solved for the template's edges with the rim held, then
        ``cfg.replace_iterations`` local rotation steps). A patch keeps whichever leaves
        the fewest bad triangles, if fewer than now; each round takes patches twice as wide around
        what is left, up to ``cfg.replace_max_rings`` (``cfg.replace_rounds``). Returns x and the vertices (n,) bool that took the
        template's shape (they no longer lie on the target for sure: no support)."""
        from scipy.sparse.csgraph import connected_components

        from ..geometry.align import umeyama

        n = len(self.rest)
        replaced = np.zeros(n, bool)
        checks = self._checks(x)
        for round_ in range(cfg.replace_rounds):
            bad = self._bad(checks, cfg)
            if not bad.any():
                break
            rings = min(cfg.release_rings * 2 ** round_, cfg.replace_max_rings)
            tangled = self._dilate(np.isin(np.arange(n), self.faces[bad]), rings)
            _, label = connected_components(self.ring[tangled][:, tangled], directed=False)
            comp = np.full(n, -1)
            comp[tangled] = label
            T = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
            pasted = x.copy()
            solved = np.zeros(n, bool)  # patches with a rim to hold (a whole loose part has none)
            for c in range(label.max() + 1):
                inside = comp == c
                rim = self._dilate(inside, 1) & ~inside
                if rim.sum() >= 3:
                    R, t, scale = umeyama(self.rest[rim], x[rim], scale_bounds=(0.0, np.inf))
                    T[inside] = scale * R
                    pasted[inside] = scale * self.rest[inside] @ R.T + t
                    solved |= inside
            blended = self._solve_inside(x, solved, T, cfg.replace_iterations) if solved.any() else x
            # per patch (the faces with a vertex in it), the cleanest of: as it is, the template's
            # shape pasted in (a fin standing off a blob), the shape blended into the rim (an ear)
            face_comp = comp[self.faces].max(axis=1) + 1
            m = label.max() + 2
            # the paste and the blend move only the patches' vertices
            others = [self._bad(self._checks_after_moving(checks, y, solved), cfg) for y in (pasted, blended)]
            counts = [np.bincount(face_comp[b], minlength=m)[1:] for b in (bad, *others)]
            choice = np.argmin(np.stack(counts), axis=0)  # ties keep the earlier: as it is, then the paste
            moved = np.zeros(n, bool)
            for k, y in ((1, pasted), (2, blended)):
                took = np.isin(comp, np.nonzero(choice == k)[0])
                x = np.where(took[:, None], y, x)
                moved |= took
            replaced |= moved
            checks = self._checks_after_moving(checks, x, moved)  # the next round's, re-tested near the patches
        return x, replaced

    def _solve_inside(self, x: np.ndarray, inside: np.ndarray, T: np.ndarray, iterations: int) -> np.ndarray:
        """``x`` (n, 3) with the ``inside`` vertices (n,) bool solved for the template's edges under
        the per-vertex similarities ``T`` (n, 3, 3), every other vertex held where it is (the
        patch blends into its rim instead of being pasted in); then ``iterations`` local steps
        (each vertex's similarity refitted to its two rings) and solves again."""
        from scipy.sparse.linalg import splu

        idx = np.nonzero(inside)[0]
        rows = self.laplacian[idx]
        lu = splu(rows[:, idx].tocsc())  # the graph Laplacian with the rim held: definite
        held = rows[:, ~inside] @ x[~inside]
        y, T = x.copy(), T.copy()
        for k in range(iterations + 1):
            if k:
                T[idx] = self._similarities(y, idx)
            y[idx] = lu.solve(self._shape_rhs(T)[idx] - held)
        return y

    def _guarded(self, x: np.ndarray, x_new: np.ndarray, cfg: SurfaceFitConfig):
        """Move from ``x`` towards ``x_new`` (both (n, 3)) as far as no triangle that is fine in
        ``x`` turns bad and no triangle that is not flipped in ``x`` flips (a folded or collapsed
        one may not flip either): the step halves on the vertices of such a triangle a few times,
        then they stay (``cfg.hug_halvings``). Returns the new positions and the step (n,) in [0, 1] each vertex made."""
        before = self._checks(x)
        bad_before, flipped_before = self._bad(before, cfg), before.flipped
        alpha = np.ones(len(x))
        y = x + alpha[:, None] * (x_new - x)
        checks = self._checks(y)
        for k in range(cfg.hug_halvings + len(self.faces)):
            new_bad = (self._bad(checks, cfg) & ~bad_before) | (checks.flipped & ~flipped_before)
            if not new_bad.any():
                break
            corners = np.unique(self.faces[new_bad])
            verts = corners[alpha[corners] > 0]
            if len(verts) == 0:  # corners back where they were: the flip check's local rotation, read
                # over two rings round the corners, turned with a vertex there that moved; those step back too
                mask = np.zeros(len(x), bool)
                mask[corners] = True
                verts = np.nonzero(self._dilate(mask, 2) & (alpha > 0))[0]
            if len(verts) == 0:  # only vertices already back where they were: nothing left to undo
                break
            alpha[verts] = 0.5 * alpha[verts] if k < cfg.hug_halvings else 0.0
            y = x + alpha[:, None] * (x_new - x)
            moved = np.zeros(len(x), bool)
            moved[verts] = True
            checks = self._checks_after_moving(checks, y, moved)
        return y, alpha

    def _hug(self, x, target, fixed, weight, cfg):
        """Last step: every vertex with surface under it moves onto its closest target point, but
        only as far as no triangle turns bad (the step halves on the vertices of a triangle that
        would; after ``cfg.hug_halvings`` halvings they stay). Returns x and the support (n,)."""
        closest, w_surface, off_rim = target.pull(x, Mesh(x, self.faces).vertex_normals, cfg)
        movable = (fixed > 0) & (w_surface > 0)
        y, alpha = self._guarded(x, np.where(movable[:, None], closest, x), cfg)
        # support: on the surface (data weight, or hugged all the way) and facing it
        support = np.maximum(np.minimum(weight, 1.0), np.where(alpha == 1.0, w_surface, 0.0)) * fixed
        return y, support, off_rim


def _facing(cos: np.ndarray, cfg: SurfaceFitConfig) -> np.ndarray:
    """(p,) pull weight in [0, 1] from the cosine between the two surfaces' normals."""
    return np.clip((cos - cfg.normal_cos_zero) / (cfg.normal_cos_full - cfg.normal_cos_zero), 0.0, 1.0)


class TargetSurface:
    """The target side of the fit: closest points, face normals and boundary edges.

    query : engine.geometry.closest.SurfaceQuery of the target; mesh : the target Mesh (its edge
    table, often made already when it was cleaned, gives the boundary)
    """

    def __init__(self, query, mesh: Mesh) -> None:
        self.query = query
        self.vertices = np.asarray(mesh.vertices, np.float64)
        self.faces = np.asarray(mesh.faces, np.int64)
        _, self.normals = face_areas_normals(self.vertices, self.faces)
        self.rim = OpenBorder(mesh)

    @cached_property
    def cover_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Outer surface samples of the target (p, 3) float64 and their face normals (p, 3)
        (engine.geometry.coverage): what the fitted surface should cover."""
        from ..geometry.coverage import COVER_SAMPLES, outer_samples

        # as many as the coverage shares are read on (engine.full_fit reads them on these)
        return outer_samples(self.vertices, self.faces, COVER_SAMPLES, seed=0, normals=True)

    def pull(self, x: np.ndarray, normals: np.ndarray, cfg: SurfaceFitConfig, plane: bool = False):
        """Where each vertex of ``x`` (n, 3) is pulled to, the pull's weight (n,) in [0, 1] (the
        normal agreement; zero where the closest point lies on a boundary edge off to the side),
        and that last case (n,) bool: a hole under the vertex.

        plane : pull to the tangent plane of the closest point (the foot of ``x`` on it) instead of
            the point itself: the vertex may slide along the surface, so vertices do not crowd
            onto the same spot (a crease, a thin part the fit reaches from the side)
        """
        face, bary, point, dist = self.query.closest(x)
        w = _facing(np.einsum("ij,ij->i", normals, self.normals[face]), cfg)
        off_rim = self.rim.off_to_the_side(face, bary, x - point, self.normals[face], dist)
        w[off_rim] = 0.0
        if plane:
            nrm = self.normals[face]
            point = x + nrm * np.einsum("ij,ij->i", point - x, nrm)[:, None]
        return point, w, off_rim


def fit_surface(rest_vertices, faces, start, target_vertices, target_faces, fixed_weight=None,
                config: SurfaceFitConfig | None = None) -> SurfaceFit:
    """One-shot :class:`SurfaceFitter` fit of ``start`` (the template registered near the target)."""
    from ..geometry.closest import SurfaceQuery

    tv, tf = np.asarray(target_vertices, np.float64), np.asarray(target_faces, np.int64)
    target = TargetSurface(SurfaceQuery(tv, tf), Mesh(tv, tf))
    return SurfaceFitter(rest_vertices, faces).fit(start, target, fixed_weight, config)
