"""Attribute transfer through a surface map: vertex values, labels, skin weights, face labels.

The map gives every *receiving* vertex (usually the target's) a point on the
*giving* mesh (usually the source): ``tgt_to_src_face`` / ``tgt_to_src_bary``
from ``engine.match``. The same functions work the other way round with the
``src_to_tgt_*`` arrays.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .inpaint import harmonic_fill
from .maps import check_faces, check_map, check_vertices, common_face, interpolate, nearest_corner

MODES = ("barycentric", "nearest")


def _check_values(values, n: int, what: str) -> np.ndarray:
    try:
        vals = np.asarray(values)
    except Exception:
        raise InputError(f"{what}: not an array") from None
    if vals.ndim == 0:
        raise InputError(f"{what}: expected one value per source vertex, got a scalar")
    if len(vals) != n:
        raise InputError(f"{what}: has {len(vals)} rows but the source mesh has {n} vertices")
    return vals


def transfer_vertex_attributes(
    values,
    src_faces,
    tgt_to_src_face,
    tgt_to_src_bary,
    mode: str = "barycentric",
    normalize: bool = False,
    confidence=None,
    fill_below: float | None = None,
    tgt_vertices=None,
    tgt_faces=None,
    target_confidence=None,
    n_src_vertices: int | None = None,
) -> np.ndarray:
    """Per-vertex values of the source, evaluated at every target vertex.

    Parameters
    ----------
    values : (ns, ...) numeric  one row per source vertex (scalars, colours,
        vectors, one column per bone...). Booleans and integers are allowed
        with ``mode="nearest"``; with ``"barycentric"`` they come back as float.
    src_faces : (ms, 3) int  source triangles (the faces the map refers to)
    tgt_to_src_face : (nt,) int, tgt_to_src_bary : (nt, 3) float  the map
    mode : "barycentric" (blend the three corners) or "nearest" (the corner
        with the largest weight; keeps the dtype)
    normalize : bool  clip negatives and rescale every output row to sum 1
        (skin weights). Rows with no weight stay zero.
    confidence : optional (ns,) float in [0, 1]  per *source* vertex (as in
        ``Correspondence.confidence``); interpolated to the target through the map.
    target_confidence : optional (nt,) float  per target vertex, used as is
        (instead of ``confidence``).
    fill_below : optional float  target vertices whose confidence is below
        this are refilled by harmonic inpainting from the confident ones on the
        target mesh (needs ``tgt_vertices`` and ``tgt_faces``).
    tgt_vertices : (nt, 3) float, tgt_faces : (mt, 3) int  the target mesh
    n_src_vertices : optional int  source vertex count to check ``values``
        against (default: ``len(values)``, checked against ``src_faces``).

    Returns
    -------
    (nt, ...) float64 for "barycentric"; the input dtype for "nearest".
    """
    if mode not in MODES:
        raise InputError(f"attribute transfer: mode must be one of {', '.join(MODES)}, got {mode!r}")
    sf = check_faces(src_faces, "source")
    ns = int(n_src_vertices) if n_src_vertices is not None else int(sf.max()) + 1
    vals = _check_values(values, ns, "attribute values") if n_src_vertices is not None else np.asarray(values)
    if vals.ndim == 0:
        raise InputError("attribute values: expected one row per source vertex, got a scalar")
    if len(vals) < ns:
        raise InputError(f"attribute values: has {len(vals)} rows but the source faces use {ns} vertices")
    ns = len(vals) if n_src_vertices is None else ns
    face, bary = check_map(tgt_to_src_face, tgt_to_src_bary, len(sf), "target->source map")
    nt = len(face)
    if vals.dtype.kind not in "biuf":
        raise InputError(f"attribute values: expected numbers, got dtype {vals.dtype}")
    if vals.dtype.kind == "f" and not np.all(np.isfinite(vals)):
        raise InputError("attribute values: contain NaN or infinite entries")

    if mode == "nearest":
        out = vals[nearest_corner(sf, face, bary)]
    else:
        out = interpolate(vals.astype(np.float64), sf, face, bary)

    if fill_below is not None:
        if target_confidence is not None:
            conf = np.asarray(target_confidence, np.float64)
            if conf.shape != (nt,):
                raise InputError(f"target_confidence: expected shape ({nt},), got {conf.shape}")
        elif confidence is not None:
            c = np.asarray(confidence, np.float64)
            if c.shape != (ns,):
                raise InputError(f"confidence: expected one value per source vertex ({ns},), got {c.shape}")
            conf = interpolate(c, sf, face, bary)
        else:
            raise InputError("fill_below needs confidence (per source vertex) or target_confidence")
        if not np.all(np.isfinite(conf)):
            raise InputError("confidence: contains NaN or infinite entries")
        if tgt_vertices is None or tgt_faces is None:
            raise InputError("fill_below needs the target mesh (tgt_vertices and tgt_faces) to inpaint on")
        tv = check_vertices(tgt_vertices, "target")
        if len(tv) != nt:
            raise InputError(f"target: has {len(tv)} vertices but the map has {nt} entries")
        tf = check_faces(tgt_faces, "target", nt)
        known = conf >= float(fill_below)
        if not known.any():
            raise InputError(f"fill_below={fill_below}: no target vertex is that confident; nothing to fill from")
        dtype = out.dtype
        filled = harmonic_fill(tv, tf, out.astype(np.float64), known)
        if mode == "nearest" and dtype.kind in "biu":
            filled = np.rint(filled)
            if dtype.kind == "b":
                filled = filled > 0.5
        out = filled.astype(dtype) if mode == "nearest" else filled

    if normalize:
        out = normalize_rows(np.asarray(out, np.float64))
    return out


def normalize_rows(w: np.ndarray) -> np.ndarray:
    """Clip negatives and rescale each row of (n, k) weights to sum 1 (all-zero rows stay zero)."""
    w = np.clip(np.asarray(w, np.float64).reshape(len(w), -1), 0.0, None)
    s = w.sum(axis=1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0)


def transfer_skin_weights(
    weights,
    src_faces,
    tgt_to_src_face,
    tgt_to_src_bary,
    mode: str = "barycentric",
    tolerance: float = 1e-3,
    renormalize_input: bool = False,
    **options,
) -> np.ndarray:
    """Skin weights of many bones at once: (ns, bones) -> (nt, bones), rows summing to 1.

    Every source row must sum to one (within ``tolerance``) or be all zero
    (an unweighted vertex); otherwise an :class:`InputError` names how many
    rows are off, unless ``renormalize_input`` rescales them first.
    Other keyword options go to :func:`transfer_vertex_attributes`
    (``confidence``, ``fill_below``, ``tgt_vertices``, ``tgt_faces``...).
    """
    w = np.asarray(weights)
    if w.ndim != 2:
        raise InputError(f"skin weights: expected shape (vertices, bones), got {w.shape}")
    if w.dtype.kind not in "biuf":
        raise InputError(f"skin weights: expected numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise InputError("skin weights: contain NaN or infinite entries")
    if (w < -tolerance).any():
        raise InputError(f"skin weights: {int((w < -tolerance).any(axis=1).sum())} vertices have negative weights")
    s = w.sum(axis=1)
    bad = (np.abs(s - 1.0) > tolerance) & (s > tolerance)
    if bad.any():
        if not renormalize_input:
            i = int(np.nonzero(bad)[0][0])
            raise InputError(f"skin weights: {int(bad.sum())} vertices have weights that do not sum to 1 (vertex {i} sums to {s[i]:.4g}); normalise them or pass renormalize_input=True")
        w = normalize_rows(w)
    return transfer_vertex_attributes(w, src_faces, tgt_to_src_face, tgt_to_src_bary, mode=mode, normalize=True, **options)


def transfer_vertex_labels(labels, src_faces, tgt_to_src_face, tgt_to_src_bary) -> np.ndarray:
    """Integer per-vertex labels (part ids): each target vertex takes the label with
    the largest total barycentric weight among the three corners of its source triangle.

    labels : (ns,) int  ->  (nt,) same dtype
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise InputError(f"vertex labels: expected shape (n,), got {lab.shape}")
    if lab.dtype.kind not in "biu":
        raise InputError(f"vertex labels: expected integers, got dtype {lab.dtype}")
    sf = check_faces(src_faces, "source", len(lab))
    face, bary = check_map(tgt_to_src_face, tgt_to_src_bary, len(sf), "target->source map")
    corner = lab[sf[face]]  # (nt, 3)
    # score of each corner's label = sum of the weights of corners sharing it
    same = corner[:, :, None] == corner[:, None, :]
    score = (same * bary[:, None, :]).sum(axis=2)
    best = np.argmax(score, axis=1)
    return corner[np.arange(len(face)), best]


