"""Carrying a template's riding pieces (engine.geometry.pieces) by its matched skin.

Nothing of a riding piece is projected onto the target:

- ``rigid``: a piece that is not a layer over the skin (eyeball, tooth row, tongue, joint cube,
  a piece poking out) or a small layer (a lash) moves by
  the best similarity (rotation, uniform scale, translation; weighted least squares) of the skin
  around it, so its shape is kept exactly and it sits where that skin takes it;
- ``tied``: a large layer on the skin (a garment shell, a hair helper) is tied to the skin surface
  (engine.geometry.surface_ties) and follows its deformation smoothly;
- ``kept``: a piece apart from the skin (a ground plane, a prop) moves by the similarity of the
  whole skin: it keeps its place relative to the character.
"""
from __future__ import annotations

import numpy as np

from ..mesh import Mesh
from .pieces import Pieces

CARRY_MODES = ("rigid", "tied", "kept")
# a layer on the skin up to this share of the skin's diagonal moves rigidly (lashes): the skin
# round it deforms little over it, so a similarity carries it and keeps its shape; a larger one (a
# garment shell covering the legs) follows the skin's bends. Every other piece moves rigidly:
# eyeballs and tooth rows keep their shape (a head template's lower teeth span 17 % of it and,
# tied to the skin, came out 38-44 % off their shape)
RIGID_EXTENT = 0.15
# the skin round a rigid piece: its vertices within this many times the larger of the piece's
# radius and its centre's distance to the skin (an eyeball: its lids and socket; a joint cube
# deep in a thigh: the thigh's ring round it)
NEIGHBOURHOOD = 2.0
# and at least this many of the nearest skin vertices (a similarity needs a spread of points)
MIN_NEIGHBOURS = 24
# their weights fall off over this share of the piece's radius beyond the skin nearest its surface
CLOSEST = 0.5


def similarity(rest: np.ndarray, moved: np.ndarray, weights: np.ndarray | None = None):
    """The weighted least-squares similarity taking ``rest`` (k, 3) to ``moved`` (k, 3)
    (Umeyama): returns (scale, rotation (3, 3), translation (3,)) with moved ~ scale R rest + t."""
    rest = np.asarray(rest, np.float64)
    moved = np.asarray(moved, np.float64)
    w = np.ones(len(rest)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_r, mu_m = w @ rest, w @ moved
    a, b = rest - mu_r, moved - mu_m
    cov = (b * w[:, None]).T @ a
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    var = float(w @ np.sum(a * a, axis=1))
    scale = float(np.sum(s * np.diag(fix)) / var) if var > 0 else 1.0
    return scale, rot, mu_m - scale * rot @ mu_r


class RideAlong:
    """The riding pieces of ``mesh`` (``pieces``) and how each follows the skin; built once at
    rest, carried for any deformation of the skin.

    mode : (p,) object per piece, one of CARRY_MODES ("" for skin pieces)
    """

    def __init__(self, mesh: Mesh, pieces: Pieces) -> None:
        from scipy.spatial import cKDTree

        self.mesh, self.pieces = mesh, pieces
        v = mesh.vertices
        skin = pieces.skin
        self.skin_index = np.nonzero(skin)[0]
        skin_v = v[self.skin_index]
        diag = float(np.linalg.norm(skin_v.max(0) - skin_v.min(0)))
        tree = cKDTree(skin_v)
        self.mode = np.full(len(pieces.kind), "", object)
        self._rigid: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._tied: dict[int, tuple[np.ndarray, object]] = {}
        skin_faces = None
        for p in np.nonzero(pieces.kind != "skin")[0]:
            idx = np.nonzero(pieces.label == p)[0]
            pv = v[idx]
            centre = pv.mean(0)
            extent = float(np.linalg.norm(pv.max(0) - pv.min(0)))
            if pieces.kind[p] == "apart":
                self.mode[p] = "kept"
                self._rigid[int(p)] = (idx, np.arange(len(self.skin_index)), np.ones(len(self.skin_index)))
            elif not (pieces.layer is not None and pieces.layer[p]) or extent <= RIGID_EXTENT * diag:
                self.mode[p] = "rigid"
                radius = float(np.max(np.linalg.norm(pv - centre, axis=1)))
                reach = NEIGHBOURHOOD * max(radius, tree.query(centre)[0])
                near = np.asarray(tree.query_ball_point(centre, reach), np.int64)
                if len(near) < MIN_NEIGHBOURS:
                    near = np.atleast_1d(tree.query(centre, k=min(MIN_NEIGHBOURS, len(skin_v)))[1])
                    reach = max(reach, float(np.max(np.linalg.norm(skin_v[near] - centre, axis=1))))
                # the skin nearest the piece's surface weighs most (an eyeball's lids over its brow
                # and cheek): a Gaussian in the distance beyond the nearest, over half its radius
                d = cKDTree(pv).query(skin_v[near])[0]
                self._rigid[int(p)] = (idx, near, np.exp(-(((d - d.min()) / (CLOSEST * radius + 1e-12)) ** 2)) + 1e-3)
            else:
                from .surface_ties import SurfaceTies

                self.mode[p] = "tied"
                if skin_faces is None:
                    skin_faces = _skin_faces(mesh, skin, self.skin_index)
                self._tied[int(p)] = (idx, SurfaceTies(skin_v, skin_faces, pv))
        self._skin_faces = skin_faces

    def carry(self, skin_moved: np.ndarray) -> np.ndarray:
        """(n, 3) every vertex of the mesh: the skin's at ``skin_moved`` (n_skin, 3, the skin
        vertices in ``skin_index`` order), the riding pieces carried by it."""
        skin_moved = np.asarray(skin_moved, np.float64)
        rest = self.mesh.vertices[self.skin_index]
        out = np.array(self.mesh.vertices, np.float64)
        out[self.skin_index] = skin_moved
        for idx, near, w in self._rigid.values():
            s, rot, t = similarity(rest[near], skin_moved[near], w)
            out[idx] = s * self.mesh.vertices[idx] @ rot.T + t
        for idx, ties in self._tied.values():
            out[idx] = ties.carry(skin_moved)
        return out

    def summary(self) -> list[dict]:
        """Per riding piece: {"piece", "kind", "carried", "vertices", "centre"} (rest coordinates)."""
        out = []
        for p in np.nonzero(self.mode != "")[0]:
            idx = np.nonzero(self.pieces.label == p)[0]
            out.append({"piece": int(p), "kind": str(self.pieces.kind[p]), "carried": str(self.mode[p]),
                        "vertices": int(len(idx)), "centre": np.round(self.mesh.vertices[idx].mean(0), 4).tolist()})
        return out


def _skin_faces(mesh: Mesh, skin: np.ndarray, skin_index: np.ndarray) -> np.ndarray:
    """(m_skin, 3) the skin's faces in skin vertex indices."""
    remap = np.full(mesh.n_vertices, -1, np.int64)
    remap[skin_index] = np.arange(len(skin_index))
    return remap[mesh.faces[skin[mesh.faces].all(axis=1)]]
