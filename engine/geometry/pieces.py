"""A template in pieces: which loose pieces are the skin to match, and which ride along with it.

Artists' templates hold the body with eyeballs, teeth, tongue, lashes, joint helpers, garment
shells and hair cards as separate pieces (connected components after welding). Matched as skin,
those pieces take vertices from the body and are pulled onto the target like skin (squashed
eyeballs). The rule here, from geometry alone (no names):

1. A *layer* is a piece lying over a larger piece: most of its area outside that piece, within
   ``LAYER`` of its surface and facing the same way (tights, a hair helper, a skirt over the legs, lashes on
   an eyelid, a garment on a game character).
2. A piece is *exposed* when enough of its area sees out past the other pieces (ambient
   occlusion by every piece that is not a layer, from either side): eyeballs behind their lids,
   teeth and tongue in the mouth, joint cubes in the body are hidden.
3. The skin grows from the largest piece over the exposed pieces that are not layers, not
   smaller than a working copy's triangle (``min_area``), and touch the skin (within ``TOUCH``):
   a robot made of interpenetrating armour pieces (X Bot: 95) grows from its torso.
4. Every other piece rides along: ``inside`` (hidden: eyeballs, teeth, joint cubes), ``on``
   (a layer, or near the skin: shells, lashes, small pieces poking out) or ``apart`` (neither: a
   ground plane, a prop), carried by the skin (engine.geometry.ride_along).

The caller may name the skin instead (vertices or a mask): the pieces holding those vertices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..mesh import Mesh

KINDS = ("skin", "inside", "on", "apart")
# a layer lies within this share of the mesh's diagonal of the piece under it, facing the same
# way: the MakeHuman base mesh's helpers, p50 / p90 of their distance to the body: tights 0.2 /
# 0.4 %, hair 1.3 / 2.2 %, skirt 1.7 / 6.2 % (over the tights: less); the clay figure's closed
# capsules overlap only at their ends
LAYER = 0.03
# ... or, for an open sheet (a shell, a cap, a card: a piece with a border), within this share of
# its own size (bounding-box diagonal): MakeHuman's helpers over their size, p90: tights 0.5 %,
# hair strips 7 %, skirt 11 %; so a hair cap on a head cut from the body (6-11 % of the head's
# diagonal off the scalp) is a layer as it is on the whole body
LAYER_OPEN = 0.25
# parallel: the normals' angle under 60 degrees (facing the same way: a limb hanging beside the
# torso faces it, a shell over the torso faces away from it as the torso does)
PARALLEL = 0.5
# a piece touches the skin within this share of the diagonal (2 cm on a 1.8 m body): welded
# seams and interpenetrating pieces meet at 0
TOUCH = 0.01
# a piece farther than this from the skin at its nearest, not hidden and not a layer, is apart
# (a ground plane, a prop): MakeHuman's ground joint lies 5 % of the diagonal below the feet
NEAR = 0.02
# pieces of at least this share of the largest piece's area are the bases a layer is tested
# against (smaller pieces under a layer are teeth, a tongue, joint cubes: never what a shell is
# laid on; in a head cut from MakeHuman's base mesh the tongue is 7 % of the head's skin)
BASE_SHARE = 0.1
# a layer has at least this share of its samples over the base: the MakeHuman helpers 0.78
# (skirt) to 1.0, its lashes 0.84-0.92; the generated clay figure's capsules at most 0.50 (a foot
# over its shin's end), X Bot's armour pieces under 0.5
LAYER_SHARE = 0.65
# a piece with under this share of its samples seeing out is hidden: MakeHuman's teeth, tongue
# and joint cubes 0; the clay figure's neck between head and torso 0.16, its nose 0.37
HIDDEN_SHARE = 0.05
# a piece with under this share seeing out is hidden when what shows of it is a speck:
# MakeHuman's eyeballs see out on 0.08-0.09 (their fronts between the lids), the clay figure's
# neck on 0.16 and its nose on 0.37
MOSTLY_HIDDEN = 0.5
# ... a speck: under this share of the largest piece's area. An eyeball's front is 0.015 % of
# the MakeHuman body (0.13 % of a head cut from it); the clay figure's neck shows 2.1 % of its
# torso's area, its nose 0.5 %
SPECK = 0.003
# samples per piece for the layer and exposure tests, and rays per sample for the exposure
PIECE_SAMPLES = 64
EXPOSURE_RAYS = 32
# pieces too small to be skin are told hidden or not on this many samples (their kind is only reported)
SMALL_SAMPLES = 8
# the skin must hold at least this share of the source's area: below, the source is a pile of
# pieces with nothing that stands out as the body (MakeHuman's base mesh: 35 %, its tights and
# skirt helpers 33 and 23 %)
MIN_SKIN_SHARE = 0.15
# a piece smaller than a working copy's mean triangle cannot be matched as skin (3000-vertex
# copies: 6000 triangles): 1 / 6000 of the area. MakeHuman's joint cubes are 0.01 % of it, X
# Bot's smallest finger pieces 0.02 %, its finger segments up to 0.09 %
MIN_PIECE_SHARE = 1.0 / 6000


@dataclass
class Pieces:
    """The pieces of a mesh and what each is.

    label : (n,) int64 the piece of every vertex (connected components of the mesh)
    kind : (p,) object one of KINDS per piece
    area : (p,) float64 each piece's area
    stated : the skin was named by the caller
    layer : (p,) bool the pieces laid over a larger piece (shells, helpers, lashes); None when
        not tested (a single piece, or every piece named skin)
    """

    label: np.ndarray
    kind: np.ndarray
    area: np.ndarray
    stated: bool = False
    layer: np.ndarray | None = None

    @property
    def skin(self) -> np.ndarray:
        """(n,) bool vertices of the skin."""
        return (self.kind == "skin")[self.label]

    @property
    def all_skin(self) -> bool:
        return bool(np.all(self.kind == "skin"))

    def counts(self) -> dict:
        """{kind: number of pieces} for the kinds present."""
        return {k: int(np.sum(self.kind == k)) for k in KINDS if np.any(self.kind == k)}


def find_pieces(mesh: Mesh, skin: np.ndarray | None = None, min_area: float = MIN_PIECE_SHARE) -> Pieces:
    """The skin and the riding pieces of ``mesh`` (see the module docstring).

    skin : optional (n,) bool, the vertices the caller names as skin (every piece holding one
        of them is skin; the rest are classified as riding pieces)
    min_area : the smallest piece that can be skin, as a share of the mesh's area
    Raises InputError when no piece stands out as the skin (a pile of loose pieces) or the
    named skin holds no vertex.
    """
    label = np.asarray(mesh.components, np.int64)
    n_pieces = int(label.max()) + 1 if len(label) else 0
    face_piece = label[mesh.faces[:, 0]]
    area = np.bincount(face_piece, weights=mesh.face_areas, minlength=n_pieces)
    kind = np.full(n_pieces, "", object)
    name = mesh.name or "source"
    if skin is not None:
        skin = np.asarray(skin, bool)
        if not skin.any():
            raise InputError(f"{name}: the skin named holds no vertex")
        kind[np.unique(label[skin])] = "skin"
    if n_pieces <= 1 or np.all(kind == "skin"):
        kind[:] = "skin"
        return Pieces(label, kind, area, stated=skin is not None)
    diag = mesh.bbox_diagonal
    pts, nrm, owner = _samples(mesh, face_piece, n_pieces)
    is_open = _open_pieces(mesh, face_piece, n_pieces)
    layer = _layers(mesh, face_piece, area, pts, nrm, owner, is_open)
    hidden = _hidden(mesh, face_piece, layer, pts, nrm, owner, area, area < min_area * area.sum(), is_open)
    if skin is None:
        candidate = ~layer & ~hidden & (area >= min_area * area.sum())
        seed = int(np.argmax(np.where(layer, -1.0, area)))
        # the pieces touching the seed, through any piece (X Bot's armour shells meet only at the
        # hidden joint spheres between them); the candidates among them are the skin
        reached = np.zeros(n_pieces, bool)
        reached[seed] = True
        while True:
            grow = ~reached & (_distance_to(mesh, face_piece, reached, pts, owner, ~reached) <= TOUCH * diag)
            if not grow.any():
                break
            reached |= grow
        kind[reached & candidate] = "skin"
        kind[seed] = "skin"
        if area[kind == "skin"].sum() < MIN_SKIN_SHARE * area.sum():
            raise InputError(f"{name}: no skin to match among its {n_pieces} loose pieces (the largest holds "
                             f"{100 * area.max() / area.sum():.0f} % of the surface); name the skin's vertices (--skin)")
    rest = kind == ""
    near = _distance_to(mesh, face_piece, kind == "skin", pts, owner, rest) <= NEAR * diag
    inside = rest & ~layer & hidden
    kind[inside] = "inside"
    kind[rest & ~inside & (layer | near)] = "on"
    kind[rest & ~inside & ~(layer | near)] = "apart"
    return Pieces(label, kind, area, stated=skin is not None, layer=layer)


def _samples(mesh: Mesh, face_piece: np.ndarray, n_pieces: int):
    """PIECE_SAMPLES area-uniform points of every piece with area: points (s, 3), their face
    normals (s, 3) and their pieces (s,)."""
    from .coverage import surface_samples

    order = np.argsort(face_piece, kind="stable")
    starts = np.searchsorted(face_piece[order], np.arange(n_pieces + 1))
    pts, nrm, owner = [], [], []
    for p in range(n_pieces):
        faces = order[starts[p]:starts[p + 1]]
        q, face = surface_samples(mesh.vertices, mesh.faces[faces], PIECE_SAMPLES, seed=p)
        pts.append(q)
        nrm.append(mesh.face_normals[faces[face]])
        owner.append(np.full(len(q), p))
    return np.concatenate(pts), np.concatenate(nrm), np.concatenate(owner)


def _share(owner: np.ndarray, flags: np.ndarray, n_pieces: int) -> np.ndarray:
    """(p,) the share of every piece's samples with ``flags`` set (0 for a piece with none)."""
    count = np.bincount(owner, minlength=n_pieces)
    return np.bincount(owner, weights=flags.astype(np.float64), minlength=n_pieces) / np.maximum(count, 1)


