"""Benchmark data sets: pairs, meshes and ground-truth correspondences.

The data live outside the repository (``../shared/data`` by default, see its
README.md). One folder per set holds ``<name>.off`` meshes, ``pairs.txt``
(one pair per line: two shape names separated by whitespace) and
``corres/<name>.vts`` ground truth: one 1-based vertex index per line, where
row k of ``A.vts`` and row k of ``B.vts`` are the same physical point.
``corres/<name>.sym.vts`` (FAUST, TOSCA) is the left-right mirrored version.

>>> pairs = load_pairs(default_data_dir(), "faust5k", limit=3)
>>> gt_a, gt_b = pairs[0].ground_truth()
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..mesh import load_mesh_file, triangulate

SETS = ("faust5k", "tosca_iso", "smal_r")
DATA_ENV = "STABLEWRAP_BENCH_DATA"


def repo_root() -> Path:
    """The repository root (the folder that holds the ``engine`` package)."""
    return Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    """``$STABLEWRAP_BENCH_DATA`` when set, else ``../shared/data`` next to the repository."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return (repo_root().parent / "shared" / "data").resolve()


def read_vts(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.vts`` ground-truth file.

    Returns
    -------
    indices : (k,) int64, 0-based vertex indices (the file is 1-based)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ground-truth file not found")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1, usecols=0)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path.name}: cannot read ground truth ({exc.__class__.__name__})") from None
    if values.size == 0:
        raise InputError(f"{path.name}: ground-truth file is empty")
    if not np.all(values == np.round(values)) or values.min() < 1:
        raise InputError(f"{path.name}: ground truth must be 1-based integer vertex indices")
    return values.astype(np.int64) - 1


