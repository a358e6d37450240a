"""In-between shapes from the source to its fitted shape, interpolated in Jacobian space.

A linear vertex blend ``(1 - t) X0 + t X1`` shortens limbs that rotate (a
bending arm passes through a shrunken chord). Here every triangle's
deformation gradient ``A_f`` (source -> fitted) is split by polar
decomposition into a rotation and a stretch, ``A_f = R0 R_f S_f`` (``R0`` the
best global rotation); the rotations are interpolated along their geodesic
(log map, i.e. slerp from the identity) and the stretch linearly, and the
vertex positions of every in-between are recovered with a Poisson solve
(:class:`engine.geometry.poisson.PoissonSolver`). Every connected component's
centroid moves linearly, and the ends are exact: t = 0 is the source and
t = 1 the fitted shape.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InputError
from .maps import check_faces, check_vertices

METHODS = ("jacobian", "linear")


def _frames(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(m, 3, 3) columns: two edges and the unit normal of every triangle."""
    p = v[f]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    n = np.cross(e1, e2)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    n = n / np.maximum(ln, 1e-300)
    return np.stack([e1, e2, n], axis=2)


def deformation_gradients(src_vertices: np.ndarray, faces: np.ndarray, deformed_vertices: np.ndarray) -> np.ndarray:
    """(m, 3, 3) float64 per-triangle linear maps taking the source triangle (edges and unit
    normal) onto the deformed one. Degenerate source triangles get the identity."""
    Fs = _frames(src_vertices, faces)
    Fd = _frames(deformed_vertices, faces)
    det = np.linalg.det(Fs)
    ok = np.abs(det) > 1e-300
    A = np.broadcast_to(np.eye(3), (len(faces), 3, 3)).copy()
    if ok.any():
        A[ok] = Fd[ok] @ np.linalg.inv(Fs[ok])
    return A


def polar(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polar decomposition A = R S of (m, 3, 3) matrices with R a proper rotation (det +1).

    For reflections (det A < 0) the smallest singular direction is flipped, so S
    then has one negative eigenvalue.
    """
    U, _, Vt = np.linalg.svd(A)
    d = np.sign(np.linalg.det(U @ Vt))
    d[d == 0] = 1.0
    D = np.ones((len(A), 3))
    D[:, 2] = d
    R = U @ (D[:, :, None] * Vt)
    S = np.swapaxes(R, 1, 2) @ A
    S = 0.5 * (S + np.swapaxes(S, 1, 2))
    return R, S


def _best_rotation(X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Kabsch: the rotation R minimising sum w |R (x - cx) - (y - cy)|^2."""
    cx = (w[:, None] * X).sum(0) / w.sum()
    cy = (w[:, None] * Y).sum(0) / w.sum()
    H = ((X - cx) * w[:, None]).T @ (Y - cy)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    return Vt.T @ np.diag([1.0, 1.0, d]) @ U.T


def _rot_power(R: np.ndarray, t: float) -> np.ndarray:
    """R^t along the geodesic from the identity, for (m, 3, 3) rotations."""
    if t == 0.0:
        return np.broadcast_to(np.eye(3), R.shape).copy()
    if t == 1.0:
        return R.copy()
    return Rotation.from_rotvec(Rotation.from_matrix(R).as_rotvec() * t).as_matrix()


def morph_sequence(src_vertices, src_faces, fitted_vertices, n: int = 5, method: str = "jacobian",
                   times=None, device: str = "cpu", progress=None) -> np.ndarray:
    """In-between shapes from the source (t = 0) to the fitted shape (t = 1).

    Parameters
    ----------
    src_vertices : (ns, 3) float  the source mesh
    src_faces : (ms, 3) int
    fitted_vertices : (ns, 3) float  the source topology on the target shape
        (``Correspondence.fitted_vertices``)
    n : int  number of shapes, at t = linspace(0, 1, n) (n >= 2), unless ``times`` is given
    method : "jacobian" (rotations and stretches interpolated per triangle, Poisson solve)
        or "linear" (vertex blend)
    times : optional (k,) floats  the t of every shape (any values; 0 and 1 are exact)
    device : torch device of the Poisson solve
    progress : optional :class:`engine.progress.Progress` (``update`` per shape)

    Returns
    -------
    (k, ns, 3) float32
    """
    if method not in METHODS:
        raise InputError(f"morph: method must be one of {', '.join(METHODS)}, got {method!r}")
    v0 = check_vertices(src_vertices, "source")
    v1 = check_vertices(fitted_vertices, "fitted shape")
    if v1.shape != v0.shape:
        raise InputError(f"morph: fitted shape has {len(v1)} vertices but the source has {len(v0)}")
    f = check_faces(src_faces, "source", len(v0))
    if times is None:
        try:
            n = int(n)
        except (TypeError, ValueError):
            raise InputError(f"morph: n must be an integer, got {n!r}") from None
        if n < 2:
            raise InputError(f"morph: n must be at least 2 (the source and the fitted shape), got {n}")
        ts = np.linspace(0.0, 1.0, n)
    else:
        ts = np.asarray(times, np.float64).reshape(-1)
        if len(ts) == 0 or not np.all(np.isfinite(ts)):
            raise InputError("morph: times must be a non-empty list of finite numbers")
    out = np.empty((len(ts), len(v0), 3), np.float32)
    if method == "linear":
        for i, t in enumerate(ts):
            out[i] = (1.0 - t) * v0 + t * v1
        return out

    import torch

    from ..geometry.poisson import PoissonSolver

    area = 0.5 * np.linalg.norm(np.cross(v0[f[:, 1]] - v0[f[:, 0]], v0[f[:, 2]] - v0[f[:, 0]]), axis=1)
    if not np.any(area > 0):
        raise InputError("morph: every source triangle has zero area")
    A = deformation_gradients(v0, f, v1)
    # global rotation first, so that large whole-body turns interpolate coherently
    used = np.zeros(len(v0), bool)
    used[f.ravel()] = True
    R0 = _best_rotation(v0[used], v1[used], np.ones(int(used.sum())))
    R_loc, S = polar(np.einsum("ji,mjk->mik", R0, A))
    R0_vec = Rotation.from_matrix(R0).as_rotvec()
    solver = PoissonSolver(v0, f, device=device)
    P = solver.source_jacobians  # tangent projectors of the source triangles
    with torch.no_grad():
        c1 = solver.component_centroids(torch.as_tensor(v1, device=solver.device))
        dc = c1 - solver.rest_centroids

        def solve(t: float) -> np.ndarray:
            Rg = Rotation.from_rotvec(R0_vec * t).as_matrix()
            At = Rg[None] @ _rot_power(R_loc, t) @ ((1.0 - t) * np.eye(3)[None] + t * S)
            J = torch.as_tensor(At, device=solver.device) @ P
            return solver.solve(J, translations=dc * t).cpu().numpy()

        x0 = solve(0.0)
        x1 = solve(1.0)
        err0, err1 = v0 - x0, v1 - x1
        for i, t in enumerate(ts):
            if t == 0.0:
                x = v0
            elif t == 1.0:
                x = v1
            else:
                x = solve(float(t)) + (1.0 - t) * err0 + t * err1
            x = np.where(used[:, None], x, (1.0 - t) * v0 + t * v1)  # loose vertices: linear
            out[i] = x
            if progress is not None:
                progress.update((i + 1) / len(ts))
    return out
