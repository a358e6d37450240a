"""Per-vertex features for part matching: intrinsic descriptors fused with aligned positions.

Intrinsic descriptors (WKS/HKS, ``engine.features.geometric``) say *what* a
point is (a fingertip, a knee, the top of the head) but are mirror-symmetric:
the left and the right hand look the same. After the rigid pre-alignment
(``engine.geometry.align.rigid_align``) the extrinsic position says *which
side* a point is on. Both are fused the way the architecture notes fuse
modalities: each block is L2-normalised and the blocks are concatenated with
``sqrt`` weights, so a dot product is the weighted mean of the per-block
similarities.

The position block is a random-Fourier embedding of the aligned coordinates:
``z(x) . z(y) ~= exp(-|x - y|^2 / (2 sigma^2))``, a Gaussian kernel of the
distance, so a cosine similarity on the fused vector prefers candidates that
are both alike and on the same side of the body, yet still lets a raised arm
match a lowered one when the descriptors agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arrays import unit_rows
from ..errors import InputError
from ..mesh import Mesh

POSITION_EMBED_DIM = 256


def position_embedding(points: np.ndarray, sigma: float, dim: int = POSITION_EMBED_DIM, seed: int = 0) -> np.ndarray:
    """Random Fourier features of points (any dimension), rows of unit norm.

    points : (n, c) float; sigma : kernel width in the points' units
    Returns (n, dim) float32 with ``z(x) . z(y) ~= exp(-|x - y|^2 / (2 sigma^2))``.
    """
    rng = np.random.default_rng(seed)
    pts = np.asarray(points, np.float64)
    pts = pts.reshape(len(pts), -1)
    w = rng.normal(size=(pts.shape[1], dim // 2)) / float(sigma)
    proj = pts @ w
    z = np.concatenate([np.cos(proj), np.sin(proj)], axis=1) / np.sqrt(dim // 2)
    return z.astype(np.float32)


def l2_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows of unit length."""
    return unit_rows(np.asarray(x, np.float32))


def fuse(blocks: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Concatenate L2-normalised blocks with sqrt weights (weights sum to 1): (n, sum d) float32."""
    total = float(sum(w for _, w in blocks if w > 0)) or 1.0
    parts = [l2_rows(b) * np.sqrt(w / total) for b, w in blocks if w > 0]
    return np.concatenate(parts, axis=1).astype(np.float32)


def _hemisphere(n: int) -> np.ndarray:
    """n roughly uniform unit directions on a hemisphere (Fibonacci lattice), (n, 3)."""
    i = np.arange(n) + 0.5
    z = i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def lateral_axis(mesh: Mesh, desc: np.ndarray | None = None, n_directions: int = 0,
                 n_samples: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The left-right axis of a mesh: the normal of the plane it is most mirror-symmetric across.

    Candidate normals are the principal axes (plus ``n_directions`` directions over the
    hemisphere and a local refinement when ``n_directions > 0``: better for curled-up
    animals, worse for humans in asymmetric poses, where a skewed plane can fit the
    raised limb better than the sagittal one; off by default); a mirror is scored by how far mirrored points land from the surface and,
    when intrinsic descriptors ``desc`` (n, d) are given, by how well the descriptors of a
    point and of its mirror image agree (a left hand mirrors onto a right hand, which has
    the same descriptor; a head mirrored onto a tail does not). Humans and animals are
    nearly mirror-symmetric across their sagittal plane in any pose.

    Returns (centre (3,), unit axis (3,)) float64.
    """
    from scipy.spatial import cKDTree

    v = mesh.vertices
    w = mesh.vertex_areas / mesh.vertex_areas.sum()
    c = (v * w[:, None]).sum(0)
    x = v - c
    _, axes = np.linalg.eigh((x * w[:, None]).T @ x)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(v), size=min(n_samples, len(v)), replace=False, p=w)
    tree = cKDTree(x)
    scale = float(np.sqrt((w * (x**2).sum(1)).sum())) or 1.0
    dn = l2_rows(desc) if desc is not None else None
    p = x[idx]

    def error(a: np.ndarray) -> float:
        dist, nn = tree.query(p - 2.0 * np.outer(p @ a, a))
        err = float(dist.mean()) / scale
        if dn is not None:
            err += float(1.0 - (dn[idx] * dn[nn]).sum(1).mean())
        return err

    cands = np.concatenate([axes.T, _hemisphere(n_directions)]) if n_directions > 0 else axes.T
    errs = [error(a) for a in cands]
    best = cands[int(np.argmin(errs))]
    best_err = float(np.min(errs))
    # local refinement (with a direction search): shrinking random perturbations around the best
    for spread in ((0.15, 0.07, 0.03) if n_directions > 0 else ()):
        for a in best + spread * rng.normal(size=(12, 3)):
            a = a / np.linalg.norm(a)
            e = error(a)
            if e < best_err:
                best, best_err = a, e
    return c, best / np.linalg.norm(best)


