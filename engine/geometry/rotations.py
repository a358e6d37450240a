"""Best rotations of many 3x3 cross-covariances at once: the local steps of the registration's
shear term and of the surface fit, and the flip test of a fitted mesh.

For C = sum r x^T (rest r, current x) the rotation R maximising tr(R C) is the polar factor of
C^T. It is found by determinant-scaled Newton iterations on the nine entries held as flat
arrays (one row per entry, a column per matrix: several times faster than a batched SVD, and no
(k, 3, 3) transposes on the way in or out). Where that factor is a reflection (det C < 0: a
tangled or a flat neighbourhood, whose smallest singular value is noise) the best rotation flips
the direction u of the smallest singular value, R = Q (I - 2 u u^T), u the smallest eigenvector
of the symmetric Q^T C^T (closed form, on flat arrays too); near singular matrices take the SVD
with the reflection removed (the reference, see the tests).
"""
from __future__ import annotations

import numpy as np

# matrices per block of the Newton iterations: the ~30 flat temporaries of 8192 entries stay in
# the CPU's cache (80k matrices: 50 -> 32 ms; at 5k one block)
_POLAR_BLOCK = 8192
# |det| of a matrix scaled to a largest entry of 1 below which Newton's determinant scaling is
# unreliable: those take the SVD (rare: a neighbourhood collapsed onto a line or a point)
_SINGULAR_DET = 1e-9
# the rows of C^T among C's row-major entries
TRANSPOSED_ENTRIES = [0, 3, 6, 1, 4, 7, 2, 5, 8]


def best_rotations_flat(C9: np.ndarray, iterations: int = 7) -> np.ndarray:
    """(9, k) float64: the row-major entries of the rotations R maximising tr(R C), for the
    cross-covariances C given as their row-major entries ``C9`` (9, k) (row 3 i + j holds
    C[i, j] of every matrix)."""
    C9 = np.asarray(C9, np.float64)
    k = C9.shape[1]
    if k <= _POLAR_BLOCK:
        return _block(C9, iterations)
    out = np.empty((9, k))
    for s in range(0, k, _POLAR_BLOCK):  # each matrix on its own: blocks give the same rotations bit for bit
        out[:, s: s + _POLAR_BLOCK] = _block(C9[:, s: s + _POLAR_BLOCK], iterations)
    return out


def rotations_from_covariances(C: np.ndarray, iterations: int = 7) -> np.ndarray:
    """(k, 3, 3) rotations R maximising tr(R C) for cross-covariances C = sum r x^T (k, 3, 3)
    (:func:`best_rotations_flat` on their entries)."""
    C = np.asarray(C, np.float64)
    k = len(C)
    return best_rotations_flat(C.reshape(k, 9).T, iterations).T.reshape(k, 3, 3)


def _block(C9: np.ndarray, iterations: int) -> np.ndarray:
    k = C9.shape[1]
    M = C9[TRANSPOSED_ENTRIES]  # (9, k) rows of C^T (a copy)
    if k == 0:
        return M
    M /= np.maximum(np.abs(M).max(axis=0), 1e-300)
    a, b, c, d, e, f, g, h, i = M
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    ok = np.abs(det) > _SINGULAR_DET
    every = bool(ok.all())
    Mo = M if every else M[:, ok]
    Q = _newton_polar(Mo, iterations)
    refl = (det if every else det[ok]) < 0
    if refl.any():
        Q[:, refl] = _unreflect(Q[:, refl], Mo[:, refl])
    if every:
        return Q
    out = np.empty((9, k))
    out[:, ok] = Q
    out[:, ~ok] = _rotations_svd(np.ascontiguousarray(C9[:, ~ok].T).reshape(-1, 3, 3)).reshape(-1, 9).T
    return out


