"""Surface maps given as (face, barycentric) per point: validation, evaluation, composition.

A map from mesh A to mesh B assigns every vertex of A a point on B, stored as
``face`` (n,) int (a triangle of B) and ``bary`` (n, 3) float (weights of that
triangle's corners). This is what ``engine.match`` returns in both directions
(``src_to_tgt_*`` and ``tgt_to_src_*``). Everything here is numpy in, numpy out.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..mesh import check_vertices  # noqa: F401  (re-exported for the transfer modules)


def check_faces(faces, name: str, n_vertices: int | None = None) -> np.ndarray:
    """Validate a triangle array; returns (m, 3) int64.

    Raises :class:`InputError` (one line) for a wrong shape, non-integers or
    indices outside ``0..n_vertices-1``.
    """
    try:
        f = np.asarray(faces)
    except Exception:
        raise InputError(f"{name}: faces are not an array") from None
    if f.ndim != 2 or f.shape[1] != 3:
        raise InputError(f"{name}: faces must have shape (m, 3) (triangles), got {f.shape}")
    if len(f) == 0:
        raise InputError(f"{name}: mesh has no faces")
    if not np.issubdtype(f.dtype, np.integer):
        if not np.issubdtype(f.dtype, np.floating) or not np.all(f == np.round(f)):
            raise InputError(f"{name}: face indices must be integers")
    f = f.astype(np.int64)
    if f.min() < 0:
        raise InputError(f"{name}: negative face index {int(f.min())}")
    if n_vertices is not None and f.max() >= n_vertices:
        raise InputError(f"{name}: face index {int(f.max())} out of range (mesh has {n_vertices} vertices)")
    return f


def check_map(face, bary, n_faces: int, name: str = "map", n_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (face, bary) map into a mesh with ``n_faces`` triangles.

    Returns
    -------
    face : (n,) int64
    bary : (n, 3) float64, clipped to >= 0 and renormalised to sum 1

    Raises
    ------
    InputError
        Shapes that disagree, face indices out of range, NaN or all-zero
        barycentric rows, or a point count other than ``n_points``.
    """
    f = np.asarray(face)
    b = np.asarray(bary)
    if f.ndim != 1:
        raise InputError(f"{name}: face indices must be a 1-D array, got shape {f.shape}")
    if b.ndim != 2 or b.shape[1] != 3 or len(b) != len(f):
        raise InputError(f"{name}: barycentric coordinates must have shape ({len(f)}, 3), got {b.shape}")
    if n_points is not None and len(f) != n_points:
        raise InputError(f"{name}: has {len(f)} entries but the mesh it starts from has {n_points} vertices")
    if not np.issubdtype(f.dtype, np.integer):
        raise InputError(f"{name}: face indices must be integers, got {f.dtype}")
    f = f.astype(np.int64)
    if len(f) and (f.min() < 0 or f.max() >= n_faces):
        bad = int(f.min()) if f.min() < 0 else int(f.max())
        raise InputError(f"{name}: face index {bad} out of range (the mesh it maps into has {n_faces} triangles)")
    b = b.astype(np.float64)
    if not np.all(np.isfinite(b)):
        raise InputError(f"{name}: {int((~np.isfinite(b)).any(axis=1).sum())} barycentric rows are NaN or infinite")
    b = np.clip(b, 0.0, None)
    s = b.sum(axis=1, keepdims=True)
    if np.any(s <= 0):
        raise InputError(f"{name}: {int((s <= 0).sum())} barycentric rows are all zero")
    return f, b / s


