"""Texture bake through a surface map: the source texture, re-laid in the target's own UVs.

Every texel of the output image is a point of some target triangle (found by
rasterising the target's triangles in its UV layout). The same barycentric
weights applied to that triangle's corners *in the source UV layout* (the
seam-aware UV transfer of :mod:`engine.transfer.uv`) give the source UV of the
texel, where the source texture is sampled bilinearly. Texels no triangle
covers are filled from the nearest covered texel up to ``padding`` texels
away, so mipmaps and bilinear filtering do not bleed the background into the
islands.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..progress import Progress
from .maps import check_faces, check_map
from .uv import check_corner_uv, transfer_uvs

WRAPS = ("repeat", "clamp")
STAGES = (("uv", 2.0), ("raster", 4.0), ("sample", 3.0), ("dilate", 1.0))


def as_progress(progress, stages) -> Progress | None:
    """A :class:`Progress` as given, or one built around a ``callback(stage, fraction)``."""
    if progress is None or isinstance(progress, Progress):
        return progress
    if callable(progress):
        return Progress(progress, stages=stages)
    raise InputError(f"progress must be an engine.progress.Progress or a callable, got {type(progress).__name__}")


def check_image(image, name: str = "texture") -> np.ndarray:
    """Validate a texture: (H, W) or (H, W, C) with C in 1..4, integer or float; returns (H, W, C)."""
    if image is None:
        raise InputError(f"{name}: no image given")
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"{name}: expected an image of shape (H, W) or (H, W, C) with 1-4 channels, got {np.asarray(image).shape}")
    if img.dtype.kind not in "uif":
        raise InputError(f"{name}: expected integer or float pixels, got dtype {img.dtype}")
    if img.dtype.kind == "f" and not np.all(np.isfinite(img)):
        raise InputError(f"{name}: contains NaN or infinite pixels")
    return img


def _pixel_coords(corner_uv: np.ndarray, H: int, W: int):
    """UV (v up) -> pixel coordinates with texel centres at integers (row 0 at v = 1)."""
    uv = np.asarray(corner_uv, np.float64)
    return uv[..., 0] * W - 0.5, (1.0 - uv[..., 1]) * H - 0.5


def raster_spans(corner_uv: np.ndarray, size: tuple[int, int], eps: float = 1e-7):
    """Horizontal texel spans covered by every triangle in UV space.

    A texel belongs to a triangle when its centre lies inside (or on the border,
    within ``eps`` in barycentric terms).

    Returns
    -------
    span_face : (s,) int64  triangle of each span
    span_y : (s,) int64  texel row
    span_x0 : (s,) int64  first texel column
    span_len : (s,) int64  number of texels (>= 1)
    """
    H, W = int(size[0]), int(size[1])
    x, y = _pixel_coords(corner_uv, H, W)
    y0 = np.clip(np.ceil(y.min(axis=1) - 1e-9), 0, H).astype(np.int64)
    y1 = np.clip(np.floor(y.max(axis=1) + 1e-9), -1, H - 1).astype(np.int64)
    xa, xb, xc = x[:, 0], x[:, 1], x[:, 2]
    ya, yb, yc = y[:, 0], y[:, 1], y[:, 2]
    det = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    rows = np.maximum(y1 - y0 + 1, 0)
    ok = (np.abs(det) > 1e-12) & (rows > 0)
    det = np.where(ok, det, 1.0)
    # barycentric weights as affine functions of (x, y): w_i = a_i x + b_i y + c_i
    a1, b1 = (yc - ya) / det, -(xc - xa) / det
    a2, b2 = -(yb - ya) / det, (xb - xa) / det
    c1, c2 = -(a1 * xa + b1 * ya), -(a2 * xa + b2 * ya)
    A = np.stack([-(a1 + a2), a1, a2], axis=1)
    Bc = np.stack([-(b1 + b2), b1, b2], axis=1)
    Cc = np.stack([1.0 - (c1 + c2), c1, c2], axis=1)
    tris = np.nonzero(ok)[0]
    nrow = rows[tris]
    rt = np.repeat(tris, nrow)
    ry = y0[rt] + (np.arange(int(nrow.sum())) - np.repeat(np.cumsum(nrow) - nrow, nrow))
    k = Bc[rt] * ry[:, None] + Cc[rt]  # (r, 3): w_i = A_i x + k_i
    a = A[rt]
    lo = np.full(len(rt), -np.inf)
    hi = np.full(len(rt), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = (-eps - k) / a
    for i in range(3):
        pos = a[:, i] > 1e-15
        neg = a[:, i] < -1e-15
        flat = ~pos & ~neg
        lo = np.where(pos, np.maximum(lo, bound[:, i]), lo)
        hi = np.where(neg, np.minimum(hi, bound[:, i]), hi)
        hi = np.where(flat & (k[:, i] < -eps), -np.inf, hi)
    xl = np.clip(np.ceil(np.clip(lo, -1.0, W + 1.0)), 0, W).astype(np.int64)
    xr = np.clip(np.floor(np.clip(hi, -2.0, W + 1.0)), -1, W - 1).astype(np.int64)
    length = xr - xl + 1
    keep = length > 0
    return rt[keep], ry[keep], xl[keep], length[keep]


def _span_texels(span_face, span_y, span_x0, span_len, lo: int, hi: int):
    """Texels of spans lo..hi-1: face (n,) int64, x (n,) int64, y (n,) int64."""
    ln = span_len[lo:hi]
    n = int(ln.sum())
    sid = np.repeat(np.arange(lo, hi), ln)
    offs = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(ln) - ln, ln)
    return span_face[sid], span_x0[sid] + offs, span_y[sid]


def rasterize_uv(corner_uv: np.ndarray, size: tuple[int, int], progress: Progress | None = None):
    """Which triangle covers every texel centre of an (H, W) image in UV space.

    Parameters
    ----------
    corner_uv : (m, 3, 2) float  triangle corners in UV (v up, image row 0 at v = 1)
    size : (H, W)

    Returns
    -------
    face : (H, W) int64, -1 where no triangle covers the texel centre (overlaps: the last triangle wins)
    bary : (H, W, 3) float32 barycentric weights inside that triangle
    """
    H, W = int(size[0]), int(size[1])
    face_buf = np.full(H * W, -1, np.int64)
    bary_buf = np.zeros((H * W, 3), np.float32)
    sf, sy, sx, sl = raster_spans(corner_uv, (H, W))
    x, y = _pixel_coords(corner_uv, H, W)
    step = 1 << 16
    for lo in range(0, len(sf), step):
        f, px, py = _span_texels(sf, sy, sx, sl, lo, min(lo + step, len(sf)))
        P = np.stack([x[f], y[f]], axis=-1)  # (n, 3, 2)
        e1, e2, d = P[:, 1] - P[:, 0], P[:, 2] - P[:, 0], np.stack([px - P[:, 0, 0], py - P[:, 0, 1]], axis=1)
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        w1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
        w2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
        idx = py * W + px
        face_buf[idx] = f
        bary_buf[idx] = np.stack([1.0 - w1 - w2, w1, w2], axis=1)
        if progress is not None:
            progress.update(min(1.0, (lo + step) / len(sf)))
    return face_buf.reshape(H, W), bary_buf.reshape(H, W, 3)


def _padded(image: np.ndarray, wrap: str) -> np.ndarray:
    """(C, (H+1) * (W+1)) float32 channel planes with one extra row/column (wrapped or clamped)
    so that the four bilinear taps never need bounds checks."""
    img = image.astype(np.float32)
    if wrap == "repeat":
        img = np.concatenate([img, img[:, :1]], axis=1)
        img = np.concatenate([img, img[:1]], axis=0)
    else:
        img = np.concatenate([img, img[:, -1:]], axis=1)
        img = np.concatenate([img, img[-1:]], axis=0)
    return np.ascontiguousarray(img.reshape(-1, img.shape[2]).T)


def _sample_pixels(planes: np.ndarray, H: int, W: int, sx: np.ndarray, sy: np.ndarray, wrap: str) -> np.ndarray:
    """Bilinear samples at source pixel coordinates (texel centres at integers) -> (C, n) float32."""
    xf = np.floor(sx)
    yf = np.floor(sy)
    fx = (sx - xf).astype(np.float32)
    fy = (sy - yf).astype(np.float32)
    xi = xf.astype(np.int64)
    yi = yf.astype(np.int64)
    if wrap == "repeat":
        xi %= W
        yi %= H
        # the padded column/row W, H holds column/row 0: taps at xi + 1 wrap for free
    else:
        fx[xi < 0] = 0.0
        fy[yi < 0] = 0.0
        np.clip(xi, 0, W - 1, out=xi)
        np.clip(yi, 0, H - 1, out=yi)
    Wp = W + 1
    i00 = yi * Wp + xi
    i10 = i00 + Wp
    out = np.empty((planes.shape[0], len(sx)), np.float32)
    for c in range(planes.shape[0]):
        p = planes[c]
        top = p.take(i00)
        top += (p.take(i00 + 1) - top) * fx
        bot = p.take(i10)
        bot += (p.take(i10 + 1) - bot) * fx
        top += (bot - top) * fy
        out[c] = top
    return out


def sample_bilinear(image: np.ndarray, uv: np.ndarray, wrap: str = "repeat") -> np.ndarray:
    """Bilinear samples of ``image`` (H, W, C) at UVs (n, 2) -> (n, C) float32 (v up, row 0 at v = 1)."""
    img = check_image(image, "image")
    H, W = img.shape[:2]
    sx, sy = _pixel_coords(np.asarray(uv, np.float64), H, W)
    return _sample_pixels(_padded(img, wrap), H, W, sx, sy, wrap).T


def dilate(image: np.ndarray, covered: np.ndarray, padding: int) -> np.ndarray:
    """Fill uncovered texels within ``padding`` texels (chessboard distance) of a covered one
    with the value of the nearest covered texel, in place.

    image : (H, W, C), covered : (H, W) bool. Returns the (H, W) bool mask of texels holding a value.
    """
    if padding <= 0 or covered.all() or not covered.any():
        return covered.copy()
    from scipy.ndimage import distance_transform_cdt

    dist, (iy, ix) = distance_transform_cdt(~covered, metric="chessboard", return_indices=True)
    fill = (~covered) & (dist <= padding)
    image[fill] = image[iy[fill], ix[fill]]
    return covered | fill


def _subdivision_template(level: int):
    """Barycentric grid of a triangle split ``level`` times: weights (p, 3) and sub-triangles (4**level, 3)."""
    n = 1 << level
    pts, index = [], {}
    for i in range(n + 1):
        for j in range(n + 1 - i):
            index[(i, j)] = len(pts)
            pts.append((n - i - j, i, j))
    tris = []
    for i in range(n):
        for j in range(n - i):
            tris.append((index[(i, j)], index[(i + 1, j)], index[(i, j + 1)]))
            if i + j <= n - 2:
                tris.append((index[(i + 1, j)], index[(i + 1, j + 1)], index[(i, j + 1)]))
    return np.asarray(pts, np.float64) / n, np.asarray(tris, np.int64)


def refine_target(src_faces, tgt_vertices, tgt_faces, tgt_corner_uv, face, bary, src_vertices=None,
                  fitted_vertices=None, max_level: int = 4):
    """Split target triangles that are larger than the source triangles under them, and map the new points.

    A texel inside a large target triangle would otherwise get its source UV by
    linear interpolation across several source triangles. The new points are
    mapped by a closest-point query on the fitted source (``fitted_vertices``,
    the source topology on the target shape) or, without it, by projecting the
    interpolated source points back onto the source surface (``src_vertices``).

    Returns
    -------
    faces : (k, 3) int64, corner_uv : (k, 3, 2) float64  the refined target (a triangle soup)
    face_map : (p,) int64, bary_map : (p, 3) float64  its vertices' points on the source
    """
    from ..geometry.closest import SurfaceQuery
    from .maps import check_vertices

    sf = np.asarray(src_faces, np.int64)
    tv = check_vertices(tgt_vertices, "target")
    tf = np.asarray(tgt_faces, np.int64)
    if len(tv) != len(face):
        raise InputError(f"target: has {len(tv)} vertices but the map has {len(face)} entries")
    if fitted_vertices is not None:
        dom = check_vertices(fitted_vertices, "fitted shape")
        if len(dom) <= int(sf.max()):
            raise InputError(f"fitted shape: has {len(dom)} vertices but the source faces use {int(sf.max()) + 1}")
        pts = tv[tf]  # the target triangle, on the target shape
    elif src_vertices is not None:
        dom = check_vertices(src_vertices, "source")
        if len(dom) <= int(sf.max()):
            raise InputError(f"source: has {len(dom)} vertices but its faces use {int(sf.max()) + 1}")
        src_pts = np.einsum("nk,nkc->nc", bary, dom[sf[face]])
        pts = src_pts[tf]  # the target triangle's image, on the source
    else:
        raise InputError("texture refinement needs fitted_vertices or src_vertices")
    dom_area = 0.5 * np.linalg.norm(np.cross(dom[sf[:, 1]] - dom[sf[:, 0]], dom[sf[:, 2]] - dom[sf[:, 0]]), axis=1)
    t_area = 0.5 * np.linalg.norm(np.cross(pts[:, 1] - pts[:, 0], pts[:, 2] - pts[:, 0]), axis=1)
    local = np.maximum(dom_area[face[tf]].mean(axis=1), 1e-30)
    level = np.clip(np.ceil(0.5 * np.log2(np.maximum(t_area / local, 1.0))), 0, max_level).astype(np.int64)
    query = SurfaceQuery(dom, sf)
    out_f, out_uv, out_face, out_bary = [], [], [], []
    offset = 0
    for L in np.unique(level):
        sel = np.nonzero(level == L)[0]
        W, T = _subdivision_template(int(L))
        npt = len(W)
        corner_of = np.full(npt, -1)
        for k in range(3):
            corner_of[np.nonzero(W[:, k] == 1.0)[0]] = k
        fmap = np.empty((len(sel), npt), np.int64)
        bmap = np.empty((len(sel), npt, 3))
        for pidx in range(npt):
            if corner_of[pidx] >= 0:
                vid = tf[sel, corner_of[pidx]]
                fmap[:, pidx], bmap[:, pidx] = face[vid], bary[vid]
        inner = np.nonzero(corner_of < 0)[0]
        if len(inner):
            q = np.einsum("pk,nkc->npc", W[inner], pts[sel]).reshape(-1, 3)
            qf, qb, _, _ = query.closest(q)
            fmap[:, inner] = qf.reshape(len(sel), len(inner))
            bmap[:, inner] = qb.reshape(len(sel), len(inner), 3)
        uvp = np.einsum("pk,nkc->npc", W, np.asarray(tgt_corner_uv, np.float64)[sel])  # (n, p, 2)
        faces_l = (np.arange(len(sel))[:, None, None] * npt + T[None]).reshape(-1, 3) + offset
        out_f.append(faces_l)
        out_uv.append(uvp[np.arange(len(sel))[:, None, None], T[None]].reshape(-1, 3, 2))
        out_face.append(fmap.reshape(-1))
        out_bary.append(bmap.reshape(-1, 3))
        offset += len(sel) * npt
    return np.concatenate(out_f), np.concatenate(out_uv), np.concatenate(out_face), np.concatenate(out_bary)


def bake_texture(
    src_faces,
    src_corner_uv,
    src_image,
    tgt_faces,
    tgt_corner_uv,
    tgt_to_src_face,
    tgt_to_src_bary,
    size: tuple[int, int] | int | None = None,
    padding: int = 16,
    progress: Progress | None = None,
    src_vertices=None,
    wrap: str = "repeat",
    background=0,
    src_uv_on_target=None,
    resolution=None,
    tgt_vertices=None,
    fitted_vertices=None,
    refine_levels: int = 4,
) -> np.ndarray:
    """Re-bake the source texture into the target's own UV layout.

    Parameters
    ----------
    src_faces : (ms, 3) int, src_corner_uv : (ms, 3, 2) float  source triangles and their corner UVs
    src_image : (H, W) or (H, W, C) uint8 / uint16 / float  the source texture (row 0 = top, v = 1)
    tgt_faces : (mt, 3) int, tgt_corner_uv : (mt, 3, 2) float  target triangles and their own UVs
    tgt_to_src_face : (nt,) int, tgt_to_src_bary : (nt, 3) float  the map at target vertices
    size : (H2, W2) or an int (square) of the output; default the source image's size
    padding : int  texels of dilation around every island
    progress : optional :class:`engine.progress.Progress` or ``callback(stage, fraction)``
        (stages "uv", "raster", "sample", "dilate"; cancellable)
    src_vertices : optional (ns, 3) float  source positions, for seam-straddling triangles
        (see :func:`engine.transfer.uv.transfer_uvs`)
    wrap : "repeat" or "clamp"  how source UVs outside [0, 1] are sampled
    background : value of texels no island reaches (after padding)
    src_uv_on_target : optional (mt, 3, 2) float  the source UVs of every target corner, when
        already computed by :func:`engine.transfer.uv.transfer_uvs` (skips that step)
    resolution : another name for ``size`` (either may be given, not both)
    tgt_vertices : optional (nt, 3) float  target positions; with ``fitted_vertices`` (or
        ``src_vertices``) target triangles larger than the source triangles under them are
        split (up to ``refine_levels`` times) and the new points mapped exactly, instead of
        interpolating the map linearly across them (see :func:`refine_target`)
    fitted_vertices : optional (ns, 3) float  ``Correspondence.fitted_vertices``

    Returns
    -------
    (H2, W2, C) image with the dtype of ``src_image`` (a 2-D input gives (H2, W2)).
    """
    img = check_image(src_image, "source texture")
    if wrap not in WRAPS:
        raise InputError(f"texture bake: wrap must be one of {', '.join(WRAPS)}, got {wrap!r}")
    if resolution is not None:
        if size is not None:
            raise InputError("texture bake: give size or resolution, not both")
        size = resolution
    if size is None:
        size = img.shape[:2]
    if isinstance(size, (int, np.integer)) or (isinstance(size, np.ndarray) and size.ndim == 0):
        size = (int(size), int(size))
    try:
        H2, W2 = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise InputError(f"texture bake: size must be (height, width) or an int, got {size!r}") from None
    if H2 < 1 or W2 < 1 or H2 * W2 > 1 << 28:
        raise InputError(f"texture bake: output size {H2}x{W2} is out of range (1 .. 16384x16384)")
    padding = int(padding)
    if padding < 0:
        raise InputError(f"texture bake: padding must be >= 0, got {padding}")
    sf = check_faces(src_faces, "source")
    check_corner_uv(src_corner_uv, len(sf), "source")
    face, bary = check_map(tgt_to_src_face, tgt_to_src_bary, len(sf), "target->source map")
    tf = check_faces(tgt_faces, "target", len(face))
    tuv = check_corner_uv(tgt_corner_uv, len(tf), "target")
    prog = as_progress(progress, STAGES)

    if prog is not None:
        prog.stage("uv")
    if src_uv_on_target is not None:
        src_uv_on_target = check_corner_uv(src_uv_on_target, len(tf), "src_uv_on_target")
    elif tgt_vertices is not None and (fitted_vertices is not None or src_vertices is not None) and refine_levels > 0:
        tf, tuv, face, bary = refine_target(sf, tgt_vertices, tf, tuv, face, bary, src_vertices=src_vertices,
                                            fitted_vertices=fitted_vertices, max_level=int(refine_levels))
        src_uv_on_target = transfer_uvs(sf, src_corner_uv, tf, face, bary, src_vertices=src_vertices).corner_uv
    else:
        src_uv_on_target = transfer_uvs(sf, src_corner_uv, tf, face, bary, src_vertices=src_vertices).corner_uv
    src_uv_on_target = np.asarray(src_uv_on_target, np.float64)

    if prog is not None:
        prog.stage("raster")
    span_face, span_y, span_x, span_len = raster_spans(tuv, (H2, W2))

    if prog is not None:
        prog.stage("sample")
    H, W, C = img.shape
    # per target triangle: the affine map from output pixel coordinates to source pixel coordinates
    tx, ty = _pixel_coords(tuv, H2, W2)
    sx, sy = _pixel_coords(src_uv_on_target, H, W)
    e1 = np.stack([tx[:, 1] - tx[:, 0], ty[:, 1] - ty[:, 0]], axis=1)
    e2 = np.stack([tx[:, 2] - tx[:, 0], ty[:, 2] - ty[:, 0]], axis=1)
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) > 1e-300, det, 1.0)
    inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], -1), np.stack([-e1[:, 1], e1[:, 0]], -1)], 1) / det[:, None, None]
    S = np.stack([np.stack([sx[:, 1] - sx[:, 0], sx[:, 2] - sx[:, 0]], -1),
                  np.stack([sy[:, 1] - sy[:, 0], sy[:, 2] - sy[:, 0]], -1)], 1)  # (mt, 2, 2)
    Mt = np.einsum("nij,njk->nik", S, inv)  # d(source px) / d(output px)
    ox = np.floor(tx[:, 0])
    oy = np.floor(ty[:, 0])  # integer origin per triangle keeps float32 offsets small
    base_x = sx[:, 0] + Mt[:, 0, 0] * (ox - tx[:, 0]) + Mt[:, 0, 1] * (oy - ty[:, 0])
    base_y = sy[:, 0] + Mt[:, 1, 0] * (ox - tx[:, 0]) + Mt[:, 1, 1] * (oy - ty[:, 0])
    m32 = Mt.astype(np.float32)
    ox_i, oy_i = ox.astype(np.int64), oy.astype(np.int64)
    padded = _padded(img, wrap)
    out = np.zeros((C, H2 * W2), np.float32)
    covered = np.zeros(H2 * W2, bool)
    step = 1 << 15
    total = len(span_face)
    for lo in range(0, total, step):
        f, px, py = _span_texels(span_face, span_y, span_x, span_len, lo, min(lo + step, total))
        dx = (px - ox_i[f]).astype(np.float32)
        dy = (py - oy_i[f]).astype(np.float32)
        qx = base_x[f] + (m32[f, 0, 0] * dx + m32[f, 0, 1] * dy)
        qy = base_y[f] + (m32[f, 1, 0] * dx + m32[f, 1, 1] * dy)
        idx = py * W2 + px
        vals = _sample_pixels(padded, H, W, qx, qy, wrap)
        for c in range(C):
            out[c, idx] = vals[c]
        covered[idx] = True
        if prog is not None:
            prog.update(min(1.0, (lo + step) / max(total, 1)))
    out = np.ascontiguousarray(out.T).reshape(H2, W2, C)
    covered = covered.reshape(H2, W2)

    if prog is not None:
        prog.stage("dilate")
    reached = dilate(out, covered, padding)
    out[~reached] = background
    if prog is not None:
        prog.update(1.0)

    if img.dtype.kind in "ui":
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(img.dtype)
    else:
        out = out.astype(img.dtype)
    return out[:, :, 0] if np.asarray(src_image).ndim == 2 else out
