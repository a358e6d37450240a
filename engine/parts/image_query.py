"""The 2D side of BSB: an image, its object mask, the clicked pixel, its part mask, per-pixel features.

The paper takes the masks from SAM. Without a segmentation model, the object
mask comes from the alpha channel (or is the whole image), and the part mask
from the user (a painted mask, a box) or from region growing around the
click on the per-pixel features: a random walker on the pixel grid whose edge
weights follow feature similarity, seeded by the click (foreground) and by
the object pixels least like it (background).

All pixel arrays here are on a *working grid* of (h, w) cells (the image
downsampled so that BSB stays fast); ``ImageQuery.to_grid`` maps image pixel
coordinates to it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..arrays import unit_rows
from ..errors import InputError
from .segment import random_walker

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path_or_array, name: str = "image") -> np.ndarray:
    """Read an image as (H, W, 4) float32 RGBA in [0, 1] (alpha 1 where the file has none).

    Accepts a file path (PNG, JPEG, BMP, TIFF, WebP) or an (H, W), (H, W, 3) or (H, W, 4)
    array (uint8 or float in [0, 1]).
    """
    if isinstance(path_or_array, (str, os.PathLike)):
        path = os.fspath(path_or_array)
        base = os.path.basename(path)
        if not os.path.exists(path):
            raise InputError(f"{path}: image file not found")
        ext = os.path.splitext(path)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            raise InputError(f"{base}: unsupported image format {ext or '(no extension)'!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
        try:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("RGBA"), np.float32) / 255.0
        except Exception as exc:
            raise InputError(f"{base}: cannot read image ({exc.__class__.__name__})") from None
        return arr
    arr = np.asarray(path_or_array)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InputError(f"{name}: expected an (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: image has NaN or infinite values")
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.ones(arr.shape[:2] + (1,), np.float32)], axis=2)
    return np.clip(arr, 0.0, 1.0)


def load_mask(path_or_array, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A user part mask as (H, W) bool: an image file (non-zero / opaque = part), a .npy or an array."""
    if isinstance(path_or_array, (str, os.PathLike)):
        path = os.fspath(path_or_array)
        if path.lower().endswith(".npy"):
            if not os.path.exists(path):
                raise InputError(f"{path}: mask file not found")
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"{os.path.basename(path)}: cannot read mask ({exc.__class__.__name__})") from None
        else:
            rgba = load_image(path, name)
            arr = (rgba[..., :3].max(-1) > 0.5) & (rgba[..., 3] > 0.5)
    else:
        arr = np.asarray(path_or_array)
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr.max(-1)
    if arr.shape != tuple(shape):
        raise InputError(f"{name}: mask has shape {arr.shape}, the image is {tuple(shape)}")
    mask = arr.astype(bool)
    if not mask.any():
        raise InputError(f"{name}: the part mask is empty; paint (or box) the part to match")
    return mask


def object_mask_from_alpha(rgba: np.ndarray) -> np.ndarray:
    """(H, W) bool: opaque pixels when the image has transparency, else every pixel."""
    alpha = rgba[..., 3]
    if alpha.min() < 0.99:
        return alpha > 0.5
    return np.ones(alpha.shape, bool)


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool of the pixels inside box (x0, y0, x1, y1) (image pixels, origin top-left)."""
    h, w = shape
    x0, y0, x1, y1 = (float(b) for b in box)
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise InputError("box: coordinates must be finite numbers")
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    c0, c1 = int(np.floor(max(x0, 0))), int(np.ceil(min(x1, w)))
    r0, r1 = int(np.floor(max(y0, 0))), int(np.ceil(min(y1, h)))
    if c1 <= c0 or r1 <= r0:
        raise InputError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) does not overlap the {w}x{h} image")
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def check_click(click, shape: tuple[int, int], object_mask: np.ndarray | None = None) -> tuple[int, int]:
    """Validate a click (x = column, y = row, image pixels) and return (row, col) int."""
    h, w = shape
    try:
        x, y = (float(c) for c in click)
    except Exception:
        raise InputError("click: give two numbers X Y (column, row)") from None
    if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x < w and 0 <= y < h):
        raise InputError(f"click ({x:g}, {y:g}) is outside the {w}x{h} image")
    r, c = int(y), int(x)
    if object_mask is not None and not object_mask[r, c]:
        raise InputError(f"click ({x:g}, {y:g}) is on the background (transparent pixels); click on the object")
    return r, c


def resize_nearest(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W, ...) array to ``shape`` (cell centres)."""
    h, w = a.shape[:2]
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int), w - 1)
    return a[rows][:, cols]


