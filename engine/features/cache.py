"""Per-mesh feature cache: ``.npz`` files keyed by mesh content and settings.

The key is a SHA-256 of the vertex and face bytes, the colour (if any) and a
canonical JSON of every setting that changes the features (models, views,
resolutions...). Files are written atomically (temp file + ``os.replace``), so
an interrupted run never leaves a half-written entry; an unreadable entry is
treated as a miss and overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..fileio import atomic_path

CACHE_ENV = "STABLEWRAP_CACHE"
FORMAT_VERSION = 1


def default_cache_dir() -> str:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "stablewrap")
    return os.path.join(base, "features")


def mesh_key(vertices: np.ndarray, faces: np.ndarray, settings: dict, extra: bytes = b"") -> str:
    """Hex digest identifying (mesh content, colour bytes, settings)."""
    h = hashlib.sha256()
    h.update(f"v{FORMAT_VERSION}".encode())
    h.update(np.ascontiguousarray(vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    h.update(extra)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:40]


def compress_rows(x: np.ndarray, rank: int) -> dict[str, np.ndarray]:
    """Low-rank form of a feature matrix for storage: x ~ scores @ basis.T + mean.

    x : (n, C) float; returns {"scores": (n, r) float16, "basis": (C, r) float32, "mean": (C,) float32}
    with r = min(rank, C, n). Keeps the top principal directions (exact when r = C).
    """
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(0)
    xc = x - mean
    r = int(min(rank, x.shape[1], x.shape[0]))
    cov = (xc.T.astype(np.float64) @ xc) / max(1, len(x) - 1)
    evals, evecs = np.linalg.eigh(cov)
    basis = evecs[:, np.argsort(evals)[::-1][:r]].astype(np.float32)
    return {"scores": (xc @ basis).astype(np.float16), "basis": basis, "mean": mean}


def decompress_rows(parts: dict[str, np.ndarray]) -> np.ndarray:
    """Inverse of :func:`compress_rows`: (n, C) float32."""
    return parts["scores"].astype(np.float32) @ parts["basis"].T + parts["mean"][None]


class FeatureCache:
    """A folder of ``<key>.npz`` files holding dicts of arrays."""

    def __init__(self, directory: str | None = None):
        self.directory = os.fspath(directory) if directory else default_cache_dir()

    def path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.npz")

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        p = self.path(key)
        if not os.path.isfile(p):
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            return None  # corrupt or truncated: recompute

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> bool:
        """Store arrays; returns False (and leaves nothing behind) when the folder is not writable."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            with atomic_path(self.path(key), ".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            return True
        except OSError:
            return False
