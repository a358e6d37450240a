"""The result of a match and its ``.npz`` file format (the CLI contract)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .fileio import atomic_path

NPZ_KEYS = (
    "src_to_tgt_face",
    "src_to_tgt_bary",
    "tgt_to_src_face",
    "tgt_to_src_bary",
    "fitted_vertices",
    "confidence",
    "meta",
)


@dataclass
class Correspondence:
    """A dense correspondence between a source and a target mesh.

    All indices refer to the caller's meshes: vertex indices in the caller's
    vertex order, face indices into the caller's faces triangulated in order
    (for triangle meshes: the caller's face indices).

    Attributes
    ----------
    src_to_tgt_face : (Vs,) int32   target triangle hit by every source vertex
    src_to_tgt_bary : (Vs, 3) float32  barycentric coordinates in that triangle
    tgt_to_src_face : (Vt,) int32   source triangle hit by every target vertex
    tgt_to_src_bary : (Vt, 3) float32
    fitted_vertices : (Vs, 3) float32  source topology on the target shape, target coordinates (on
        the target where it carries the source; the source's shape over holes and missing detail)
    confidence : (Vs,) float32 in [0, 1]  (at most 0.5 where no target surface carries the vertex)
    meta : dict   version, device, features, per-stage seconds, peak memory...
    """

    src_to_tgt_face: np.ndarray
    src_to_tgt_bary: np.ndarray
    tgt_to_src_face: np.ndarray
    tgt_to_src_bary: np.ndarray
    fitted_vertices: np.ndarray
    confidence: np.ndarray
    meta: dict = field(default_factory=dict)

    def arrays(self) -> dict:
        return {
            "src_to_tgt_face": np.asarray(self.src_to_tgt_face, np.int32),
            "src_to_tgt_bary": np.asarray(self.src_to_tgt_bary, np.float32),
            "tgt_to_src_face": np.asarray(self.tgt_to_src_face, np.int32),
            "tgt_to_src_bary": np.asarray(self.tgt_to_src_bary, np.float32),
            "fitted_vertices": np.asarray(self.fitted_vertices, np.float32),
            "confidence": np.asarray(self.confidence, np.float32),
            "meta": np.asarray(json.dumps(self.meta, default=_json_default)),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.npz`` atomically: a failed write leaves no partial file."""
        save_npz_atomic(path, self.arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Correspondence":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise InputError(f"{path}: correspondence file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in NPZ_KEYS if k not in z.files]
                if missing:
                    raise InputError(f"{os.path.basename(path)}: not a StableWrap match file (missing {', '.join(missing)})")
                data = {k: z[k] for k in NPZ_KEYS}
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{os.path.basename(path)}: cannot read match file ({exc.__class__.__name__})") from None
        meta = json.loads(str(data.pop("meta")))
        return cls(meta=meta, **data)

    def src_points_on_target(self, target_vertices: np.ndarray, target_triangles: np.ndarray) -> np.ndarray:
        """(Vs, 3) float64: the target point of every source vertex."""
        tri = np.asarray(target_triangles)[self.src_to_tgt_face]
        return np.einsum("nk,nkc->nc", self.src_to_tgt_bary.astype(np.float64), np.asarray(target_vertices, np.float64)[tri])


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def save_npz_atomic(path: str | os.PathLike, arrays: dict) -> None:
    """``np.savez`` to a temporary file in the same folder, then rename into place."""
    path_final = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path_final)) or "."
    if not os.path.isdir(folder):
        raise InputError(f"{path_final}: output folder does not exist")
    with atomic_path(path_final, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