def _newton_polar(M: np.ndarray, iterations: int) -> np.ndarray:
    """(9, k) polar factors of the matrices whose row-major entries are the rows of ``M`` (9, k)
    (determinant-scaled Newton iterations)."""
    a, b, c, d, e, f, g, h, i = M
    for _ in range(iterations):
        # cofactors (det * inverse-transpose)
        A, B, Cc = e * i - f * h, f * g - d * i, d * h - e * g
        D, E, F = c * h - b * i, a * i - c * g, b * g - a * h
        G, H, I = b * f - c * e, c * d - a * f, a * e - b * d
        det_ = a * A + b * B + c * Cc
        s = np.abs(det_) ** (-1.0 / 3.0)  # determinant scaling: fast convergence from the start
        # X <- (s X + cof(X) / (s det)) / 2, the halving folded into both factors (exact: a power of two)
        s, t = 0.5 * s, 0.5 / (s * det_)
        a, b, c = s * a + t * A, s * b + t * B, s * c + t * Cc
        d, e, f = s * d + t * D, s * e + t * E, s * f + t * F
        g, h, i = s * g + t * G, s * h + t * H, s * i + t * I
    return np.stack([a, b, c, d, e, f, g, h, i])


def _unreflect(Q: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(9, r): the reflections Q (polar factors of M, both (9, r) row-major entries) turned into
    the best rotations, Q (I - 2 u u^T) with u the smallest eigenvector of the symmetric Q^T M."""
    q = Q.reshape(3, 3, -1)
    m = M.reshape(3, 3, -1)
    H = np.einsum("rik,rjk->ijk", q, m)  # (3, 3, r) Q^T M
    H = 0.5 * (H + H.transpose(1, 0, 2))
    u = _smallest_eigenvectors(H)  # (3, r)
    Qu = np.einsum("rck,ck->rk", q, u)
    return (q - 2.0 * Qu[:, None, :] * u[None, :, :]).reshape(9, -1)


def _smallest_eigenvectors(H: np.ndarray) -> np.ndarray:
    """(3, r) unit eigenvectors of the smallest eigenvalue of the symmetric matrices ``H`` (3, 3, r):
    the eigenvalue in closed form (the trigonometric solution of the characteristic cubic), the
    vector as the largest cross product of two rows of H - lambda I."""
    h00, h11, h22 = H[0, 0], H[1, 1], H[2, 2]
    h01, h02, h12 = H[0, 1], H[0, 2], H[1, 2]
    q = (h00 + h11 + h22) / 3.0
    d0, d1, d2 = h00 - q, h11 - q, h22 - q
    p = np.sqrt(np.maximum((d0 * d0 + d1 * d1 + d2 * d2 + 2.0 * (h01 * h01 + h02 * h02 + h12 * h12)) / 6.0, 1e-300))
    det = d0 * (d1 * d2 - h12 * h12) - h01 * (h01 * d2 - h12 * h02) + h02 * (h01 * h12 - d1 * h02)
    r = np.clip(det / (2.0 * p ** 3), -1.0, 1.0)
    lam = q + 2.0 * p * np.cos(np.arccos(r) / 3.0 + 2.0 * np.pi / 3.0)  # the smallest root
    rows = np.stack([np.stack([h00 - lam, h01, h02]), np.stack([h01, h11 - lam, h12]),
                     np.stack([h02, h12, h22 - lam])])  # (3 rows, 3, r)
    cands = np.stack([np.cross(rows[0], rows[1], axis=0), np.cross(rows[0], rows[2], axis=0),
                      np.cross(rows[1], rows[2], axis=0)])  # (3 candidates, 3, r)
    norms = np.sqrt((cands * cands).sum(axis=1))  # (3, r)
    best = np.argmax(norms, axis=0)
    cols = np.arange(H.shape[2])
    v = cands[best, :, cols].T  # (3, r)
    n = norms[best, cols]
    return np.where(n > 1e-300, v / np.maximum(n, 1e-300), np.array([[0.0], [0.0], [1.0]]))


def _rotations_svd(C: np.ndarray) -> np.ndarray:
    """(k, 3, 3) the reference: R = V diag(1, 1, d) U^T from the SVD of C (k, 3, 3), no reflections."""
    U, _, Vt = np.linalg.svd(C)
    d = np.sign(np.linalg.det(np.einsum("kij,kjl->kil", U, Vt)))
    d[d == 0] = 1.0
    Vt = Vt.copy()
    Vt[:, 2] *= d[:, None]  # no reflections
    return np.einsum("kji,klj->kil", Vt, U)  # V diag(1,1,d) U^T
