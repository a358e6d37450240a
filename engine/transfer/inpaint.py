"""Harmonic inpainting: fill unknown per-vertex values smoothly from the known ones.

Solves the Laplace equation ``L x = 0`` on the unknown vertices with the known
vertices as Dirichlet boundary (cotan Laplacian from
:mod:`engine.geometry.operators`). Used to replace low-confidence transferred
values by a smooth continuation of their surroundings.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from ..errors import InputError
from ..geometry.operators import cotan_laplacian, vertex_mass
from .maps import check_faces, check_vertices


def harmonic_fill(vertices, faces, values, known, regularization: float = 1e-8) -> np.ndarray:
    """Replace the values of the unknown vertices by the harmonic extension of the known ones.

    Parameters
    ----------
    vertices : (n, 3) float
    faces : (m, 3) int
    values : (n, ...) float  per-vertex values (entries at unknown vertices are ignored)
    known : (n,) bool  True where ``values`` are kept as they are
    regularization : float
        A tiny mass term pulling unknown vertices towards the mean of the known
        values; it only matters for regions with no known vertex at all (a
        separate component), which then get that mean instead of a singular solve.

    Returns
    -------
    (n, ...) float64  known entries unchanged, unknown ones harmonic.
    """
    v = check_vertices(vertices, "inpaint mesh")
    f = check_faces(faces, "inpaint mesh", len(v))
    vals = np.asarray(values, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    if vals.shape[:1] != (len(v),):
        raise InputError(f"inpaint: values have {vals.shape[0] if vals.ndim else 0} rows but the mesh has {len(v)} vertices")
    if known.shape != (len(v),):
        raise InputError(f"inpaint: known mask must have shape ({len(v)},), got {known.shape}")
    if not known.any():
        raise InputError("inpaint: no vertex has a known value to fill from")
    out = vals.copy()
    unknown = ~known
    if not unknown.any():
        return out
    flat = out.reshape(len(v), -1)
    if not np.all(np.isfinite(flat[known])):
        raise InputError("inpaint: known values contain NaN or infinite entries")
    L = cotan_laplacian(v, f).tocsr()
    mass = vertex_mass(v, f)
    mass = np.maximum(mass, 1e-12 * max(mass.max(), 1e-300))
    u = np.nonzero(unknown)[0]
    k = np.nonzero(known)[0]
    Luu = L[u][:, u]
    Luk = L[u][:, k]
    eps = regularization * float(np.abs(L.diagonal()).mean()) / float(mass.mean())
    mean_known = flat[k].mean(axis=0)
    A = (Luu + sp.diags(eps * mass[u])).tocsc()
    rhs = -(Luk @ flat[k]) + (eps * mass[u])[:, None] * mean_known[None, :]
    sol = splu(A).solve(np.ascontiguousarray(rhs))
    flat[u] = sol
    return flat.reshape(vals.shape)
