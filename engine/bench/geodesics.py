"""All-pairs geodesic distances for evaluation (heat method), cached on disk.

The benchmark measures the error of a map as the geodesic distance on the
target between where a point was sent and where it should have gone. Every
target shape is used by many pairs and many methods, so its vertex-to-vertex
distance matrix is computed once (one heat-method solve per vertex, with a
prefactored potpourri3d solver), scaled by 1/sqrt(surface area) and stored as
float16 in ``<cache>/geodesic-<hash>.npy``, keyed by the mesh content.

>>> D = geodesic_matrix(vertices, triangles)        # (n, n) float16, memory-mapped
>>> D[i, j]   # distance from vertex i to vertex j / sqrt(area)
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path
from ..progress import Progress

# bump when the way distances are computed or stored changes
CACHE_VERSION = "heat-tcoef1-robust-f16-v1"
CACHE_ENV = "STABLEWRAP_CACHE"


def default_cache_dir() -> Path:
    """``$STABLEWRAP_CACHE/bench`` when set, else ``~/.cache/stablewrap/bench``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base) if base else Path.home() / ".cache" / "stablewrap"
    return root / "bench"


def mesh_key(vertices: np.ndarray, triangles: np.ndarray) -> str:
    """A content hash of a mesh (vertex coordinates and faces) plus the cache version."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(triangles, dtype=np.int64)
    h.update(np.asarray(v.shape, np.int64).tobytes())
    h.update(v.tobytes())
    h.update(np.asarray(f.shape, np.int64).tobytes())
    h.update(f.tobytes())
    return h.hexdigest()[:32]


def _check_mesh(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(triangles, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise InputError(f"geodesics: vertices must have shape (n, 3) with n > 0, got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise InputError(f"geodesics: triangles must have shape (m, 3) with m > 0, got {f.shape}")
    if f.min() < 0 or f.max() >= len(v):
        raise InputError("geodesics: triangle index out of range")
    if not np.all(np.isfinite(v)):
        raise InputError("geodesics: vertices contain NaN or infinite coordinates")
    return v, f


def surface_area(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Total area of a triangle mesh."""
    v, f = _check_mesh(vertices, triangles)
    cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return float(0.5 * np.linalg.norm(cr, axis=1).sum())


def heat_geodesic_rows(
    vertices: np.ndarray,
    triangles: np.ndarray,
    sources: np.ndarray | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Heat-method geodesic distances from ``sources`` to every vertex, divided by sqrt(area).

    Vertices that no triangle uses, and vertices in another connected
    component than the source, get ``inf``.

    Parameters
    ----------
    vertices : (n, 3) float
    triangles : (m, 3) int
    sources : (s,) int vertex indices; all vertices when None

    Returns
    -------
    distances : (s, n) float32, row i = distances from ``sources[i]``
    """
    import potpourri3d as pp3d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v, f = _check_mesh(vertices, triangles)
    n = len(v)
    src = np.arange(n) if sources is None else np.asarray(sources, dtype=np.int64).reshape(-1)
    if len(src) and (src.min() < 0 or src.max() >= n):
        raise InputError("geodesics: source vertex index out of range")
    area = surface_area(v, f)
    if not area > 0:
        raise InputError("geodesics: mesh has zero surface area")
    scale = 1.0 / np.sqrt(area)

    # solve on the referenced vertices only (the solver rejects isolated ones)
    used = np.unique(f)
    local = np.full(n, -1, np.int64)
    local[used] = np.arange(len(used))
    lf = local[f]
    adj = coo_matrix((np.ones(3 * len(lf)), (lf[:, [0, 1, 2]].ravel(), lf[:, [1, 2, 0]].ravel())), shape=(len(used), len(used)))
    _, comp = connected_components(adj, directed=False)
    solver = pp3d.MeshHeatMethodDistanceSolver(v[used], lf)

    out = np.full((len(src), n), np.inf, dtype=np.float32)
    for i, s in enumerate(src):
        ls = local[s]
        if ls < 0:
            out[i, s] = 0.0
            continue
        d = np.asarray(solver.compute_distance(int(ls)), dtype=np.float64)
        d = np.where(comp == comp[ls], d, np.inf)
        d[ls] = 0.0
        out[i, used] = d * scale
        if progress is not None and i % 256 == 0:
            progress.update(i / max(len(src), 1))
    if np.isnan(out).any():
        raise InputError("geodesics: the heat method produced NaN distances (degenerate mesh?)")
    return out


def geodesic_matrix(
    vertices: np.ndarray,
    triangles: np.ndarray,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """All-pairs geodesic distances / sqrt(area), cached on disk.

    Parameters
    ----------
    vertices : (n, 3) float
    triangles : (m, 3) int
    cache_dir : folder for the cache (default :func:`default_cache_dir`);
        ``False``-like empty string disables caching.

    Returns
    -------
    distances : (n, n) float16, read-only (memory-mapped when cached);
        ``distances[i, j]`` = distance from vertex i to vertex j
    """
    v, f = _check_mesh(vertices, triangles)
    if cache_dir == "":
        d = heat_geodesic_rows(v, f, progress=progress).astype(np.float16)
        d.setflags(write=False)
        return d
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"geodesic-{mesh_key(v, f)}.npy"
    if path.is_file():
        try:
            d = np.load(path, mmap_mode="r")
            if d.shape == (len(v), len(v)) and d.dtype == np.float16:
                return d
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute and replace it
    d = heat_geodesic_rows(v, f, progress=progress).astype(np.float16)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, d)
    except OSError:
        pass  # a read-only or full cache folder only costs speed
    d.setflags(write=False)
    return d