def _extents(mesh: Mesh, n_pieces: int) -> np.ndarray:
    """(p,) the diagonal of every piece's bounding box."""
    label = mesh.components
    lo = np.full((n_pieces, 3), np.inf)
    hi = np.full((n_pieces, 3), -np.inf)
    np.minimum.at(lo, label, mesh.vertices)
    np.maximum.at(hi, label, mesh.vertices)
    return np.linalg.norm(hi - lo, axis=1)


def _open_pieces(mesh: Mesh, face_piece: np.ndarray, n_pieces: int) -> np.ndarray:
    """(p,) bool the pieces with an open border."""
    out = np.zeros(n_pieces, bool)
    out[np.unique(face_piece[np.nonzero((mesh.opposite_edge_counts == 1).any(axis=1))[0]])] = True
    return out


def _layers(mesh, face_piece, area, pts, nrm, owner, is_open) -> np.ndarray:
    """(p,) bool pieces lying over a larger base piece for at least LAYER_SHARE of their samples
    (``is_open``: (p,) bool the pieces with a border, _open_pieces)."""
    from .closest import SurfaceQuery

    layered = np.zeros(len(pts), bool)
    reach = np.where(is_open, LAYER_OPEN * _extents(mesh, len(area)), LAYER * mesh.bbox_diagonal)[owner]
    for b in np.nonzero(area >= BASE_SHARE * area.max())[0]:
        test = np.nonzero((area[owner] < area[b]) & ~layered)[0]
        if len(test) == 0:
            continue
        faces = np.nonzero(face_piece == b)[0]
        face, _, point, dist = SurfaceQuery(mesh.vertices, mesh.faces[faces]).closest(pts[test])
        base_normal = mesh.face_normals[faces[face]]
        parallel = np.einsum("ij,ij->i", nrm[test], base_normal) > PARALLEL
        over = np.einsum("ij,ij->i", pts[test] - point, base_normal) >= 0.0
        layered[test[(dist <= reach[test]) & parallel & over]] = True
    return _share(owner, layered, len(area)) >= LAYER_SHARE