def interpolate(values: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex ``values`` (n, ...) at mapped points -> (p, ...) float64."""
    vals = np.asarray(values)
    tri = faces[face]  # (p, 3)
    out = bary[:, 0].reshape((-1,) + (1,) * (vals.ndim - 1)) * vals[tri[:, 0]]
    for k in (1, 2):
        out = out + bary[:, k].reshape((-1,) + (1,) * (vals.ndim - 1)) * vals[tri[:, k]]
    return out


def map_points(vertices: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(p, 3) float64: 3-D positions of mapped points on the mesh (vertices, faces)."""
    return interpolate(np.asarray(vertices, np.float64), faces, face, bary)


def nearest_corner(faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(p,) int64: the vertex of each hit triangle with the largest barycentric weight."""
    return faces[face, np.argmax(bary, axis=1)]


def barycentric_in_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of ``points`` projected onto the planes of triangles (a, b, c).

    All (p, d) with d = 2 or 3; coordinates may be negative (outside the
    triangle) and always sum to one. Degenerate triangles give (1/3, 1/3, 1/3).
    """
    v0, v1, v2 = b - a, c - a, points - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    ok = np.abs(den) > 1e-30 * np.maximum(d00 * d11, 1e-300)
    safe = np.where(ok, den, 1.0)
    w1 = np.where(ok, (d11 * d20 - d01 * d21) / safe, 1.0 / 3.0)
    w2 = np.where(ok, (d00 * d21 - d01 * d20) / safe, 1.0 / 3.0)
    return np.stack([1.0 - w1 - w2, w1, w2], axis=1)


def compose(face_ab, bary_ab, faces_b, face_bc, bary_bc, vertices_c, faces_c, query=None):
    """Compose A -> B with B -> C (given at B's vertices) into A -> C.

    Each A point lies in a B triangle; its corners' images on C are blended
    with the A point's barycentric weights and snapped back onto C with a
    closest-point query.

    Parameters
    ----------
    face_ab : (p,) int, bary_ab : (p, 3) float  the A -> B map
    faces_b : (mb, 3) int
    face_bc : (nb,) int, bary_bc : (nb, 3) float  the B -> C map at B's vertices
    vertices_c : (nc, 3) float, faces_c : (mc, 3) int
    query : optional ``engine.geometry.closest.SurfaceQuery`` built on C (reused when given)

    Returns
    -------
    face : (p,) int64, bary : (p, 3) float64  the A -> C map
    """
    from ..geometry.closest import SurfaceQuery

    faces_b = np.asarray(faces_b, np.int64)
    faces_c = np.asarray(faces_c, np.int64)
    face_bc, bary_bc = check_map(face_bc, bary_bc, len(faces_c), "B->C map")
    face_ab, bary_ab = check_map(face_ab, bary_ab, len(faces_b), "A->B map")
    pts_c = map_points(vertices_c, faces_c, face_bc, bary_bc)  # B vertex images on C
    blended = interpolate(pts_c, faces_b, face_ab, bary_ab)
    q = query if query is not None else SurfaceQuery(vertices_c, faces_c)
    face, bary, _, _ = q.closest(blended)
    return face, bary


def points_to_map(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, query=None) -> tuple[np.ndarray, np.ndarray]:
    """Closest-point map of ``points`` (p, 3) onto a mesh: face (p,) int64, bary (p, 3) float64."""
    from ..geometry.closest import SurfaceQuery

    q = query if query is not None else SurfaceQuery(vertices, faces)
    face, bary, _, _ = q.closest(np.asarray(points, np.float64))
    return face, bary


def face_lookup(faces: np.ndarray):
    """A function mapping (k, 3) vertex triples (any order) to the index of the face with
    exactly those vertices, or -1."""
    faces = np.asarray(faces, np.int64)
    nv = int(faces.max()) + 1

    def key_of(tri):
        return (np.sort(tri, axis=1) * np.array([nv * nv, nv, 1], dtype=np.int64)).sum(axis=1)

    keys = key_of(faces)
    order = np.argsort(keys)
    sk = keys[order]

    def lookup(tri: np.ndarray) -> np.ndarray:
        tri = np.asarray(tri, np.int64)
        if len(tri) == 0:
            return np.zeros(0, np.int64)
        k = key_of(np.clip(tri, 0, nv - 1))
        i = np.minimum(np.searchsorted(sk, k), len(sk) - 1)
        return np.where((sk[i] == k) & (tri.min(axis=1) >= 0), order[i], -1)

    return lookup


def common_face(src_faces: np.ndarray, tgt_faces: np.ndarray, face: np.ndarray, bary: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """(mt,) int64: for every target triangle, the source triangle whose closure holds the mapped
    points of all three corners (they lie on its vertices / edges / inside), or -1.

    When the corners map into different source triangles but on shared vertices or
    edges (an identity map, a map onto a subdivision), this names the one source
    triangle the target triangle covers.
    """
    F = face[tgt_faces]  # (mt, 3)
    SV = src_faces[F]  # (mt, 3, 3)
    support = bary[tgt_faces] > eps
    ids = np.sort(np.where(support, SV, -1).reshape(len(F), 9), axis=1)
    distinct = np.concatenate([ids[:, :1], np.where(ids[:, 1:] != ids[:, :-1], ids[:, 1:], -1)], axis=1)
    out = np.where((F == F[:, :1]).all(axis=1), F[:, 0], -1)
    three = ((distinct >= 0).sum(axis=1) == 3) & (out < 0)
    if three.any():
        tri = -np.sort(-distinct[three], axis=1)[:, :3]
        out[three] = face_lookup(src_faces)(tri)
    return out