def transfer_face_labels(
    labels,
    src_faces,
    tgt_faces,
    tgt_to_src_face,
    tgt_to_src_bary,
) -> np.ndarray:
    """Per-face labels (material index, part id) of the source onto the target's faces.

    A target triangle whose three corners all lie on one source triangle (inside
    it, or on its edges and vertices, as with an identity map) takes that
    triangle's label. Otherwise it looks at the source triangles its three
    corners map into and takes the label most of them carry; when all three
    differ, the label of the corner that lies deepest inside its source
    triangle (largest smallest barycentric weight).

    Parameters
    ----------
    labels : (ms,) int  one label per source triangle
    src_faces : (ms, 3) int
    tgt_faces : (mt, 3) int
    tgt_to_src_face : (nt,) int, tgt_to_src_bary : (nt, 3) float  map at target vertices

    Returns
    -------
    (mt,) labels, same dtype.
    """
    lab = np.asarray(labels)
    sf = check_faces(src_faces, "source")
    if lab.ndim != 1 or len(lab) != len(sf):
        raise InputError(f"face labels: expected one label per source triangle ({len(sf)},), got shape {lab.shape}")
    if lab.dtype.kind not in "biu":
        raise InputError(f"face labels: expected integers, got dtype {lab.dtype}")
    face, bary = check_map(tgt_to_src_face, tgt_to_src_bary, len(sf), "target->source map")
    tf = check_faces(tgt_faces, "target", len(face))
    corner_lab = lab[face[tf]]  # (mt, 3)
    depth = bary.min(axis=1)[tf]  # (mt, 3)
    votes = (corner_lab[:, :, None] == corner_lab[:, None, :]).sum(axis=2)  # (mt, 3)
    score = votes * 10.0 + depth  # majority first, depth breaks ties (depth <= 1/3)
    best = np.argmax(score, axis=1)
    out = corner_lab[np.arange(len(tf)), best]
    # a target triangle lying on one source triangle's closure (corners on its vertices or edges) takes its label
    common = common_face(sf, tf, face, bary)
    out[common >= 0] = lab[common[common >= 0]]
    return out