def mirror_pairs(desc_at: np.ndarray, dist: np.ndarray, min_similarity: float = 0.95,
                 max_midline: float = 0.25) -> list[tuple[int, int]]:
    """Left/right twins among extremities: mutual best matches of their descriptors.

    desc_at : (k, d) unit descriptors at the extremities; dist : (k, k) geodesic distances.
    A mirror twin has the same intrinsic descriptor (a left hand and a right hand); the
    head or the tail tip has no twin, and its best match does not choose it back. A pair
    is dropped when an extremity without a twin lies off the pair's midline by more than
    ``max_midline`` times the twins' distance: that is a front paw paired with a back paw
    (they look alike too), which puts the head far on one side. The kept twins are
    ordered so that the first members lie on one side: of two pairs, (p1, q1) and
    (p2, q2) keep their order when p1 is geodesically nearer p2 than q2 (a left hand is
    nearer the left foot). Returns a list of (i, j) index pairs into the extremities.
    """
    k = len(desc_at)
    if k < 2:
        return []
    sim = desc_at @ desc_at.T
    np.fill_diagonal(sim, -np.inf)
    best = np.argmax(sim, axis=1)
    pairs = [(i, int(best[i])) for i in range(k) if best[best[i]] == i and i < best[i] and sim[i, best[i]] >= min_similarity]
    single = [i for i in range(k) if all(i not in pq for pq in pairs)]
    pairs = [(p, q) for p, q in pairs if all(abs(dist[q, i] - dist[p, i]) <= max_midline * dist[p, q] for i in single)]
    if not pairs:
        return []
    out = [pairs[0]]
    p0, q0 = pairs[0]
    for p, q in pairs[1:]:
        out.append((p, q) if dist[p0, p] + dist[q0, q] <= dist[p0, q] + dist[q0, p] else (q, p))
    return out


def intrinsic_side(mesh: Mesh, desc: np.ndarray, count: int = 6, width: float = 0.1) -> np.ndarray | None:
    """Which side of the body a vertex lies on, from geodesics alone: (n,) float in [-1, 1].

    Mirror twins among the extremities (:func:`mirror_pairs`: the hands, the feet, the
    front paws) each give ``tanh((d(x, right) - d(x, left)) / (width d(left, right)))``,
    antisymmetric under the body's left/right symmetry and blind to the pose: a left hand
    crossed over to the right stays nearer the left shoulder along the surface. The mean
    over the twins is returned, up to one sign shared by the whole mesh (None when no
    twins are found).
    """
    from ..geometry.geodesic import GeodesicSolver, farthest_extremities

    picks, F = farthest_extremities(GeodesicSolver(mesh), count)
    if len(picks) < 2 or not np.all(np.isfinite(F[:, picks])):
        return None
    # descriptors near each tip (mean over a small geodesic disc): the tip vertex alone is noisy
    dn = l2_rows(desc)
    scale = float(np.median(F[:, picks][F[:, picks] > 0]))
    at = l2_rows(np.stack([dn[F[i] <= 0.1 * scale].mean(0) for i in range(len(picks))]))
    pairs = mirror_pairs(at, F[:, picks])
    if not pairs:
        return None
    F = np.where(np.isfinite(F), F, np.nan)
    s = [np.tanh((F[q] - F[p]) / (width * F[p, picks[q]])) for p, q in pairs]
    return np.nan_to_num(np.mean(s, axis=0)).astype(np.float64)


