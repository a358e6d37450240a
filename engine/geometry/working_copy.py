"""Working copies of large meshes: a match runs its alignment, descriptors, guidance and
registration on a copy decimated to a few thousand vertices, and its deformation is carried
back to every vertex of the full mesh (then the surface fit finishes at full resolution).

Each full vertex is tied to its closest point on the working copy (engine.geometry.surface_ties):
carrying a deformed working copy places the vertex at the same barycentrics of the deformed face,
at the same offset in its frame (scaled with the face): exact for similarities, smooth for the rest.
"""
from __future__ import annotations

import threading

import numpy as np

from ..arrays import compact, triangle_cross
from ..mesh import Mesh
from .surface_ties import SurfaceTies


class WorkingCopy:
    """A mesh and its decimated working copy (the mesh itself when it is small enough).

    full : Mesh; max_vertices : the working copy's size (0: never decimate)
    """

    def __init__(self, full: Mesh, max_vertices: int, cancel=None) -> None:
        """``cancel``: an engine.progress.CancelToken that ends a long decimation (see :func:`decimate`)."""
        self.full = full
        self.decimated = bool(max_vertices) and full.n_vertices > max_vertices
        if not self.decimated:
            self.mesh = full
            return
        v, f = _collapse_degenerate(*decimate(full.vertices, full.faces, max_vertices, cancel))
        self.mesh = Mesh(v, f, full.name)
        self._ties: SurfaceTies | None = None
        self._nearest = None

    def carry(self, deformed: np.ndarray) -> np.ndarray:
        """(n_full, 3): the full mesh deformed as the working copy was (``deformed``: (n_work, 3))."""
        if not self.decimated:
            return np.array(deformed, np.float64)
        if self._ties is None:  # made on the first carry: only the source's copy is carried (a
            # 248k-vertex target's ties would cost 0.35 s for nothing)
            self._ties = SurfaceTies(self.mesh.vertices, self.mesh.faces, self.full.vertices)
        return self._ties.carry(deformed)

    def to_working(self, full_vertices: np.ndarray) -> np.ndarray:
        """Working-copy vertex nearest to each of the given full-mesh vertex indices."""
        idx = np.asarray(full_vertices, np.int64)
        if not self.decimated:
            return idx.copy()
        if self._nearest is None:
            from scipy.spatial import cKDTree

            self._nearest = cKDTree(self.mesh.vertices)
        return self._nearest.query(self.full.vertices[idx])[1].astype(np.int64)

    def mask_to_working(self, mask: np.ndarray) -> np.ndarray:
        """(n_work,) bool: working vertices whose nearest full vertex is in ``mask`` (n_full,)."""
        mask = np.asarray(mask, bool)
        if not self.decimated:
            return mask.copy()
        from scipy.spatial import cKDTree

        _, nn = cKDTree(self.full.vertices).query(self.mesh.vertices)
        return mask[nn]


# above this many faces a decimation is one library call of over a second that nothing can
# interrupt (in place on a 2-core CPU: 1.2-1.4 s for a 640k-face subdivided FAUST body, 0.63-0.70 s
# for the 496k-face subdivided ogre, 1.5 s for a 1.3M-face sphere): it runs in a child process that
# a cancel ends at once. Below, a cancel waits at most about a second, and the match saves the
# child's cost (0.3-0.9 s: a fresh interpreter, the mesh sent over; the ogre's 0.96 s against 0.65 s)
CHILD_DECIMATION_FACES = 600_000


