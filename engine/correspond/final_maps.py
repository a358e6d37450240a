"""The final maps of a match: closest points both ways, the per-vertex confidence, and the
conversion of everything to the caller's vertex order, faces and coordinates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..mesh import Mesh, PreparedMesh

# the confidence falls off with the distance from the fitted source vertex to the target
# surface on this scale (a fraction of sqrt(area): 2 %, about 2.5 cm on a 1.8 m body)
CONFIDENCE_DISTANCE = 0.02


@dataclass
class Maps:
    """Closest-point maps on the clean meshes.

    f_st (ns,) int, b_st (ns, 3), p_st (ns, 3), d_st (ns,): target face, barycentrics, point and
    distance of every deformed source vertex; f_ts (nt,) int, b_ts (nt, 3): source face and
    barycentrics (on the deformed source) of every target vertex
    """

    f_st: np.ndarray
    b_st: np.ndarray
    p_st: np.ndarray
    d_st: np.ndarray
    f_ts: np.ndarray
    b_ts: np.ndarray
    fitted: np.ndarray
    support: np.ndarray


def project(deformed: np.ndarray, source_faces: np.ndarray, target_surface, target_vertices: np.ndarray, progress=None,
            fitted: bool = False, support: np.ndarray | None = None) -> Maps:
    """Closest points both ways between the deformed source (ns, 3) and the target.

    target_surface : engine.geometry.closest.SurfaceQuery of the target
    fitted : the deformed source is the final fitted source (kept as it is: its vertices off the
        target keep the source's shape), not a registration to be projected
    support : optional (ns,) float in [0, 1], from the surface fit
    """
    from ..geometry.closest import SurfaceQuery

    if not np.all(np.isfinite(deformed)):
        raise RuntimeError("registration produced non-finite vertices")
    f_st, b_st, p_st, d_st = target_surface.closest(deformed)
    if progress is not None:
        progress.update(0.5)
    f_ts, b_ts, _, _ = SurfaceQuery(deformed, source_faces).closest(target_vertices)
    ns = len(deformed)
    return Maps(f_st, b_st, p_st, d_st, f_ts, b_ts, deformed.copy() if fitted else p_st,
                np.ones(ns) if support is None else np.asarray(support, np.float64))


def confidence(deformed: np.ndarray, source_faces: np.ndarray, target: Mesh, maps: Maps,
               exclude: np.ndarray | None = None) -> np.ndarray:
    """(ns,) float in [0, 1]: how well the deformed source agrees with the target where it landed:
    near the surface (``CONFIDENCE_DISTANCE``) and facing the same way; at most half where no
    target surface carries the fitted vertex (support 0: a hole, or detail the target lacks, kept
    in the source's shape); halved on excluded vertices."""
    normals = Mesh(deformed, source_faces).vertex_normals
    agree = np.einsum("ij,ij->i", normals, target.face_normals[maps.f_st])
    conf = np.exp(-((maps.d_st / CONFIDENCE_DISTANCE) ** 2)) * np.clip(0.5 + 0.5 * agree, 0.0, 1.0)
    conf = conf * (0.5 + 0.5 * np.clip(maps.support, 0.0, 1.0))
    if exclude is not None:
        conf = np.where(exclude, 0.5 * conf, conf)
    return np.clip(conf, 0.0, 1.0)


def to_caller(src: PreparedMesh, tgt: PreparedMesh, maps: Maps, conf: np.ndarray) -> dict:
    """The maps in the caller's terms (the .npz contract of engine.correspondence):
    vertex order of the files, their triangles, and the target file's coordinates."""
    o2c_s, o2c_t = src.orig_to_clean, tgt.orig_to_clean
    out = {
        "src_to_tgt_face": tgt.face_to_orig[maps.f_st][o2c_s].astype(np.int32),
        "src_to_tgt_bary": np.clip(maps.b_st[o2c_s], 0.0, 1.0).astype(np.float32),
        "tgt_to_src_face": src.face_to_orig[maps.f_ts][o2c_t].astype(np.int32),
        "tgt_to_src_bary": np.clip(maps.b_ts[o2c_t], 0.0, 1.0).astype(np.float32),
        "fitted_vertices": tgt.normalization.invert(maps.fitted)[o2c_s].astype(np.float32),
        "confidence": conf[o2c_s].astype(np.float32),
    }
    for key, arr in out.items():
        if not np.all(np.isfinite(arr)):
            raise RuntimeError(f"non-finite values in the match result ({key})")
    return out
