"""Caller inputs of a match: landmark pairs and the exclusion list (arrays or files), checked and
turned into indices of the cleaned meshes.

File formats (``python -m engine match --help`` shows them too):
- landmarks: one pair per line ``source_vertex target_vertex`` (0-based, spaces or a comma,
  ``#`` comments), or a .npy (k, 2) int array;
- exclude: source vertex indices (whitespace / comma separated, ``#`` comments), or a .npy
  int array or (Vs,) bool mask.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import InputError
from .mesh import PreparedMesh


def parse_landmarks(landmarks, src: PreparedMesh, tgt: PreparedMesh) -> np.ndarray | None:
    """(k, 2) int in clean vertex indices from caller vertex-index pairs (array or file)."""
    if landmarks is None:
        return None
    if isinstance(landmarks, (str, os.PathLike)):
        landmarks = read_landmarks_file(os.fspath(landmarks))
    try:
        lm = np.asarray(landmarks, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("landmarks: expected (k, 2) integer pairs (source vertex, target vertex)") from None
    if lm.size == 0:
        return None
    if lm.ndim != 2 or lm.shape[1] != 2 or not np.all(np.isfinite(lm)) or not np.all(lm == np.round(lm)):
        raise InputError(f"landmarks: expected (k, 2) integer pairs (source vertex, target vertex), got shape {lm.shape}")
    lm = lm.astype(np.int64)
    ns, nt = len(src.orig_vertices), len(tgt.orig_vertices)
    bad = (lm[:, 0] < 0) | (lm[:, 0] >= ns) | (lm[:, 1] < 0) | (lm[:, 1] >= nt)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise InputError(f"landmarks: pair {i} ({lm[i, 0]}, {lm[i, 1]}) is out of range (source has {ns} vertices, target {nt})")
    return np.stack([src.orig_to_clean[lm[:, 0]], tgt.orig_to_clean[lm[:, 1]]], axis=1)


def read_landmarks_file(path: str) -> np.ndarray:
    """Landmarks file: one pair per line ``source_vertex target_vertex`` (0-based; commas or spaces; # comments),
    or a .npy (k, 2) int array."""
    if not os.path.exists(path):
        raise InputError(f"{path}: landmarks file not found")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        rows = []
        with open(path, "r", encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                line = line.split("#")[0].replace(",", " ").split()
                if not line:
                    continue
                if len(line) != 2:
                    raise InputError(f"{os.path.basename(path)}: line {ln}: expected two vertex indices")
                rows.append([int(line[0]), int(line[1])])
        return np.asarray(rows, np.int64).reshape(-1, 2)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read landmarks ({exc.__class__.__name__}: {exc})") from None


def read_exclude_file(path: str, what: str = "exclusion") -> np.ndarray:
    """Exclusion file: source vertex indices (0-based), whitespace/comma separated text, or a .npy int/bool array."""
    if not os.path.exists(path):
        raise InputError(f"{path}: {what} file not found")
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False)
        with open(path, "r", encoding="utf-8") as fh:
            text = " ".join(line.split("#")[0] for line in fh).replace(",", " ")
        return np.asarray([int(t) for t in text.split()], np.int64)
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read {what} list ({exc.__class__.__name__}: {exc})") from None


def parse_exclude(exclude, src: PreparedMesh) -> np.ndarray | None:
    """(n,) bool over the clean source vertices (True: no data term) from caller vertex indices
    or a (Vs,) bool mask; None when nothing is excluded."""
    vmask = parse_vertex_set(exclude, src, "exclude")
    if vmask is not None and vmask.all():
        raise InputError("exclude: the exclusion covers the whole source mesh; nothing would be matched")
    return vmask


def parse_vertex_set(value, src: PreparedMesh, what: str) -> np.ndarray | None:
    """(n,) bool over the clean source vertices from caller vertex indices, a (Vs,) bool mask or
    a file of either (read_exclude_file); None when it names no vertex. ``what`` names the
    parameter in the errors ("exclude", "skin")."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = read_exclude_file(os.fspath(value), "exclusion" if what == "exclude" else what)
    ex = np.asarray(value)
    ns = len(src.orig_vertices)
    if ex.dtype == bool:
        if ex.shape != (ns,):
            raise InputError(f"{what}: boolean mask must have one entry per source vertex ({ns}), got {ex.shape}")
        idx = np.nonzero(ex)[0]
    else:
        if ex.size and (not np.issubdtype(ex.dtype, np.integer) or ex.ndim != 1):
            raise InputError(f"{what}: expected source vertex indices (1-d int array) or a boolean vertex mask")
        idx = ex.astype(np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= ns):
            raise InputError(f"{what}: vertex index out of range (source has {ns} vertices)")
    if idx.size == 0:
        return None
    vmask = np.zeros(src.mesh.n_vertices, bool)
    vmask[src.orig_to_clean[idx]] = True
    return vmask
