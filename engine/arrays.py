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