@lru_cache(maxsize=64)
def _load_triangles_cached(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    v, faces, _ = load_mesh_file(path)
    tris, _ = triangulate(faces, len(v), os.path.basename(path))
    v.setflags(write=False)
    tris.setflags(write=False)
    return v, tris


def load_triangles(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The mesh of a file as stored, triangulated in face order (no cleaning).

    These are the vertex and face indices a :class:`engine.Correspondence`
    refers to when the file is passed to :func:`engine.match` by path.

    Returns
    -------
    vertices : (n, 3) float64 (read-only)
    triangles : (m, 3) int64 (read-only)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: mesh file not found")
    return _load_triangles_cached(os.path.abspath(path), os.stat(path).st_mtime_ns)


@dataclass(frozen=True)
class BenchPair:
    """One pair of a benchmark set: the matcher maps shape A onto shape B."""

    set_name: str
    index: int  # 0-based line of pairs.txt (among non-empty lines)
    name_a: str
    name_b: str
    root: Path  # the set's folder

    @property
    def label(self) -> str:
        return f"{self.name_a}->{self.name_b}"

    @property
    def path_a(self) -> Path:
        return self.root / f"{self.name_a}.off"

    @property
    def path_b(self) -> Path:
        return self.root / f"{self.name_b}.off"

    def vts_path(self, name: str, sym: bool = False) -> Path:
        return self.root / "corres" / f"{name}{'.sym' if sym else ''}.vts"

    def ground_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """``(gt_a, gt_b)``: (k,) int64 each; vertex ``gt_a[i]`` of A corresponds to ``gt_b[i]`` of B."""
        gt_a = read_vts(self.vts_path(self.name_a))
        gt_b = read_vts(self.vts_path(self.name_b))
        if len(gt_a) != len(gt_b):
            raise InputError(f"{self.set_name} {self.label}: ground-truth files have {len(gt_a)} and {len(gt_b)} rows; they must match")
        return gt_a, gt_b

    def symmetric_ground_truth(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(gt_a, sym_b)``: the left-right mirrored ground truth, or None when the set has none."""
        p = self.vts_path(self.name_b, sym=True)
        if not p.is_file():
            return None
        gt_a = read_vts(self.vts_path(self.name_a))
        sym_b = read_vts(p)
        if len(sym_b) != len(gt_a):
            return None
        return gt_a, sym_b


def set_dir(data_dir: str | os.PathLike, set_name: str) -> Path:
    """The folder of one set, checked to exist."""
    data = Path(data_dir)
    if not data.is_dir():
        raise InputError(f"{data}: benchmark data folder not found (pass --data DIR)")
    root = data / set_name
    if not root.is_dir():
        known = sorted(p.name for p in data.iterdir() if (p / "pairs.txt").is_file())
        raise InputError(f"unknown benchmark set {set_name!r} in {data}; available: {', '.join(known) or 'none'}")
    return root


# Development / validation split: settings are tuned on the first DEV_PAIRS pairs of a set and
# reported on the rest; sets named in ALL_VALIDATION were never used for tuning (all validation)
DEV_PAIRS = 30
ALL_VALIDATION = ("tosca_iso",)
SPLITS = ("all", "dev", "val")


def split_numbers(set_name: str, n_pairs: int, split: str) -> list[int] | None:
    """1-based pair numbers of ``split`` ("dev", "val") in a set of ``n_pairs``; None for "all"."""
    if split not in SPLITS:
        raise InputError(f"--split: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split == "all":
        return None
    n_dev = 0 if set_name in ALL_VALIDATION else min(DEV_PAIRS, n_pairs)
    numbers = list(range(1, n_dev + 1)) if split == "dev" else list(range(n_dev + 1, n_pairs + 1))
    if not numbers:
        raise InputError(f"--split {split}: {set_name} has no {split} pairs")
    return numbers


def load_pairs(
    data_dir: str | os.PathLike,
    set_name: str,
    limit: int | None = None,
    only: list[int] | None = None,
    split: str = "all",
) -> list[BenchPair]:
    """The first ``limit`` pairs (all when None) of a set, with their files checked.

    ``only``: 1-based pair numbers (lines of pairs.txt) to keep instead.
    ``split``: "dev" (the first ``DEV_PAIRS``), "val" (the rest) or "all"; ``limit`` and
    ``only`` then count within the split.

    Raises
    ------
    InputError
        Missing data folder, unknown set, no ``pairs.txt``, malformed lines,
        no pairs, or a mesh / ground-truth file named by a pair that is missing.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--pairs must be at least 1 (got {limit})")
    root = set_dir(data_dir, set_name)
    pairs_file = root / "pairs.txt"
    if not pairs_file.is_file():
        raise InputError(f"{pairs_file}: pairs file not found")
    pairs: list[BenchPair] = []
    with open(pairs_file, "r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split("#")[0].split()
            if not parts:
                continue
            if len(parts) != 2:
                raise InputError(f"{pairs_file}:{lineno}: expected two shape names, got {len(parts)} fields")
            pairs.append(BenchPair(set_name, len(pairs), parts[0], parts[1], root))
            if limit is not None and only is None and split == "all" and len(pairs) >= limit:
                break
    if not pairs:
        raise InputError(f"{pairs_file}: no pairs listed")
    numbers = split_numbers(set_name, len(pairs), split)
    if numbers is not None:
        pairs = [pairs[i - 1] for i in numbers]
        if only is None and limit is not None:
            pairs = pairs[:limit]
    if only is not None:
        bad = [i for i in only if not 1 <= i <= len(pairs)]
        if bad:
            within = "" if split == "all" else f" in its {split} split"
            raise InputError(f"--only: pair number {bad[0]} is out of range ({set_name} has pairs 1..{len(pairs)}{within})")
        pairs = [pairs[i - 1] for i in dict.fromkeys(only)]
    for p in pairs:
        for f in (p.path_a, p.path_b, p.vts_path(p.name_a), p.vts_path(p.name_b)):
            if not f.is_file():
                raise InputError(f"{set_name} pair {p.index + 1} ({p.label}): missing file {f}")
    return pairs