def descriptors(mesh: Mesh) -> np.ndarray:
    """The shared intrinsic descriptors of a mesh: (n, d) float32, rows unit norm."""
    from ..features.geometric import geometric_descriptors

    return geometric_descriptors(mesh)


@dataclass
class PairFeatures:
    """Fused features of a source and a target in one comparable space.

    source, target : (ns, D), (nt, D) float32, rows unit norm
    source_points : (ns, 3) float64 source vertices moved onto the target (aligned frame)
    position_weight : the share of the 3D-position block used
    descriptor_agreement : mutual-NN rate of the descriptors (NaN when not measured)
    """

    source: np.ndarray
    target: np.ndarray
    source_points: np.ndarray
    position_weight: float = 0.0
    descriptor_agreement: float = float("nan")
    side_method: str = ""


def mutual_nn_rate(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows of ``a`` whose nearest row of ``b`` (cosine) has them as nearest in turn.

    a : (na, d), b : (nb, d) float. A measure of how well two meshes' descriptors agree:
    high for near-isometric pairs (one person in two poses), low across species.
    """
    from ..correspond.functional_map import nearest_rows_both_ways

    a2b, b2a = nearest_rows_both_ways(l2_rows(a), l2_rows(b))  # on unit rows: nearest = largest cosine
    return float(np.mean(b2a[a2b] == np.arange(len(a)))) if len(a) else 0.0


def auto_position_weight(mutual: float, high: float = 0.3, lo: float = 0.06, hi: float = 0.12) -> float:
    """Share of the 3D-position block from the descriptors' mutual-NN rate.

    Descriptors that agree (rate >= ``hi``: near-isometric pair) need no extrinsic help,
    and positions would only hurt when the poses differ; descriptors that disagree (rate
    <= ``lo``: different species, non-isometric) get ``high`` weight on the aligned
    positions; linear in between.
    """
    return float(high * np.clip((hi - mutual) / (hi - lo), 0.0, 1.0))


def orientation_check(source: Mesh, target: Mesh, transform, source_desc: np.ndarray, target_desc: np.ndarray,
                      margin: float = 0.005):
    """Undo a half-turn mistake of the rigid pre-alignment, judged by the intrinsic descriptors.

    Across species a Chamfer-driven alignment can turn an animal back to front (a half
    turn about one of the target's principal axes fits the silhouette about as well).
    Intrinsic descriptors are blind to rotations but not to *which* part lands where:
    for the original transform and its three half-turn variants, the mean descriptor
    cosine between spatial nearest neighbours (both ways) is computed, and a variant
    replaces the original only when it is better by more than ``margin``.

    Returns a transform with the same ``apply`` interface (``RigidTransform``).
    """
    from scipy.spatial import cKDTree

    from ..geometry.align import RigidTransform

    da, db = l2_rows(source_desc), l2_rows(target_desc)
    vt = target.vertices
    w = target.vertex_areas
    c = (vt * w[:, None]).sum(0) / w.sum()
    x = vt - c
    _, axes = np.linalg.eigh((x * w[:, None]).T @ x)
    tree_t = cKDTree(vt)
    x0 = transform.apply(source.vertices)

    def agreement(F: np.ndarray) -> float:
        y = (x0 - c) @ F.T + c
        _, i1 = tree_t.query(y)
        _, i2 = cKDTree(y).query(vt)
        return 0.5 * float((da * db[i1]).sum(1).mean() + (da[i2] * db).sum(1).mean())

    flips = [np.eye(3)] + [2.0 * np.outer(a, a) - np.eye(3) for a in axes.T]
    scores = [agreement(F) for F in flips]
    best = int(np.argmax(scores))
    if best == 0 or scores[best] < scores[0] + margin:
        return transform
    F = flips[best]
    R, t, sc = F @ transform.rotation, F @ (transform.translation - c) + c, transform.scale
    # the principal axis is only roughly the axis of the mistaken turn: a few ICP steps settle it
    from ..geometry.align import umeyama

    rng = np.random.default_rng(0)
    src = source.vertices[rng.choice(source.n_vertices, size=min(800, source.n_vertices), replace=False)]
    for _ in range(10):
        y = sc * src @ R.T + t
        d1, i1 = tree_t.query(y)
        keep = d1 <= 2.5 * np.median(d1) + 1e-12
        R, t, sc = umeyama(src[keep], vt[i1[keep]], with_scale=True)
    return RigidTransform(R, t, sc, score=transform.score, kind=transform.kind + "+half-turn")


def side_embedding(points: np.ndarray, centre: np.ndarray, axis: np.ndarray, width: float) -> np.ndarray:
    """Which side of a mirror plane: (n, 2) unit rows (cos t, sin t), t = pi/2 tanh(offset / width).

    Same side -> dot product +1, opposite sides -> -1, on the plane -> 0.
    """
    return _side_angle(np.tanh(((np.asarray(points, np.float64) - centre) @ axis) / width))


def _side_angle(side: np.ndarray) -> np.ndarray:
    """(n, 2) unit rows (cos t, sin t), t = pi/2 side, for side (n,) in [-1, 1]."""
    t = 0.5 * np.pi * np.asarray(side, np.float64)
    return np.stack([np.cos(t), np.sin(t)], axis=1).astype(np.float32)


def geodesic_sides(source: Mesh, target: Mesh, source_desc: np.ndarray, target_desc: np.ndarray,
                   source_points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`intrinsic_side` of both meshes with one sign convention, or None.

    Each mesh's side function is known up to its sign; the source's is flipped when it
    disagrees with the target's at the target vertices' nearest aligned source points
    (``source_points`` (ns, 3): the source moved onto the target): the torso, most of the
    area, sits where the alignment puts it even when the limbs are posed differently.
    """
    from scipy.spatial import cKDTree

    ss, st = intrinsic_side(source, source_desc), intrinsic_side(target, target_desc)
    if ss is None or st is None:
        return None
    _, nn = cKDTree(source_points).query(target.vertices)
    if float((target.vertex_areas * st * ss[nn]).sum()) < 0:
        ss = -ss
    return ss, st


def _check_features(f, mesh: Mesh, name: str) -> np.ndarray:
    try:
        f = np.asarray(f, np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{name} features: not a numeric array") from None
    if f.ndim != 2 or len(f) != mesh.n_vertices or f.shape[1] == 0:
        raise InputError(f"{name} features: expected shape ({mesh.n_vertices}, d), got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise InputError(f"{name} features: contain NaN or infinite values")
    return f


def pair_features(
    source: Mesh,
    target: Mesh,
    source_desc: np.ndarray | None = None,
    target_desc: np.ndarray | None = None,
    side_weight: float = 0.2,
    position_weight: float | str = "auto",
    sigma: float = 0.35,
    side_width: float = 0.05,
    transform=None,
    check_orientation: bool = False,
    side: str = "auto",
    min_plane_agreement: float = 0.3,
) -> PairFeatures:
    """Fused descriptor + aligned-position features of two normalised meshes.

    Blocks (each L2-normalised, weights are shares of the cosine similarity):
    the descriptors (1 - side_weight - position_weight), the side of the target's
    mirror plane (``side_weight``: tells left from right whatever the pose), and the
    aligned 3D position under a Gaussian kernel of width ``sigma`` (``position_weight``:
    tells front from back and head from tail when the poses are alike).

    source_desc, target_desc : optional precomputed (n, d) intrinsic descriptors (or any
        per-vertex features comparable across the two meshes, e.g. distilled DINO features)
    position_weight : a number, or "auto": from the descriptors' mutual nearest-neighbour
        rate (:func:`auto_position_weight`)
    transform : an ``engine.geometry.align.RigidTransform`` taking the source onto the
        target; computed with ``rigid_align`` when None and a position block is used
    side : how the side block tells left from right: "plane" (the side of the target's mirror
        plane, :func:`lateral_axis`), "geodesic" (:func:`geodesic_sides`, pose-blind; the plane
        when no twins are found) or "auto" (the plane, unless the geodesic sides of the target
        correlate with it below ``min_plane_agreement``: then the plane found is not the
        left/right one, e.g. a person's frontal plane, and the geodesic sides are used)
    check_orientation : after computing the alignment, run :func:`orientation_check`
        (fixes back-to-front alignments of some animals, but can flip a correct alignment
        of a human, whose front and back look alike to intrinsic descriptors: off by default)
    """
    sd = descriptors(source) if source_desc is None else _check_features(source_desc, source, "source")
    td = descriptors(target) if target_desc is None else _check_features(target_desc, target, "target")
    mutual = float("nan")
    if isinstance(position_weight, str):
        if position_weight != "auto":
            raise InputError(f"part features: position_weight must be a number or 'auto' (got {position_weight!r})")
        mutual = mutual_nn_rate(sd, td) if sd.shape[1] == td.shape[1] else 0.0
        position_weight = auto_position_weight(mutual)
    position_weight = float(position_weight)
    if side_weight < 0 or position_weight < 0 or side_weight + position_weight >= 1:
        raise InputError(f"part features: side_weight and position_weight must be >= 0 with a sum below 1 (got {side_weight}, {position_weight})")
    pts = source.vertices
    if side_weight > 0 or position_weight > 0:
        if transform is None:
            from ..geometry.align import rigid_align

            same_space = sd.shape[1] == td.shape[1]
            transform = rigid_align(source, target, sd if same_space else None, td if same_space else None)
            if same_space and check_orientation:
                transform = orientation_check(source, target, transform, sd, td)
        pts = transform.apply(source.vertices)
    bs = [(sd, 1.0 - side_weight - position_weight)]
    bt = [(td, 1.0 - side_weight - position_weight)]
    side_method = ""
    if side_weight > 0:
        if side not in ("plane", "geodesic", "auto"):
            raise InputError(f"part features: side must be 'plane', 'geodesic' or 'auto' (got {side!r})")
        c, a = lateral_axis(target, td)
        ps, pt = side_embedding(pts, c, a, side_width), side_embedding(target.vertices, c, a, side_width)
        side_method = "plane"
        sides = geodesic_sides(source, target, sd, td, pts) if side != "plane" else None
        if sides is not None and side == "auto":
            # the mirror plane is trusted unless the geodesic sides say it is not the left/right
            # plane (a person's frontal plane can look as symmetric as the sagittal one)
            w = target.vertex_areas
            plane_t = pt[:, 1].astype(np.float64)
            corr = float((w * plane_t * sides[1]).sum() / np.sqrt((w * plane_t**2).sum() * (w * sides[1] ** 2).sum() + 1e-30))
            if abs(corr) >= min_plane_agreement:
                sides = None
        if sides is not None:
            ps, pt = _side_angle(sides[0]), _side_angle(sides[1])
            side_method = "geodesic"
        bs.append((ps, side_weight))
        bt.append((pt, side_weight))
    if position_weight > 0:
        pt_emb = position_embedding(target.vertices, sigma)
        bs.append((position_embedding(pts, sigma), position_weight))
        bt.append((pt_emb, position_weight))
    return PairFeatures(fuse(bs), fuse(bt), pts, position_weight, mutual, side_method)

