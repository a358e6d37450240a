"""Mesh type, loading, validation, cleaning and normalisation.

Everything downstream works on a :class:`Mesh`: a clean triangle mesh (welded,
no degenerate / duplicate faces, no unreferenced vertices) in float64. A
:class:`PreparedMesh` remembers how that clean mesh relates to what the caller
gave (original vertex order, original polygons, original coordinates), so that
results can be returned in the caller's terms.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence, Union

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .arrays import triangle_cross, unique_rows
from .errors import InputError

from .mesh_files import SUPPORTED_EXTENSIONS, load_mesh_file  # noqa: F401 (re-exported)
MIN_FACES = 4

Faces = Union[np.ndarray, Sequence[Sequence[int]]]


class Mesh:
    """A clean triangle mesh with cached derived data.

    Parameters
    ----------
    vertices : (n, 3) float64
    faces : (m, 3) int64
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, name: str = "mesh") -> None:
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(faces, dtype=np.int64)
        self.name = name

    def __repr__(self) -> str:
        return f"Mesh({self.name!r}, {len(self.vertices)} vertices, {len(self.faces)} faces)"

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @cached_property
    def face_cross(self) -> np.ndarray:
        """(m, 3) float64: (v1 - v0) x (v2 - v0), twice the area along the normal."""
        return triangle_cross(self.vertices, self.faces)

    @cached_property
    def face_areas(self) -> np.ndarray:
        """(m,) float64."""
        return 0.5 * np.linalg.norm(self.face_cross, axis=1)

    @cached_property
    def face_normals(self) -> np.ndarray:
        """(m, 3) float64 unit normals (zero for zero-area faces)."""
        n = self.face_cross
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, length, out=np.zeros_like(n), where=length > 0)

    @cached_property
    def face_centroids(self) -> np.ndarray:
        """(m, 3) float64."""
        return self.vertices[self.faces].mean(axis=1)

    @cached_property
    def vertex_normals(self) -> np.ndarray:
        """(n, 3) float64 area-weighted unit normals."""
        n = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(n, self.faces[:, k], self.face_cross)
        length = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, length, out=np.zeros_like(n), where=length > 0)

    @cached_property
    def vertex_areas(self) -> np.ndarray:
        """(n,) float64 lumped (barycentric) vertex areas."""
        a = np.zeros(len(self.vertices))
        for k in range(3):
            np.add.at(a, self.faces[:, k], self.face_areas / 3.0)
        return a

    @cached_property
    def area(self) -> float:
        return float(self.face_areas.sum())

    @cached_property
    def bbox_diagonal(self) -> float:
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))

    @cached_property
    def _edge_incidence(self) -> sp.csr_matrix:
        """(n, n) upper-triangular: entry (i, j), i < j, counts the faces with the edge i-j. Built
        in one pass (a 2.6M-face mesh's 7.7M edge rows: 0.16 s against 0.32 s for sorting them
        as keys; its components 0.55 -> 0.1 s without the length-weighted adjacency)."""
        f = self.faces
        a = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        b = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        n = len(self.vertices)
        m = sp.coo_matrix((np.ones(len(a), np.int64), (np.minimum(a, b), np.maximum(a, b))), shape=(n, n)).tocsr()
        m.sum_duplicates()  # sorted column indices per row, one entry per edge
        return m

    @cached_property
    def _edge_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The unique undirected edges (e, 2) int64 sorted per row (and lexicographically), and
        how many faces use each (e,)."""
        m = self._edge_incidence
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
        return np.stack([rows, m.indices.astype(np.int64)], axis=1), np.asarray(m.data, np.int64)

    @cached_property
    def opposite_edge_counts(self) -> np.ndarray:
        """(m, 3) int64: per face and corner k, how many faces use the edge opposite corner k
        (1: a boundary edge)."""
        edges, counts = self._edge_table
        n = len(self.vertices)
        keys = edges[:, 0] * n + edges[:, 1]  # ascending: the table is in lexicographic order
        a, b = self.faces[:, [1, 2, 0]], self.faces[:, [2, 0, 1]]
        return counts[np.searchsorted(keys, np.minimum(a, b) * n + np.maximum(a, b))]

    @property
    def edges(self) -> np.ndarray:
        """(e, 2) int64 unique undirected edges, sorted per row."""
        return self._edge_table[0]

    @cached_property
    def adjacency(self) -> sp.csr_matrix:
        """(n, n) symmetric sparse vertex adjacency weighted by edge length."""
        e = self.edges
        w = np.linalg.norm(self.vertices[e[:, 0]] - self.vertices[e[:, 1]], axis=1)
        n = len(self.vertices)
        a = sp.coo_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
        return a.tocsr()

    @cached_property
    def components(self) -> np.ndarray:
        """(n,) int64 connected-component label of each vertex (0..c-1, largest first)."""
        _, labels = connected_components(self._edge_incidence, directed=False)
        counts = np.bincount(labels)
        order = np.argsort(-counts, kind="stable")
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        return remap[labels].astype(np.int64)

    @property
    def n_components(self) -> int:
        return int(self.components.max()) + 1 if len(self.vertices) else 0

    @property
    def non_manifold_edge_count(self) -> int:
        return int((self._edge_table[1] > 2).sum())


@dataclass
class Normalization:
    """x_normalised = (x - center) * scale."""

    center: np.ndarray
    scale: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.center) * self.scale

    def invert(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) / self.scale + self.center


@dataclass
class PreparedMesh:
    """A cleaned mesh plus everything needed to report results in the caller's terms.

    Attributes
    ----------
    mesh : Mesh
        Clean triangle mesh in normalised coordinates (unit surface area, centred).
    normalization : Normalization
        Maps caller coordinates to ``mesh`` coordinates.
    orig_vertices : (n0, 3) float64
        The caller's vertices, in the caller's order and coordinates.
    orig_triangles : (t0, 3) int64
        The caller's faces triangulated (fan), in caller vertex indices.
    tri_to_poly : (t0,) int64
        Which caller polygon each triangle of ``orig_triangles`` came from.
    orig_to_clean : (n0,) int64
        Clean vertex for every caller vertex (welded duplicates share one;
        unreferenced vertices get the nearest clean vertex).
    clean_to_orig : (n,) int64
        One caller vertex for every clean vertex.
    face_to_orig : (m,) int64
        Index into ``orig_triangles`` of every clean face.
    report : dict
        What cleaning did (counts of welded vertices, dropped faces, components...).
    """

    mesh: Mesh
    normalization: Normalization
    orig_vertices: np.ndarray
    orig_triangles: np.ndarray
    tri_to_poly: np.ndarray
    orig_to_clean: np.ndarray
    clean_to_orig: np.ndarray
    face_to_orig: np.ndarray
    report: dict = field(default_factory=dict)
    uv: np.ndarray | None = None  # (t0, 3, 2) float32 corner UVs of orig_triangles, when the file had them

    @property
    def name(self) -> str:
        return self.mesh.name


# --------------------------------------------------------------------------- loading


def triangulate(faces: Faces, n_vertices: int, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons.

    Returns
    -------
    triangles : (t, 3) int64
    tri_to_poly : (t,) int64 polygon index of every triangle
    """
    if isinstance(faces, np.ndarray) and faces.ndim == 2 and faces.dtype != object:
        f = faces
        if f.shape[0] == 0:
            return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
        if not np.issubdtype(f.dtype, np.integer):
            if not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
                raise InputError(f"{name}: face indices must be integers")
            f = f.astype(np.int64)
        if f.shape[1] < 3:
            raise InputError(f"{name}: faces need at least 3 vertices each (got shape {f.shape})")
        k = f.shape[1]
        tris = np.concatenate([np.stack([f[:, 0], f[:, i], f[:, i + 1]], axis=1) for i in range(1, k - 1)])
        poly = np.tile(np.arange(len(f)), k - 2)
        order = np.argsort(poly, kind="stable")
        tris, poly = tris[order], poly[order]
    else:
        tri_list, poly_list = [], []
        for pi, p in enumerate(faces):
            p = list(p)
            if len(p) < 3:
                raise InputError(f"{name}: face {pi} has {len(p)} vertices; faces need at least 3")
            for i in range(1, len(p) - 1):
                tri_list.append((p[0], p[i], p[i + 1]))
                poly_list.append(pi)
        tris = np.asarray(tri_list, dtype=np.int64).reshape(-1, 3)
        poly = np.asarray(poly_list, dtype=np.int64)
    tris = tris.astype(np.int64)
    if len(tris) and (tris.min() < 0 or tris.max() >= n_vertices):
        raise InputError(f"{name}: face index out of range (mesh has {n_vertices} vertices, faces use {tris.min()}..{tris.max()})")
    return tris, poly


