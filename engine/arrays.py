"""Small array helpers shared by every stage (one implementation each)."""
from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x`` scaled to unit length along ``axis`` (rows by default); zero rows stay zero.

    x : (..., d) float; returns the same shape and float dtype (float64 stays float64)
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mesh without the vertices no face uses.

    vertices : (n, d); faces : (m, k) int. Returns vertices (n', d), faces (m, k) re-indexed and
    old_to_new (n,) int64 (-1 for a dropped vertex).
    """
    used = np.unique(faces)
    old_to_new = np.full(len(vertices), -1, np.int64)
    old_to_new[used] = np.arange(len(used))
    return vertices[used], old_to_new[faces], old_to_new
