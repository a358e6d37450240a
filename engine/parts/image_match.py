"""Image-to-shape part matching ("Pick from image"): a click on a reference image -> the target part.

Per-pixel DINOv2 features of the image and distilled DINOv2 features of the
target's vertices (:mod:`engine.parts.distill`) live in one feature space; the
BSB rule (:func:`engine.parts.bsb.best_segmentation_buddy`) picks the target
vertex, and the random walker of :mod:`engine.parts.segment` grows the part.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..mesh import as_prepared
from ..progress import Progress
from .bsb import NO_MATCH, best_segmentation_buddy
from .image_query import load_image, pixel_features, prepare_query
from .segment import MeshSegmenter
from .shape_match import PartMatch, clean_mask_to_orig


def match_image_part(
    image,
    target,
    click=None,
    mask=None,
    box=None,
    backbone=None,
    target_features: np.ndarray | None = None,
    device="auto",
    k: int = 100,
    grid: int = 32,
    min_iou: float = 0.0,
    cache_dir=None,
    distill_settings=None,
    views: int = 8,
    resolution: int = 224,
    progress: Progress | None = None,
) -> PartMatch:
    """Find the part of ``target`` that matches the clicked (or masked / boxed) region of ``image``.

    Parameters
    ----------
    image : image path (.png .jpg ...) or (H, W, 3|4) array; transparent pixels are background
    target : mesh path, ``(V, F)`` arrays, ``engine.Mesh`` or ``PreparedMesh``
    click : (x, y) image pixel (column, row from the top-left)
    mask : optional user part mask (path or (H, W) array); box : optional (x0, y0, x1, y1)
    backbone : callable (K, 3, H, W) -> (K, C, h, w) feature maps; default: DINOv2 from the
        local model store (``engine.features.semantic.load_backbones("dino")``)
    target_features : optional precomputed (n, C) per-vertex features of the (clean) target
        in the backbone's space (skips distillation)
    distill_settings : :class:`engine.parts.distill.DistillSettings` (MLP size, steps);
        views / resolution : renders used for the distillation (cached per mesh)
    Returns a :class:`PartMatch` (target vertex indices in the caller's order; -1 = no match).
    """
    rgba = load_image(image)
    tgt = as_prepared(target, "target")
    if click is None and mask is None and box is None:
        raise InputError("give a click (x, y), a part mask or a box")
    if click is not None:
        from .image_query import check_click, object_mask_from_alpha

        check_click(click, rgba.shape[:2], object_mask_from_alpha(rgba))  # fail before loading models
    if backbone is None:
        from ..features.semantic import load_backbones

        backbone = load_backbones("dino", device=device).dino
    feats = pixel_features(rgba, backbone, grid)
    query = prepare_query(rgba, feats, click=click, mask=mask, box=box)
    if target_features is None:
        from .distill import distilled_features

        dev = getattr(backbone, "device", "cpu")
        target_features = distilled_features(tgt.mesh, backbone, views=views, resolution=resolution,
                                             settings=distill_settings, device=dev, cache_dir=cache_dir, progress=progress)
    tf = np.asarray(target_features, np.float32)
    if tf.shape != (tgt.mesh.n_vertices, feats.shape[-1]):
        raise InputError(f"target features must have shape ({tgt.mesh.n_vertices}, {feats.shape[-1]}), got {tf.shape}")
    ef, part, obj, click_idx = query.flat()
    res = best_segmentation_buddy(ef[click_idx], ef, part, tf, segment_element=query.grow, object_mask=obj,
                                  k=k, min_iou=min_iou)
    if not res.matched:
        return PartMatch(np.zeros(0, np.int32), NO_MATCH, 0.0, res)
    tmask = MeshSegmenter(tgt.mesh, tf).grow(res.vertex)
    return PartMatch(clean_mask_to_orig(tgt, tmask), int(tgt.clean_to_orig[res.vertex]), res.score, res)