def _hidden(mesh, face_piece, layer, pts, nrm, owner, area, small: np.ndarray, is_open) -> np.ndarray:
    """(p,) bool pieces hidden by the others: under HIDDEN_SHARE of their samples show (see out
    past every piece that is not a layer: ambient occlusion under half on either side of the
    sample, and lie outside them by the winding number),
    or under MOSTLY_HIDDEN when what shows of them is a speck: under SPECK of the largest piece's
    area (an eyeball whose front shows between its lids). A piece that shows more is a visible
    part (a neck between head and torso, a nose on a head). The ``small`` pieces (p,) bool,
    which cannot be skin, are read on SMALL_SAMPLES of their samples (MakeHuman's 139 joint cubes);
    layers are not read (they are never skin, and "on" the skin whatever they hide behind).
    ``is_open`` : (p,) bool the pieces with a border."""
    import igl

    n_pieces = len(layer)
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner)  # the sample's number within its piece
    read = np.nonzero(~layer[owner] & (~small[owner] | (rank < SMALL_SAMPLES)))[0]
    v = np.ascontiguousarray(mesh.vertices, np.float64)
    f = np.ascontiguousarray(mesh.faces[~layer[face_piece]], np.int64)
    eps = 1e-6 * mesh.bbox_diagonal  # off the surface, so a ray does not hit the sample's own face
    p, n = pts[read], nrm[read]
    occl = [igl.ambient_occlusion(v, f, np.ascontiguousarray(p + s * eps * n), np.ascontiguousarray(s * n), EXPOSURE_RAYS)
            for s in (1.0, -1.0)]
    # inside the other pieces by the winding number (robust to holes: a head cut open at the neck
    # lets rays in, not the winding number), read on both sides of the sample: a closed piece adds
    # nothing on its outer side, an open one +-1/2, the mean of the two sides
    w_out, w_in = (igl.fast_winding_number(v, f, np.ascontiguousarray(p + s * eps * n)) for s in (1.0, -1.0))
    corners = mesh.vertices[mesh.faces]
    volume = np.bincount(face_piece, weights=np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])),
                         minlength=n_pieces)
    q = owner[read]
    others = np.where(is_open[q], 0.5 * (w_out + w_in), np.where(volume[q] >= 0.0, w_out, w_in))
    showing = (np.minimum(*occl) < 0.5) & ~(np.abs(others) > 0.5)
    share = _share(q, showing, n_pieces)
    # what shows of a mostly hidden piece, against the largest piece: a speck (an eyeball's front)
    # or a part (a neck between head and torso)
    speck = share * area < SPECK * float(np.max(np.where(layer, 0.0, area)))
    return (share < HIDDEN_SHARE) | ((share < MOSTLY_HIDDEN) & speck)