def decimate(vertices: np.ndarray, faces: np.ndarray, max_vertices: int, cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """The mesh (n, 3) float / (m, 3) int decimated to about ``max_vertices`` vertices (quadric
    edge collapses, fast-simplification). With a ``cancel`` token (engine.progress.CancelToken)
    and at least ``CHILD_DECIMATION_FACES`` faces it runs in a child process that a cancel stops
    within a fraction of a second (engine.errors.Cancelled); where no child can start it runs here."""
    from .. import isolated

    reduction = 1.0 - max_vertices / len(vertices)
    # the library takes C-ordered, writable arrays only (a read-only one, a cached file's, was a
    # TypeError from inside it); np.require copies only what is not so already
    args = (np.require(vertices, np.float64, ['C', 'W']), np.require(faces, np.int64, ['C', 'W']), reduction)
    # a match in engine.isolated's child (batch, benchmark) decimates in place: whoever stops that
    # child ends the decimation with it
    if cancel is None or len(faces) < CHILD_DECIMATION_FACES or isolated.in_child():
        return _simplify(*args)
    cancel.raise_if_cancelled()
    try:
        res = isolated.run_isolated(f"{__name__}:_simplify", args, timeout=3600.0, threads=1, stop=cancel.event)
    except OSError:  # no child can start here (an embedded interpreter)
        res = {"ok": False, "error": "no child"}
    cancel.raise_if_cancelled()  # a stopped child: the cancel that stopped it raises here
    if res["ok"]:
        return res["value"]
    if res.get("error", "").startswith("MemoryError"):
        raise MemoryError(res["error"])
    return _simplify(*args)  # the child could not start or died: the same call here


# fast-simplification keeps the mesh it works on in global C++ state, loaded, simplified and
# read back in separate calls: two threads decimating at once corrupt each other's meshes
_SIMPLIFY_LOCK = threading.Lock()


# one pass of the library stops short of a large reduction (its iteration budget runs out: a
# 1.28M-vertex body asked for 3000 vertices came back with 8035, in 4.7 s); passes of 4x while
# the mesh is more than 64x the target reach it, faster (3001 vertices in 3.8 s; 320k -> 3000:
# 1.07 -> 0.93 s); within 64x one pass reaches the target (80k -> 3000: 3001 vertices)
ONE_PASS_RATIO = 64
PASS_REDUCTION = 0.75


def _simplify(vertices: np.ndarray, faces: np.ndarray, reduction: float) -> tuple[np.ndarray, np.ndarray]:
    import fast_simplification

    target = max(4, int(round(len(vertices) * (1.0 - reduction))))
    v, f = vertices, faces
    # aggressiveness 3 (the library's default is 7): better shaped triangles (median quality
    # 0.94 against 0.71 on a subdivided FAUST body) and no holes, at the same speed
    with _SIMPLIFY_LOCK:
        while len(v) > ONE_PASS_RATIO * target:
            v, f = fast_simplification.simplify(v, f, target_reduction=PASS_REDUCTION, agg=3)
        if len(v) > target:
            v, f = fast_simplification.simplify(v, f, target_reduction=1.0 - target / len(v), agg=3)
    return np.asarray(v, np.float64), np.asarray(f, np.int64)


def _collapse_degenerate(vertices: np.ndarray, faces: np.ndarray, rounds: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Collapse the shortest edge of every sliver triangle, keeping the surface closed:
    decimating flat regions (a subdivided mesh) leaves triangles on collinear vertices, which no
    solver can take; dropping them would cut slits into the surface."""
    v, f = vertices, faces
    for _ in range(rounds):
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
        p = v[f]
        area2 = np.linalg.norm(triangle_cross(v, f), axis=1)
        edge2 = (np.linalg.norm(p[:, [1, 2, 0]] - p, axis=2) ** 2).sum(axis=1)
        # quality 2 sqrt(3) area2 / sum(edge^2) (1: equilateral); 0.02: a sliver with angles near 1 degree
        bad = np.nonzero(2.0 * np.sqrt(3.0) * area2 <= 0.02 * np.maximum(edge2, 1e-300))[0]
        if len(bad) == 0:
            break
        target = np.arange(len(v))
        for t in bad:  # one collapse per vertex per round: later faces see the earlier merges
            a, b, c = target[f[t]]
            if a == b or b == c or a == c:
                continue
            edges = ((a, b), (b, c), (c, a))
            i, j = min(edges, key=lambda e: float(np.sum((v[e[0]] - v[e[1]]) ** 2)))
            target[target == j] = i
        f = target[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    return compact(v, f)[:2]
