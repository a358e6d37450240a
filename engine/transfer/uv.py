"""Seam-aware UV transfer through a surface map.

UVs live on triangle corners: ``corner_uv[f, k]`` is the UV of corner ``k`` of
triangle ``f``. A *seam* is an edge whose two triangles disagree on the UVs of
its end points; crossing it jumps to another place of the layout (another
island, or the other side of the same island, as on a cylinder).

Transfer: every target vertex lies in a source triangle (the map), so each
target corner gets a UV by interpolating that triangle's corner UVs. When the
three corners of a target triangle land in source triangles on different sides
of a seam, interpolating those UVs would stretch the triangle across the
layout. Instead the whole triangle is expressed in the chart of one of its
corners: the UVs of the other corners are carried across the seam by the 2-D
similarity (rotation or mirror, scale, shift) that maps the seam edge's UVs on
one side to its UVs on the other side, composed along the shortest path of
source triangles. Such target triangles are reported as ``seam_faces``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .maps import check_faces, check_map, common_face


@dataclass
class UVTransfer:
    """Result of :func:`transfer_uvs`.

    Attributes
    ----------
    corner_uv : (mt, 3, 2) float32  UVs of every target triangle corner
    seam_faces : (k,) int64  target triangles that straddled a source UV seam
        (given UVs in the chart of one side as a whole)
    src_islands : (ms,) int64  UV island of every source triangle
    """

    corner_uv: np.ndarray
    seam_faces: np.ndarray
    src_islands: np.ndarray


def check_corner_uv(corner_uv, n_faces: int, name: str) -> np.ndarray:
    """Validate per-corner UVs; returns (m, 3, 2) float64."""
    if corner_uv is None:
        raise InputError(f"{name}: mesh has no UVs")
    try:
        uv = np.asarray(corner_uv, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: UVs are not a numeric array") from None
    if uv.shape != (n_faces, 3, 2):
        raise InputError(f"{name}: corner UVs must have shape ({n_faces}, 3, 2) (one UV per triangle corner), got {uv.shape}")
    if not np.all(np.isfinite(uv)):
        raise InputError(f"{name}: {int((~np.isfinite(uv)).any(axis=(1, 2)).sum())} triangles have NaN or infinite UVs")
    return uv


# --------------------------------------------------------------------------- 2-D similarity transforms
# A transform is a (3, 3) homogeneous matrix acting on column vectors (u, v, 1).

def _similarity(src_a, src_b, dst_a, dst_b, mirror):
    """(k, 3, 3) transforms mapping segment src_a-src_b onto dst_a-dst_b (all (k, 2)); mirror (k,) bool."""
    zs = (src_a[:, 0] - src_b[:, 0]) + 1j * (src_a[:, 1] - src_b[:, 1])
    zd = (dst_a[:, 0] - dst_b[:, 0]) + 1j * (dst_a[:, 1] - dst_b[:, 1])
    zs_m = np.where(mirror, np.conj(zs), zs)
    ok = np.abs(zs_m) > 1e-15
    alpha = np.where(ok, zd / np.where(ok, zs_m, 1.0), 1.0 + 0j)
    a, b = alpha.real, alpha.imag
    T = np.zeros((len(zs), 3, 3))
    # rotation-scale: [[a, -b], [b, a]]; mirror (conjugate first): [[a, b], [b, -a]]
    T[:, 0, 0] = a
    T[:, 0, 1] = np.where(mirror, b, -b)
    T[:, 1, 0] = b
    T[:, 1, 1] = np.where(mirror, -a, a)
    T[:, 2, 2] = 1.0
    moved = np.einsum("kij,kj->ki", T[:, :2, :2], src_a)
    T[:, :2, 2] = dst_a - moved
    return T


def _apply(T, uv):
    """Apply (k, 3, 3) transforms to (k, 2) points."""
    return np.einsum("kij,kj->ki", T[:, :2, :2], uv) + T[:, :2, 2]


def _invert(T):
    """Inverse of (k, 3, 3) 2-D affine transforms."""
    A = T[:, :2, :2]
    det = A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]
    det = np.where(np.abs(det) > 1e-300, det, 1e-300)
    Ai = np.stack([np.stack([A[:, 1, 1], -A[:, 0, 1]], -1), np.stack([-A[:, 1, 0], A[:, 0, 0]], -1)], 1) / det[:, None, None]
    out = np.zeros_like(T)
    out[:, :2, :2] = Ai
    out[:, :2, 2] = -np.einsum("kij,kj->ki", Ai, T[:, :2, 2])
    out[:, 2, 2] = 1.0
    return out


def _is_identity(T, tol):
    return (np.abs(T[:, :2, :2] - np.eye(2)).max(axis=(1, 2)) < 1e-6) & (np.abs(T[:, :2, 2]).max(axis=1) < tol)


class _SourceCharts:
    """Edge adjacency of the source triangles with the UV transform across every shared edge."""

    def __init__(self, faces: np.ndarray, corner_uv: np.ndarray) -> None:
        m = len(faces)
        self.faces = faces
        self.uv = corner_uv
        extent = float(np.ptp(corner_uv.reshape(-1, 2), axis=0).max()) if m else 1.0
        self.tol = 1e-6 * max(extent, 1e-12)
        # half-edges: face f, local edge j from corner j to corner j+1
        # half-edges of the non-degenerate triangles (a repeated vertex makes a triangle a dead end)
        good = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        fj = np.repeat(np.nonzero(good)[0], 3)
        jj = np.tile(np.arange(3), int(good.sum()))
        va = faces[fj, jj]
        vb = faces[fj, (jj + 1) % 3]
        key = np.minimum(va, vb) * (int(faces.max()) + 1) + np.maximum(va, vb)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        start = np.ones(len(ks), bool)
        start[1:] = ks[1:] != ks[:-1]
        gid = np.cumsum(start) - 1
        count = np.bincount(gid)
        # pair the two half-edges of every manifold edge (count == 2)
        first = order[start]
        two = count == 2
        h1 = first[two]
        h2 = order[np.nonzero(start)[0][two] + 1]
        f1, j1, f2 = fj[h1], jj[h1], fj[h2]
        a = faces[f1, j1]
        b = faces[f1, (j1 + 1) % 3]
        # corner of a / b inside f2
        ca2 = np.argmax(faces[f2] == a[:, None], axis=1)
        cb2 = np.argmax(faces[f2] == b[:, None], axis=1)
        ua1, ub1 = corner_uv[f1, j1], corner_uv[f1, (j1 + 1) % 3]
        ua2, ub2 = corner_uv[f2, ca2], corner_uv[f2, cb2]
        cont = (np.abs(ua1 - ua2).max(axis=1) <= self.tol) & (np.abs(ub1 - ub2).max(axis=1) <= self.tol)
        # transform from f2's chart into f1's chart; choose rotation or mirror so that the
        # unfolded third corner of f2 lies on the other side of the edge from f1's third corner
        third1 = corner_uv[f1, (j1 + 2) % 3]
        third2 = corner_uv[f2, 3 - ca2 - cb2]
        T_rot = _similarity(ua2, ub2, ua1, ub1, np.zeros(len(f1), bool))
        T_mir = _similarity(ua2, ub2, ua1, ub1, np.ones(len(f1), bool))
        e = ub1 - ua1

        def side(p):
            d = p - ua1
            return e[:, 0] * d[:, 1] - e[:, 1] * d[:, 0]

        s1 = side(third1)
        use_mirror = np.sign(side(_apply(T_rot, third2))) == np.sign(s1)
        use_mirror &= np.sign(side(_apply(T_mir, third2))) != np.sign(s1)
        T21 = np.where(use_mirror[:, None, None], T_mir, T_rot)
        T21[cont] = np.eye(3)
        T12 = _invert(T21)
        T12[cont] = np.eye(3)
        # directed adjacency: entry i means "from face src[i] into face dst[i], transform T[i] maps dst's chart into src's"
        self.e_src = np.r_[f1, f2]
        self.e_dst = np.r_[f2, f1]
        self.e_T = np.concatenate([T21, T12])  # maps e_dst's chart -> e_src's chart
        self.e_cont = np.r_[cont, cont]
        self.n_faces = m
        order = np.lexsort((self.e_dst, self.e_src))
        self.e_src, self.e_dst, self.e_T, self.e_cont = self.e_src[order], self.e_dst[order], self.e_T[order], self.e_cont[order]
        self.e_key = self.e_src * m + self.e_dst
        self.e_ptr = np.searchsorted(self.e_src, np.arange(m + 1))
        # up to 3 directed edges per face (manifold edges only), -1 padded
        self.nbr_edge = np.full((m, 3), -1, np.int64)
        slot = np.arange(len(self.e_src)) - self.e_ptr[self.e_src]
        self.nbr_edge[self.e_src[slot < 3], slot[slot < 3]] = np.nonzero(slot < 3)[0]
        # seam vertices: end points of discontinuous edges
        nv = int(faces.max()) + 1
        self.seam_vertex = np.zeros(nv, bool)
        self.seam_vertex[a[~cont]] = True
        self.seam_vertex[b[~cont]] = True
        # islands: components over continuous edges
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        adj = coo_matrix((np.ones(int(cont.sum())), (f1[cont], f2[cont])), shape=(m, m))
        _, self.islands = connected_components(adj, directed=False)
        self.islands = self.islands.astype(np.int64)

    def edge_transform(self, p: np.ndarray, q: np.ndarray):
        """For face pairs (p, q): found (k,) bool, T (k, 3, 3) mapping q's chart into p's (edge neighbours only)."""
        key = p * self.n_faces + q
        i = np.searchsorted(self.e_key, key)
        i = np.minimum(i, len(self.e_key) - 1) if len(self.e_key) else i
        found = (self.e_key[i] == key) if len(self.e_key) else np.zeros(len(p), bool)
        T = np.broadcast_to(np.eye(3), (len(p), 3, 3)).copy()
        if len(self.e_key):
            T[found] = self.e_T[i[found]]
        return found, T

    def path_transforms(self, P: np.ndarray, Q: np.ndarray, max_levels: int = 24):
        """Breadth-first search over edge-adjacent faces from every P[i] until Q[i] is reached,
        all searches at once (level by level, vectorised).

        Pairs more than ``max_levels`` triangles apart are left unresolved (the map
        tears there; no chart can hold such a target triangle without stretch).

        Returns found (k,) bool and T (k, 3, 3): the transform mapping Q[i]'s chart into
        P[i]'s chart along a fewest-hops path.
        """
        m = self.n_faces
        k = len(P)
        T_out = np.broadcast_to(np.eye(3), (k, 3, 3)).copy()
        found = np.zeros(k, bool)
        if k == 0:
            return found, T_out
        starts, sidx = np.unique(P, return_inverse=True)
        wanted = sidx.astype(np.int64) * m + Q
        fr_s = np.arange(len(starts), dtype=np.int64)
        fr_f = starts.astype(np.int64)
        fr_T = np.broadcast_to(np.eye(3), (len(starts), 3, 3)).copy()
        fr_keys = np.sort(fr_s * m + fr_f)
        prev_keys = np.zeros(0, np.int64)
        found |= P == Q
        for _ in range(max_levels):
            if found.all() or len(fr_s) == 0:
                break
            open_starts = np.zeros(len(starts), bool)
            open_starts[sidx[~found]] = True
            keep = open_starts[fr_s]
            fr_s, fr_f, fr_T = fr_s[keep], fr_f[keep], fr_T[keep]
            if len(fr_s) == 0:
                break
            cs = np.repeat(fr_s, 3)
            ce = self.nbr_edge[fr_f].ravel()
            ok = ce >= 0
            cs, ce = cs[ok], ce[ok]
            cf = self.e_dst[ce]
            src_T = np.repeat(np.arange(len(fr_f)), 3)[ok]
            keys = cs * m + cf
            keys_u, first = np.unique(keys, return_index=True)
            # in a breadth-first search of an undirected graph, a neighbour of the current level
            # lies in the previous, the current or the next level: only those need checking
            new = ~np.isin(keys_u, fr_keys, assume_unique=True) & ~np.isin(keys_u, prev_keys, assume_unique=True)
            first = first[new]
            keys_u = keys_u[new]
            cs, ce, cf, src_T = cs[first], ce[first], cf[first], src_T[first]
            cT = fr_T[src_T]
            seam = ~self.e_cont[ce]
            if seam.any():
                cT[seam] = cT[seam] @ self.e_T[ce[seam]]
            todo = np.nonzero(~found)[0]
            if len(keys_u):
                pos = np.minimum(np.searchsorted(keys_u, wanted[todo]), len(keys_u) - 1)
                hit = keys_u[pos] == wanted[todo]
                T_out[todo[hit]] = cT[pos[hit]]
                found[todo[hit]] = True
            prev_keys, fr_keys = fr_keys, keys_u
            fr_s, fr_f, fr_T = cs, cf, cT
        return found, T_out


def _pair_transforms(charts: _SourceCharts, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """(k, 3, 3) transforms mapping the chart of source face Q[i] into the chart of P[i].

    Same face, edge neighbours and faces sharing a vertex no seam touches are
    resolved at once; the rest by a breadth-first search over the source faces.
    """
    sf = charts.faces
    n = len(P)
    T = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    found, Te = charts.edge_transform(P, Q)
    T[found] = Te[found]
    resolved = (P == Q) | found
    for a in range(3):
        va = sf[P, a]
        clean = ~charts.seam_vertex[va]
        for b in range(3):
            resolved |= clean & (va == sf[Q, b])
    todo = np.nonzero(~resolved)[0]
    if len(todo):
        ok, Tp = charts.path_transforms(P[todo], Q[todo])
        T[todo[ok]] = Tp[ok]  # unreachable (another component): keep the own chart
    return T


def transfer_uvs(src_faces, src_corner_uv, tgt_faces, tgt_to_src_face, tgt_to_src_bary, src_vertices=None,
                 tgt_tri_to_poly=None) -> UVTransfer:
    """UVs of the source, carried onto the target's own triangles through the map.

    Parameters
    ----------
    src_faces : (ms, 3) int  source triangles
    src_corner_uv : (ms, 3, 2) float  UV of every source triangle corner
    tgt_faces : (mt, 3) int  target triangles
    tgt_to_src_face : (nt,) int, tgt_to_src_bary : (nt, 3) float
        the source point of every target vertex (``Correspondence.tgt_to_src_*``)
    src_vertices : optional (ns, 3) float
        Source positions. When given, a target triangle that straddles a seam
        is laid out in the chart of the source triangle under its centre
        (found by a closest-point query); without them, in the chart most of
        its corners agree on. Recommended.
    tgt_tri_to_poly : optional (mt,) int
        The target polygon every triangle comes from (``PreparedMesh.tri_to_poly``,
        Blender's loop triangles -> polygon). All triangles of one polygon are
        then laid out in the same chart, so their shared corners get the same
        UV (a polygon corner can hold only one).

    Returns
    -------
    UVTransfer
        ``corner_uv`` (mt, 3, 2) float32, ``seam_faces`` (k,) int64, ``src_islands`` (ms,) int64.

    A target triangle whose corners land on different sides of a source seam is
    laid out as a whole in one chart (it may reach a little past that island's
    border, never across the layout). Corners lying exactly on a seam edge or
    vertex belong to both sides and take the chosen side's UVs.
    """
    sf = check_faces(src_faces, "source")
    suv = check_corner_uv(src_corner_uv, len(sf), "source")
    face, bary = check_map(tgt_to_src_face, tgt_to_src_bary, len(sf), "target->source map")
    tf = check_faces(tgt_faces, "target", len(face))
    if src_vertices is not None:
        from .maps import check_vertices

        sv = check_vertices(src_vertices, "source")
        if len(sv) <= int(sf.max()):
            raise InputError(f"source: faces use vertex {int(sf.max())} but only {len(sv)} vertices were given")
    charts = _SourceCharts(sf, suv)
    mt = len(tf)
    rows = np.arange(mt)

    direct = np.einsum("nk,nkc->nc", bary, suv[face])  # (nt, 2) UV in the own source triangle's chart
    F = face[tf]  # (mt, 3) source face of every target corner
    B = bary[tf]  # (mt, 3, 3)
    support = B > 1e-9
    SV = sf[F]  # (mt, 3 corners, 3) source vertices of those faces
    # a corner is "flexible" when it lies on seam vertices only (on a seam edge or a seam vertex):
    # it belongs to the charts on both sides
    flexible = np.all(~support | charts.seam_vertex[SV], axis=2)

    # transforms of every corner's chart into corner 0's chart
    T0 = np.stack([_pair_transforms(charts, F[:, 0], F[:, k]) if k else np.broadcast_to(np.eye(3), (mt, 3, 3)).copy()
                   for k in range(3)], axis=1)
    ident0 = np.stack([_is_identity(T0[:, k], charts.tol) for k in range(3)], axis=1)
    ambiguous = ~ident0.all(axis=1) | flexible.any(axis=1)

    # reference source face of every target triangle (-1: one of its corners' faces, by vote)
    ref_face = np.full(mt, -1, np.int64)
    # (a) all corners lie on the closure of one source triangle: that triangle (exact, e.g. identity maps)
    common = common_face(sf, tf, face, bary)
    three = (common >= 0) & (F != F[:, :1]).any(axis=1)
    ref_face[three] = common[three]
    # (b) straddling triangles: the source triangle under the target triangle's centre
    todo = (ref_face < 0) & ambiguous
    if src_vertices is not None and todo.any():
        from ..geometry.closest import SurfaceQuery

        pts = np.einsum("nkj,nkjc->nc", B[todo], sv[SV[todo]]) / 3.0
        ref_face[todo] = SurfaceQuery(sv, sf).closest(pts)[0]
    # (c) otherwise the corner whose chart most non-flexible corners share
    ref_corner = np.zeros(mt, np.int64)
    todo = (ref_face < 0) & ambiguous
    if todo.any():
        idx = np.nonzero(todo)[0]
        votes = np.zeros((len(idx), 3))
        for r in range(3):
            for k in range(3):
                d = np.abs(T0[idx, k] - T0[idx, r])
                same = (d[:, :2, :2].max(axis=(1, 2)) < 1e-6) & (d[:, :2, 2].max(axis=1) < charts.tol)
                votes[:, r] += same * np.where(flexible[idx, k], 0.01, 1.0)
        votes -= 0.001 * flexible[idx]  # prefer a non-flexible corner's own face
        ref_corner[idx] = np.argmax(votes, axis=1)
    by_corner = ref_face < 0
    ref_face[by_corner] = F[rows[by_corner], ref_corner[by_corner]]
    if tgt_tri_to_poly is not None:
        poly = np.asarray(tgt_tri_to_poly)
        if poly.shape != (mt,) or poly.dtype.kind not in "iu":
            raise InputError(f"tgt_tri_to_poly: expected ({mt},) integers (one polygon index per target triangle), got {poly.shape} {poly.dtype}")
        _, first, inv = np.unique(poly, return_index=True, return_inverse=True)
        shared = ref_face[first[inv.reshape(-1)]]
        moved = shared != ref_face
        ref_face[moved] = shared[moved]
        by_corner &= ~moved

    uv = np.empty((mt, 3, 2))
    straddle = np.zeros((mt, 3), bool)
    RV = sf[ref_face]
    own = np.nonzero(~by_corner)[0]
    Tinv = _invert(T0[rows, ref_corner])
    for k in range(3):
        Tk = Tinv @ T0[:, k]
        if len(own):
            Tk[own] = _pair_transforms(charts, ref_face[own], F[own, k])
        uv[:, k] = _apply(Tk, direct[tf[:, k]])
        straddle[:, k] = ~_is_identity(Tk, charts.tol) & ~flexible[:, k]
        # a corner on the closure of the reference triangle takes that triangle's own UVs (exact)
        in_ref = (SV[:, k, :, None] == RV[:, None, :])  # (mt, 3, 3)
        on_ref = np.all(in_ref.any(axis=2) | ~support[:, k], axis=1) & (F[:, k] != ref_face)
        if on_ref.any():
            w = np.einsum("nc,ncd->nd", B[on_ref, k], in_ref[on_ref].astype(np.float64))
            uv[on_ref, k] = np.einsum("nd,ndc->nc", w, suv[ref_face[on_ref]])
            straddle[on_ref, k] = False
    seam = np.nonzero(straddle.any(axis=1))[0].astype(np.int64)
    return UVTransfer(corner_uv=uv.astype(np.float32), seam_faces=seam, src_islands=charts.islands)


def transfer_uvs_to_source(tgt_faces, tgt_corner_uv, src_faces, src_to_tgt_face, src_to_tgt_bary, tgt_vertices=None,
                           src_tri_to_poly=None) -> UVTransfer:
    """The other direction: the target's UVs onto the source topology (the fitted source).

    Same algorithm as :func:`transfer_uvs` with the roles swapped; uses the
    ``src_to_tgt_*`` map. Returns UVs per source triangle corner (ms, 3, 2).
    """
    return transfer_uvs(tgt_faces, tgt_corner_uv, src_faces, src_to_tgt_face, src_to_tgt_bary, src_vertices=tgt_vertices,
                        tgt_tri_to_poly=src_tri_to_poly)


def uv_stretch(faces_uv: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(m,) float64 ratio of each triangle's UV area to its 3-D area, divided by the median ratio.

    A convenient check: a triangle stretched across the layout has a ratio far above 1.
    """
    uv = np.asarray(faces_uv, np.float64)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    a_uv = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    a3 = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    r = a_uv / np.maximum(a3, 1e-300)
    med = np.median(r[r > 0]) if np.any(r > 0) else 1.0
    return r / med