def _weld(v: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ``tol`` (grid-quantised).

    Returns (unique_index_of_each (n,), representative (u,)), unique vertices numbered in
    order of first occurrence, so an already clean mesh keeps its vertex order.
    """
    if tol <= 0:
        q = v
    else:
        q = np.round(v / tol).astype(np.int64)
    _, first, inverse = unique_rows(q, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], first[order]


def check_vertices(vertices, name: str) -> np.ndarray:
    """Validate vertex positions (numeric, (n, 3), non-empty, finite); returns (n, 3) float64."""
    try:
        v = np.asarray(vertices, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: vertices are not a numeric array") from None
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"{name}: vertices must have shape (n, 3), got {v.shape}")
    if len(v) == 0:
        raise InputError(f"{name}: mesh is empty (no vertices)")
    if not np.all(np.isfinite(v)):
        bad = int((~np.isfinite(v)).any(axis=1).sum())
        raise InputError(f"{name}: {bad} vertices have NaN or infinite coordinates")
    return v


def prepare_mesh(vertices: np.ndarray, faces: Faces, name: str = "mesh", uv=None, check=None) -> PreparedMesh:
    """Validate, clean and normalise a mesh given as arrays.

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, k) int array (triangles, quads...) or a list of polygons
    name : str
        Used in error messages ("source", a file name...).
    uv : optional list of (k, 2) corner UVs per polygon (as returned by :func:`load_mesh_file`)
    check : optional callable run between the cleaning steps (each under a second at 300k
        vertices); it raises to stop the work (a cancel token's ``raise_if_cancelled``)

    Raises
    ------
    InputError
        Empty mesh, no faces, NaN / infinite coordinates, bad indices, a mesh
        whose faces all have zero area.
    """
    v = check_vertices(vertices, name)
    if faces is None or len(faces) == 0:
        raise InputError(f"{name}: mesh has no faces (a point cloud?); a surface mesh is needed")
    check = check or (lambda: None)
    tris, tri_to_poly = triangulate(faces, len(v), name)
    check()

    report: dict = {"input_vertices": int(len(v)), "input_faces": int(len(faces)), "input_triangles": int(len(tris))}
    diag = float(np.linalg.norm(v.max(0) - v.min(0)))
    if diag == 0 or not np.isfinite(diag):
        raise InputError(f"{name}: all vertices are at the same point")

    # weld duplicate vertices among the referenced ones
    used = np.unique(tris)
    weld_idx, rep = _weld(v[used], tol=1e-9 * diag)
    check()
    welded_of_used = weld_idx
    clean_id_of_orig = np.full(len(v), -1, np.int64)
    clean_id_of_orig[used] = welded_of_used
    report["welded_vertices"] = int(len(used) - len(rep))
    cverts = v[used[rep]]
    ctris = clean_id_of_orig[tris]

    # degenerate faces: repeated index or (near) zero area
    keep = (ctris[:, 0] != ctris[:, 1]) & (ctris[:, 1] != ctris[:, 2]) & (ctris[:, 0] != ctris[:, 2])
    cr = triangle_cross(cverts, ctris)
    area2 = np.linalg.norm(cr, axis=1)
    keep &= area2 > 1e-12 * diag * diag
    report["degenerate_faces_dropped"] = int((~keep).sum())
    tri_ids = np.nonzero(keep)[0]
    # duplicate faces (same vertex set)
    key = np.sort(ctris[tri_ids], axis=1)
    _, first = unique_rows(key, return_index=True)
    first.sort()
    check()
    report["duplicate_faces_dropped"] = int(len(tri_ids) - len(first))
    tri_ids = tri_ids[first]
    if len(tri_ids) < MIN_FACES:
        if len(tri_ids) == 0:
            raise InputError(f"{name}: every face is degenerate (zero area); nothing to match")
        raise InputError(f"{name}: mesh has only {len(tri_ids)} valid faces; at least {MIN_FACES} are needed to match a surface")
    ftris = ctris[tri_ids]

    # drop vertices no kept face references
    ref = np.unique(ftris)
    remap = np.full(len(cverts), -1, np.int64)
    remap[ref] = np.arange(len(ref))
    final_v = cverts[ref]
    final_f = remap[ftris]
    report["unreferenced_vertices_dropped"] = int(len(v) - len(ref) - report["welded_vertices"])

    # orig -> clean: referenced ones through weld+remap, others to nearest clean vertex
    orig_to_clean = np.full(len(v), -1, np.int64)
    has = clean_id_of_orig >= 0
    orig_to_clean[has] = remap[clean_id_of_orig[has]]
    missing = orig_to_clean < 0
    if missing.any():
        from scipy.spatial import cKDTree

        _, nn = cKDTree(final_v).query(v[missing])
        orig_to_clean[missing] = nn
    # one referenced caller vertex per clean vertex (the first one wins)
    clean_to_orig = np.full(len(final_v), -1, np.int64)
    ref_orig = np.nonzero(has)[0]
    clean_to_orig[orig_to_clean[ref_orig][::-1]] = ref_orig[::-1]
    check()

    # normalise: area-weighted centroid to the origin, unit surface area (the kept faces' cross
    # products from the degenerate test: the same corners, renumbered)
    face_area = 0.5 * np.linalg.norm(cr[tri_ids], axis=1)
    area = float(face_area.sum())
    center = (final_v[final_f].mean(axis=1) * face_area[:, None]).sum(0) / area
    norm = Normalization(center=center, scale=1.0 / np.sqrt(area))
    mesh = Mesh(norm.apply(final_v), final_f, name)
    report["components"] = mesh.n_components
    check()
    report["non_manifold_edges"] = mesh.non_manifold_edge_count

    corner_uv = None
    if uv is not None:
        # fan triangulation corner UVs, in the same order as triangulate()
        per_tri = []
        counts = np.bincount(tri_to_poly, minlength=len(uv))
        for pi, cuv in enumerate(uv):
            cuv = np.asarray(cuv, dtype=np.float64)
            for i in range(1, counts[pi] + 1):
                per_tri.append(np.stack([cuv[0], cuv[i], cuv[i + 1]]))
        corner_uv = np.asarray(per_tri, dtype=np.float32).reshape(-1, 3, 2)

    return PreparedMesh(
        mesh=mesh,
        normalization=norm,
        orig_vertices=v,
        orig_triangles=tris,
        tri_to_poly=tri_to_poly,
        orig_to_clean=orig_to_clean,
        clean_to_orig=clean_to_orig,
        face_to_orig=tri_ids,
        report=report,
        uv=corner_uv,
    )


def load_mesh(path: str | os.PathLike, name: str | None = None, check=None) -> PreparedMesh:
    """Read, validate, clean and normalise a mesh file (see :func:`prepare_mesh`; ``check`` as there)."""
    base = name or os.path.basename(os.fspath(path))
    v, f, uv = load_mesh_file(path)
    if check is not None:
        check()
    return prepare_mesh(v, f, base, uv=uv, check=check)


def as_prepared(mesh_like, name: str, check=None) -> PreparedMesh:
    """Accept a path, a ``(V, F)`` tuple, a :class:`Mesh`, a trimesh or a PreparedMesh (``check``: see
    :func:`prepare_mesh`)."""
    if isinstance(mesh_like, PreparedMesh):
        return mesh_like
    if isinstance(mesh_like, (str, os.PathLike)):
        return load_mesh(mesh_like, name=None, check=check)
    if isinstance(mesh_like, Mesh):
        return prepare_mesh(mesh_like.vertices, mesh_like.faces, name, check=check)
    if hasattr(mesh_like, "vertices") and hasattr(mesh_like, "faces"):
        return prepare_mesh(np.asarray(mesh_like.vertices), np.asarray(mesh_like.faces), name, check=check)
    if isinstance(mesh_like, (tuple, list)) and len(mesh_like) == 2:
        return prepare_mesh(mesh_like[0], mesh_like[1], name, check=check)
    raise InputError(f"{name}: expected a mesh file path, a (vertices, faces) tuple or an engine.Mesh, got {type(mesh_like).__name__}")
