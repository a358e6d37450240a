"""Differentiable Poisson solve: per-face Jacobians -> vertex positions.

Solves ``min_x sum_f a_f || G_f x - J_f^T ||^2`` i.e. ``L x = G^T M J^T`` with
``L = G^T M G`` (the cotan Laplacian), factored once (cholespy, float64, on the
solver's device). ``L`` is singular (translation per connected component), so
a tiny multiple of the vertex mass is added: every component of the solution
then has its area-weighted centroid at the origin, and the caller places
components with explicit translations. Degenerate faces get a clamped area
and cannot make the system indefinite. The backward pass is the same solve.
"""
from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp
import torch

from .operators import face_areas_normals, gradient_operator, jacobians as _jacobians


class SparseFactor:
    """A Cholesky factor of an SPD sparse matrix, usable with torch tensors on ``device``."""

    def __init__(self, A: sp.spmatrix, device: torch.device) -> None:
        A = A.tocoo()
        self.n = A.shape[0]
        self.device = device
        self._chol = None
        self.backend = "cholespy"  # or "scipy-lu" (CPU) where cholespy is missing or fails
        self.fallback_reason: str | None = None
        # registrations raced in threads share one factor; CHOLMOD's workspace is not re-entrant
        self._lock = threading.Lock()
        try:
            from cholespy import CholeskySolverD, MatrixType

            if device.type == "cuda":
                ii = torch.as_tensor(A.row, dtype=torch.int32, device=device)
                jj = torch.as_tensor(A.col, dtype=torch.int32, device=device)
                xx = torch.as_tensor(A.data, dtype=torch.float64, device=device)
            else:
                ii = np.ascontiguousarray(A.row, dtype=np.int32)
                jj = np.ascontiguousarray(A.col, dtype=np.int32)
                xx = np.ascontiguousarray(A.data, dtype=np.float64)
            self._chol = CholeskySolverD(self.n, ii, jj, xx, MatrixType.COO)
        except Exception as exc:  # cholespy missing or failed: scipy's sparse LU on the CPU
            from scipy.sparse.linalg import splu

            self.backend = "scipy-lu"
            self.fallback_reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
            self._lu = splu(A.tocsc())

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """b : (n, k) float64 on the factor's device -> (n, k) float64 (thread-safe)."""
        with self._lock:
            return self._solve(b)

    def solve_array(self, b: np.ndarray) -> np.ndarray:
        """b : (n, k) float64 numpy -> (n, k) float64 numpy (a CPU factor)."""
        return self.solve(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))).cpu().numpy()

    def _solve(self, b: torch.Tensor) -> torch.Tensor:
        if self._chol is not None:
            if self.device.type == "cuda":
                bb = b.contiguous()
                x = torch.empty_like(bb)
                self._chol.solve(bb, x)
                return x
            bn = np.ascontiguousarray(b.detach().cpu().numpy())
            xn = np.empty_like(bn)
            self._chol.solve(bn, xn)
            return torch.from_numpy(xn).to(b.device)
        xn = self._lu.solve(np.ascontiguousarray(b.detach().cpu().numpy()))
        return torch.from_numpy(np.ascontiguousarray(xn)).to(b.device)


