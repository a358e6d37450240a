"""A source in pieces: its skin matched alone, the riding pieces carried by it.

``SkinSource`` cuts the skin (engine.geometry.pieces) out of a prepared source as a prepared
mesh of its own, whose match the pipeline runs; ``extend`` turns that match into the whole
source's, in the caller's terms: the skin's vertices as matched, every riding piece carried by
the fitted skin (engine.geometry.ride_along, never projected onto the target) with the map and
a confidence of at most 0.5 from the skin vertex nearest it at rest.
"""
from __future__ import annotations

import numpy as np

from ..correspondence import Correspondence
from ..errors import InputError
from ..geometry.pieces import Pieces
from ..geometry.ride_along import RideAlong
from ..mesh import PreparedMesh, prepare_mesh

# a riding vertex is carried, not matched: its confidence is at most this (the contract's cap for
# vertices no target surface carries)
RIDER_CONFIDENCE = 0.5


class SkinSource:
    """The skin of a prepared source (``pieces``: its pieces, on the clean mesh) as a prepared mesh.

    prepared : PreparedMesh of the skin alone (caller vertices ``vertex_index``, triangles ``triangle_index``)
    vertex_index : (n_skin0,) int64 the skin's caller vertices; triangle_index : (t_skin0,) int64
        their triangles in the caller's triangulated faces
    """

    def __init__(self, src: PreparedMesh, pieces: Pieces, check=None) -> None:
        self.src, self.pieces = src, pieces
        on_skin = pieces.skin[src.orig_to_clean]
        self.vertex_index = np.nonzero(on_skin)[0]
        self.triangle_index = np.nonzero(on_skin[src.orig_triangles].all(axis=1))[0]
        self.remap = np.full(len(src.orig_vertices), -1, np.int64)
        self.remap[self.vertex_index] = np.arange(len(self.vertex_index))
        uv = None if src.uv is None else list(src.uv[self.triangle_index])
        self.prepared = prepare_mesh(src.orig_vertices[self.vertex_index], self.remap[src.orig_triangles[self.triangle_index]],
                                     src.name, uv=uv, check=check)
        self.ride = RideAlong(src.mesh, pieces)

    def landmarks(self, landmarks):
        """The caller's landmark pairs (k, 2) (read from their file already) with the source side
        in the skin's vertex indices; a landmark on a riding piece is an InputError."""
        if landmarks is None:
            return None
        lm = np.asarray(landmarks)
        if lm.size == 0 or lm.ndim != 2 or lm.shape[1] != 2 or not np.issubdtype(lm.dtype, np.number):
            return landmarks  # empty or malformed: the pipeline's own check says what is wrong
        src_idx = lm[:, 0].astype(np.int64)
        ok = (src_idx >= 0) & (src_idx < len(self.remap))
        rider = ok & (self.remap[np.clip(src_idx, 0, len(self.remap) - 1)] < 0)
        if rider.any():
            i = int(np.nonzero(rider)[0][0])
            raise InputError(f"landmarks: pair {i} names source vertex {src_idx[i]}, on a piece that rides along with the "
                             "skin (eyes, teeth, helpers): place landmarks on the skin, or name that piece as skin (skin=)")
        out = lm.astype(np.int64).copy()
        out[ok, 0] = self.remap[src_idx[ok]]
        return out

    def exclude(self, mask):
        """The excluded source vertices (n,) bool over the whole source's clean vertices
        (engine.inputs.parse_exclude) as a mask over the skin's caller vertices."""
        return None if mask is None else mask[self.src.orig_to_clean][self.vertex_index]

    def extend(self, skin_match: Correspondence) -> Correspondence:
        """The whole source's correspondence from its skin's (``skin_match``, in the skin's caller terms)."""
        from scipy.spatial import cKDTree

        src, idx = self.src, self.vertex_index
        n0 = len(src.orig_vertices)
        # the fitted skin on the clean mesh's skin vertices, then every riding piece carried by it
        clean_skin = self.ride.skin_index
        moved = np.asarray(skin_match.fitted_vertices, np.float64)[self.remap[src.clean_to_orig[clean_skin]]]
        carried = self.ride.carry(moved)
        fitted = carried[src.orig_to_clean].astype(np.float32)
        fitted[idx] = skin_match.fitted_vertices
        riders = np.nonzero(self.remap < 0)[0]
        on_skin = self.remap.copy()  # every caller vertex -> its skin vertex (itself on the skin)
        if len(riders):
            on_skin[riders] = cKDTree(src.orig_vertices[idx]).query(src.orig_vertices[riders])[1]
        conf = np.asarray(skin_match.confidence)[on_skin].copy()
        conf[riders] = np.minimum(conf[riders], RIDER_CONFIDENCE)
        meta = dict(skin_match.meta)
        meta["pieces"] = self.meta()
        meta["source_vertices"] = int(n0)
        meta["source_report"] = self.src.report  # the whole source's cleaning (the skin's own: its "pieces" entry)
        meta["pieces"]["skin_report"] = skin_match.meta.get("source_report")
        # first: what the artist sees in a short report
        meta["notices"] = self.notices(meta["pieces"]["riding"]) + list(meta.get("notices", []))
        return Correspondence(
            src_to_tgt_face=np.asarray(skin_match.src_to_tgt_face)[on_skin],
            src_to_tgt_bary=np.asarray(skin_match.src_to_tgt_bary)[on_skin],
            tgt_to_src_face=self.triangle_index[np.asarray(skin_match.tgt_to_src_face)].astype(np.int32),
            tgt_to_src_bary=np.asarray(skin_match.tgt_to_src_bary),
            fitted_vertices=fitted, confidence=conf.astype(np.float32), meta=meta)

    def meta(self) -> dict:
        """What was matched and how every other piece was carried (centres in the caller's coordinates)."""
        riding = self.ride.summary()
        for r in riding:
            r["centre"] = np.round(self.src.normalization.invert(np.asarray([r["centre"]]))[0], 5).tolist()
        kinds = self.pieces.counts()
        return {"skin_pieces": kinds.get("skin", 0), "skin_vertices": int(len(self.vertex_index)),
                "skin_stated": self.pieces.stated, "kinds": kinds, "riding": riding}

    def notices(self, riding: list[dict]) -> list[str]:
        """One line on what was matched and what rode along, one naming the pieces kept apart
        (``riding``: meta()'s list)."""
        kinds = self.pieces.counts()
        n_riding = sum(v for k, v in kinds.items() if k != "skin")
        parts = [f"{kinds[k]} {label}" for k, label in (("inside", "hidden inside it"), ("on", "on or near it"),
                                                        ("apart", "apart from it")) if kinds.get(k)]
        out = [f"source: matched its skin ({kinds.get('skin', 0)} of {len(self.pieces.kind)} pieces, "
               f"{len(self.vertex_index)} of {len(self.src.orig_vertices)} vertices); {n_riding} pieces ride along "
               f"({', '.join(parts)}), carried by the skin, not fitted"]
        apart = [r for r in riding if r["carried"] == "kept"]
        if apart:
            names = ", ".join(f"piece {r['piece']} ({r['vertices']} vertices)" for r in apart[:4])
            out.append(f"source: {len(apart)} piece(s) apart from the skin kept in place relative to it: {names}"
                       + (" ..." if len(apart) > 4 else ""))
        return out