def _distance_to(mesh, face_piece, base: np.ndarray, pts, owner, pieces: np.ndarray) -> np.ndarray:
    """(p,) every flagged piece's (``pieces``: (p,) bool) nearest approach to the surface of the
    ``base`` pieces (p,) bool, read on its samples and vertices (inf where not flagged); a point
    inside the base (winding number over half: interpenetrating pieces) counts as 0. The vertices
    catch what sparse samples miss (a capsule's end cap resting on the torso)."""
    import igl

    from .closest import SurfaceQuery

    out = np.full(len(pieces), np.inf)
    if not pieces.any():
        return out
    faces = np.ascontiguousarray(mesh.faces[base[face_piece]], np.int64)
    sel = np.nonzero(pieces[owner])[0]
    vsel = np.nonzero(pieces[mesh.components])[0]
    query_pts = np.concatenate([pts[sel], mesh.vertices[vsel]])
    query_owner = np.concatenate([owner[sel], mesh.components[vsel]])
    dist = SurfaceQuery(mesh.vertices, faces).closest(query_pts)[3]
    inside = np.abs(igl.fast_winding_number(np.ascontiguousarray(mesh.vertices, np.float64), faces,
                                            np.ascontiguousarray(query_pts))) > 0.5
    dist[inside] = 0.0
    np.minimum.at(out, query_owner, dist)
    return out