class _SolveFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, b: torch.Tensor, factor: SparseFactor) -> torch.Tensor:
        ctx.factor = factor
        return factor.solve(b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.factor.solve(grad.contiguous()), None


class _SparseMatmulFn(torch.autograd.Function):
    """``M @ x`` for a constant scipy CSR matrix and a dense CPU tensor (torch's sparse COO
    product is several times slower on the CPU); the backward is ``M^T @ grad``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, M: sp.csr_matrix, Mt: sp.csr_matrix) -> torch.Tensor:
        ctx.Mt = Mt
        return torch.from_numpy(np.asarray(M @ x.detach().numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.from_numpy(np.asarray(ctx.Mt @ grad.contiguous().numpy())), None, None


class PoissonSolver:
    """Factor once per mesh, then map per-face Jacobians to vertices many times.

    Parameters
    ----------
    vertices : (n, 3) float  the rest mesh (defines G, M and the source Jacobians)
    faces : (m, 3) int
    device : torch device of the solve
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, device: str | torch.device = "cpu",
                 regularization: float = 1e-9) -> None:
        self.device = torch.device(device)
        v = np.asarray(vertices, np.float64)
        f = np.asarray(faces, np.int64)
        self.n_vertices, self.n_faces = len(v), len(f)
        G = gradient_operator(v, f)
        area, _ = face_areas_normals(v, f)
        mass = np.repeat(area, 3)
        L = (G.T @ sp.diags(mass) @ G).tocsr()
        vmass = np.zeros(len(v))
        for k in range(3):
            np.add.at(vmass, f[:, k], area / 3.0)
        vmass = np.maximum(vmass, 1e-12 * vmass.max())
        scale = float(L.diagonal().mean()) / float(vmass.mean())
        L = L + sp.diags(regularization * scale * vmass)
        self._factor = SparseFactor(L, self.device)
        self.backend, self.fallback_reason = self._factor.backend, self._factor.fallback_reason
        # rhs operator G^T M as a torch sparse matrix (n, 3m)
        rhs = (G.T @ sp.diags(mass)).tocsr()
        if self.device.type == "cpu":
            self._rhs_csr, self._rhs_csr_t = rhs, rhs.T.tocsr()
        else:
            rhs = rhs.tocoo()
            idx = torch.as_tensor(np.vstack([rhs.row, rhs.col]), dtype=torch.long)
            self._rhs = torch.sparse_coo_tensor(idx, torch.as_tensor(rhs.data), rhs.shape, dtype=torch.float64,
                                                check_invariants=False).coalesce().to(self.device)
        self.source_jacobians = torch.as_tensor(_jacobians(v, f, G), dtype=torch.float64, device=self.device)
        from scipy.sparse.csgraph import connected_components

        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
        adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(v), len(v)))
        self.n_components, labels = connected_components(adj, directed=False)
        self.components = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        vm = torch.as_tensor(vmass, dtype=torch.float64, device=self.device)
        self._vmass = vm
        self._comp_mass = torch.zeros(self.n_components, dtype=torch.float64, device=self.device).index_add_(0, self.components, vm)
        self.rest_centroids = self.component_centroids(torch.as_tensor(v, device=self.device))

    def component_centroids(self, x: torch.Tensor) -> torch.Tensor:
        """(c, 3) area-weighted centroid of every connected component of vertex positions x (n, 3)."""
        s = torch.zeros(self.n_components, 3, dtype=x.dtype, device=x.device).index_add_(0, self.components, x * self._vmass[:, None].to(x.dtype))
        return s / self._comp_mass[:, None].to(x.dtype)

    def solve(self, jacobians: torch.Tensor, translations: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices (n, 3) float64 whose per-face Jacobians best match ``jacobians`` (m, 3, 3).

        Every component is centred at its rest centroid plus ``translations`` (c, 3) when given.
        Differentiable w.r.t. both arguments.
        """
        J = jacobians.to(torch.float64)
        Jt = J.transpose(1, 2).reshape(-1, 3)
        if self.device.type == "cpu":
            b = _SparseMatmulFn.apply(Jt, self._rhs_csr, self._rhs_csr_t)
        else:
            b = torch.sparse.mm(self._rhs, Jt)
        x = _SolveFn.apply(b, self._factor)
        x = x - self.component_centroids(x)[self.components]
        offset = self.rest_centroids if translations is None else self.rest_centroids + translations.to(torch.float64)
        return x + offset[self.components]


def poisson_solve(vertices: np.ndarray, faces: np.ndarray, jacobians: np.ndarray) -> np.ndarray:
    """One-shot: (n, 3) float64 vertices from (m, 3, 3) Jacobians (components keep their rest centroids)."""
    solver = PoissonSolver(vertices, faces)
    with torch.no_grad():
        return solver.solve(torch.as_tensor(np.asarray(jacobians, np.float64))).numpy()