def grid_graph(features: np.ndarray, valid: np.ndarray, feature_scale: float = 1.0) -> sp.csr_matrix:
    """4-connected pixel graph over (h, w) cells with feature-similarity weights (invalid cells cut off)."""
    h, w, _ = features.shape
    idx = np.arange(h * w).reshape(h, w)
    f = features.reshape(h * w, -1).astype(np.float64)
    pairs = [np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1), np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1)]
    e = np.concatenate(pairs)
    ok = valid.ravel()[e[:, 0]] & valid.ravel()[e[:, 1]]
    e = e[ok]
    d2 = ((f[e[:, 0]] - f[e[:, 1]]) ** 2).sum(1)
    s2 = float(np.median(d2)) if len(d2) else 1.0
    s2 = s2 or 1.0
    wgt = np.maximum(np.exp(-d2 / (4.0 * feature_scale * s2)), 1e-6)
    n = h * w
    W = sp.coo_matrix((np.r_[wgt, wgt], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
    return W.tocsr()


@dataclass
class ImageQuery:
    """An image prepared for BSB on a working grid of (h, w) cells.

    features : (h, w, d) float32 unit-norm per-cell features
    object_mask : (h, w) bool
    part_mask : (h, w) bool (the query segment)
    click : (row, col) on the grid
    scale : (sy, sx) image pixels per grid cell
    """

    features: np.ndarray
    object_mask: np.ndarray
    part_mask: np.ndarray
    click: tuple[int, int]
    scale: tuple[float, float]

    def __post_init__(self) -> None:
        self._W = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.features.shape[:2]

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(p, d) features, (p,) part mask, (p,) object mask, flat click index."""
        h, w = self.shape
        return (self.features.reshape(h * w, -1), self.part_mask.ravel(), self.object_mask.ravel(),
                self.click[0] * w + self.click[1])

    def grow(self, cell: int, fraction: float = 0.5) -> np.ndarray:
        """Region grown from a flat cell index: random walker on feature similarity (flat (p,) bool)."""
        if self._W is None:
            self._W = grid_graph(self.features, self.object_mask)
        return grow_region(self._W, self.features.reshape(-1, self.features.shape[-1]), self.object_mask.ravel(), cell, fraction)


def grow_region(W: sp.csr_matrix, features: np.ndarray, valid: np.ndarray, cell: int, fraction: float = 0.5) -> np.ndarray:
    """Random-walker segment around ``cell``; background seeds: the ``fraction`` of valid cells least similar."""
    f = unit_rows(features)
    sim = f @ f[cell]
    cand = np.nonzero(valid)[0]
    k = max(1, int(fraction * len(cand)))
    bg = cand[np.argpartition(sim[cand], k - 1)[:k]]
    bg = np.r_[bg, np.nonzero(~valid)[0]]
    prob = random_walker(W, np.array([cell]), np.setdiff1d(bg, [cell]))
    out = (prob > 0.5) & valid
    out[cell] = True
    return out


def pixel_features(rgba: np.ndarray, backbone, grid: int = 32) -> np.ndarray:
    """Per-cell features (grid_h, grid_w, d) float32 unit-norm from a 2D backbone.

    backbone : callable (1, 3, H, W) torch float in [0, 1] -> (1, C, h, w) feature maps
    (``engine.features.dino.DinoFeatures``); transparent pixels are composited on white.
    """
    import torch
    import torch.nn.functional as F

    rgb = rgba[..., :3] * rgba[..., 3:4] + (1.0 - rgba[..., 3:4])
    x = torch.as_tensor(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()
    with torch.no_grad():
        fmap = backbone(x)
        h, w = rgba.shape[:2]
        gh = max(2, int(round(grid * min(1.0, h / w))))
        gw = max(2, int(round(grid * min(1.0, w / h))))
        fmap = F.interpolate(fmap.float(), size=(gh, gw), mode="bilinear", align_corners=False)
        fmap = F.normalize(fmap, dim=1)
    return fmap[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def prepare_query(rgba: np.ndarray, features: np.ndarray, click=None, mask=None, box=None,
                  fraction: float = 0.5) -> ImageQuery:
    """Put an image, its per-cell features and the user's input together into an :class:`ImageQuery`.

    rgba : (H, W, 4) float32 image; features : (h, w, d) per-cell features
    click : (x, y) image pixel or None (then the mask/box centroid plays the click)
    mask : user part mask (path, (H, W) array) or None; box : (x0, y0, x1, y1) or None
    """
    H, W_ = rgba.shape[:2]
    h, w = features.shape[:2]
    obj_full = object_mask_from_alpha(rgba)
    part_full = None
    if mask is not None:
        part_full = load_mask(mask, (H, W_))
    elif box is not None:
        part_full = box_mask(box, (H, W_))
    if part_full is not None:
        part_full = part_full & obj_full
        if not part_full.any():
            raise InputError("the part mask lies entirely on the background (transparent pixels)")
    if click is None:
        if part_full is None:
            raise InputError("give a click, a mask or a box to say which part to match")
        rr, cc = np.nonzero(part_full)
        pick = np.argmin((rr - rr.mean()) ** 2 + (cc - cc.mean()) ** 2)
        click = (cc[pick] + 0.5, rr[pick] + 0.5)
    r, c = check_click(click, (H, W_), obj_full)
    sy, sx = H / h, W_ / w
    obj = resize_nearest(obj_full, (h, w))
    gr, gc = min(int(r / sy), h - 1), min(int(c / sx), w - 1)
    obj[gr, gc] = True
    f = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
    q = ImageQuery(f.astype(np.float32), obj, np.zeros((h, w), bool), (gr, gc), (sy, sx))
    if part_full is not None:
        part = resize_nearest(part_full, (h, w)) & obj
        part[gr, gc] = part[gr, gc] or bool(part_full[r, c])
        if not part.any():
            raise InputError("the part mask is too small for the feature grid; paint a larger region")
    else:
        part = q.grow(gr * w + gc, fraction).reshape(h, w)
    if part.sum() >= obj.sum():
        raise InputError("the part mask covers the whole object; nothing to tell it apart from")
    q.part_mask = part
    return q
