"""The pre- and post-processing around MediaPipe's Blaze models, in numpy (and OpenCV's warp).

MediaPipe's solutions wrap each ``.tflite`` model in a graph of calculators: the detector sees
the whole image letterboxed into its square input, its anchor-relative boxes and key points
are decoded, merged by weighted non-maximum suppression, turned into a rotated region of
interest; the landmark model sees that region cropped and turned upright, and its landmarks
are mapped back into the image. This module is those calculators, written from MediaPipe's
graph definitions (0.10.14: ``pose_detection_cpu``, ``pose_landmark_by_roi_cpu``,
``palm_detection_cpu``, ``hand_landmark_cpu``) so that any runtime that executes the model
files (``engine.keypoints.litert_models``) gives the solutions' landmarks.

Coordinates are MediaPipe's normalised ones: x to the right, y down, both in [0, 1] of the
image's width and height. Images are (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rect:
    """A rotated rectangle in normalised image coordinates (MediaPipe's NormalizedRect).

    rotation : radians, clockwise on the image (y points down), 0 = upright
    """

    x_center: float
    y_center: float
    width: float
    height: float
    rotation: float = 0.0


@dataclass(frozen=True)
class Detections:
    """Detector output after suppression, best first.

    boxes : (n, 4) float64 xmin, ymin, xmax, ymax (normalised)
    keypoints : (n, k, 2) float64 (normalised)
    scores : (n,) float64 in [0, 1]
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def ssd_anchors(input_size: int, strides: tuple[int, ...], offset: float = 0.5) -> np.ndarray:
    """Anchor centres of MediaPipe's SsdAnchorsCalculator with ``fixed_anchor_size`` and one
    aspect ratio (1.0): two anchors per cell and layer, consecutive layers of one stride
    sharing a grid.

    Returns (n, 2) float64 (x, y) normalised; n = 2254 for the pose detector's (224,
    (8, 16, 32, 32, 32)), 2016 for the palm detector's (192, (8, 16, 16, 16)).
    """
    centres = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = 2 * (last - layer)  # aspect ratio 1.0 and the interpolated scale, per layer
        cells = math.ceil(input_size / strides[layer])
        c = (np.arange(cells, dtype=np.float64) + offset) / cells
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(centres, axis=0)


def decode_boxes(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, scale: float,
                 num_keypoints: int, min_score: float) -> Detections:
    """MediaPipe's TensorsToDetectionsCalculator (``reverse_output_order``: x, y, w, h; fixed
    anchor size; sigmoid scores clipped at +-100): the detections scoring at least ``min_score``,
    unsorted.

    raw_boxes : (n, 4 + 2 k) float32, raw_scores : (n,) float32 logits, anchors : (n, 2)
    """
    scores = sigmoid(np.clip(raw_scores.astype(np.float64), -100.0, 100.0))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes[keep].astype(np.float64) / scale
    anc = anchors[keep]
    xc, yc = raw[:, 0] + anc[:, 0], raw[:, 1] + anc[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kps = raw[:, 4:4 + 2 * num_keypoints].reshape(-1, num_keypoints, 2) + anc[:, None, :]
    return Detections(boxes, kps, scores[keep])


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(det: Detections, threshold: float = 0.3, max_out: int | None = None) -> Detections:
    """MediaPipe's weighted non-maximum suppression (IoU): the best remaining detection absorbs
    every one overlapping it by more than ``threshold`` (itself included), its box and key
    points become their score-weighted mean, its score stays its own. Best first."""
    order = np.argsort(-det.scores, kind="stable")
    boxes, kps, scores = det.boxes[order], det.keypoints[order], det.scores[order]
    remaining = np.arange(len(scores))
    out_b, out_k, out_s = [], [], []
    while remaining.size and (max_out is None or len(out_s) < max_out):
        top = remaining[0]
        similar = _iou(boxes[top], boxes[remaining]) > threshold
        group = remaining[similar] if similar.any() else remaining[:1]
        wts = scores[group]
        out_b.append((boxes[group] * wts[:, None]).sum(0) / wts.sum())
        out_k.append((kps[group] * wts[:, None, None]).sum(0) / wts.sum())
        out_s.append(scores[top])
        if not similar.any():  # a degenerate box absorbs nothing, not even itself: MediaPipe stops
            break
        remaining = remaining[~similar]
    k = det.keypoints.shape[1]
    return Detections(np.array(out_b, np.float64).reshape(-1, 4), np.array(out_k, np.float64).reshape(-1, k, 2),
                      np.array(out_s, np.float64))


def letterbox(width: int, height: int, rect: Rect | None) -> tuple[Rect, np.ndarray]:
    """MediaPipe's PadRoi for a square tensor with ``keep_aspect_ratio``: the region (the whole
    image where ``rect`` is None) grown to a square in pixels, and the padding it added as
    fractions of the tensor (left, top, right, bottom)."""
    if rect is None:
        rect = Rect(0.5, 0.5, 1.0, 1.0, 0.0)
    rw, rh = rect.width * width, rect.height * height
    pad = np.zeros(4)
    if rh < rw:  # the tensor is taller than the region: pad top and bottom
        pad[[1, 3]] = (1.0 - rh / rw) / 2
        rh = rw
    elif rw < rh:
        pad[[0, 2]] = (1.0 - rw / rh) / 2
        rw = rh
    return Rect(rect.x_center, rect.y_center, rw / width, rh / height, rect.rotation), pad


def crop(image: np.ndarray, rect: Rect, out_size: int, value_range: tuple[float, float],
         zero_border: bool) -> np.ndarray:
    """MediaPipe's ImageToTensorCalculator on the CPU: the rotated ``rect`` (already padded to
    the tensor's aspect) warped onto an ``out_size`` square (OpenCV, bilinear, on the uint8
    image), then scaled to ``value_range``.

    Returns (1, out_size, out_size, 3) float32.
    """
    import cv2

    h, w = image.shape[:2]
    box = ((rect.x_center * w, rect.y_center * h), (rect.width * w, rect.height * h), math.degrees(rect.rotation))
    src = cv2.boxPoints(box).astype(np.float32)  # bottom-left, top-left, top-right, bottom-right
    s = float(out_size)
    dst = np.array([[0, s], [0, 0], [s, 0], [s, s]], np.float32)
    warp = cv2.getPerspectiveTransform(src, dst)
    border = cv2.BORDER_CONSTANT if zero_border else cv2.BORDER_REPLICATE
    patch = cv2.warpPerspective(image, warp, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=border)
    lo, hi = value_range
    tensor = patch.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    return tensor[None]


def remove_letterbox(points: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Normalised points (..., 2) in a padded tensor -> in the region it was padded from."""
    left, top, right, bottom = pad
    out = np.array(points, np.float64, copy=True)
    out[..., 0] = (out[..., 0] - left) / (1.0 - left - right)
    out[..., 1] = (out[..., 1] - top) / (1.0 - top - bottom)
    return out


def project(points: np.ndarray, rect: Rect) -> np.ndarray:
    """MediaPipe's LandmarkProjectionCalculator: normalised points (k, 2) of the (unpadded)
    region -> normalised image coordinates."""
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    return np.stack([(c * x - s * y) * rect.width + rect.x_center,
                     (s * x + c * y) * rect.height + rect.y_center], axis=1)


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def keypoint_rotation(start: np.ndarray, end: np.ndarray, width: int, height: int,
                      target: float = math.pi / 2) -> float:
    """The rotation that turns the image vector start -> end (normalised points) to ``target``
    (90 degrees: pointing up), as MediaPipe's DetectionsToRectsCalculator computes it in pixels."""
    x0, y0 = start[0] * width, start[1] * height
    x1, y1 = end[0] * width, end[1] * height
    return normalize_radians(target - math.atan2(-(y1 - y0), x1 - x0))


def transform_rect(rect: Rect, width: int, height: int, scale: float, shift_y: float = 0.0) -> Rect:
    """MediaPipe's RectTransformationCalculator with ``square_long``: shift along the rect's own
    up axis (a fraction of its height), square it on its long side in pixels, scale it."""
    xc, yc, w, h, r = rect.x_center, rect.y_center, rect.width, rect.height, rect.rotation
    if r == 0.0:
        yc += h * shift_y
    else:
        xc += (-height * h * shift_y * math.sin(r)) / width
        yc += (height * h * shift_y * math.cos(r)) / height
    side = max(w * width, h * height)
    return Rect(xc, yc, side / width * scale, side / height * scale, r)


def alignment_rect(start: np.ndarray, end: np.ndarray, width: int, height: int) -> Rect:
    """MediaPipe's AlignmentPointsRectsCalculator: a square centred on ``start`` whose half side
    is the pixel distance to ``end``, turned so that start -> end points up."""
    x0, y0 = start[0] * width, start[1] * height
    x1, y1 = end[0] * width, end[1] * height
    size = 2.0 * math.hypot(x1 - x0, y1 - y0)
    return Rect(start[0], start[1], size / width, size / height, keypoint_rotation(start, end, width, height))


def box_rect(box: np.ndarray, rotation: float) -> Rect:
    """MediaPipe's DetectionsToRectsCalculator: the detection's box as a rect, with a rotation."""
    return Rect((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1], rotation)


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray, kernel: int = 7,
                        min_confidence: float = 0.5) -> np.ndarray:
    """MediaPipe's RefineLandmarksFromHeatmapCalculator: each landmark moved to the
    sigmoid-weighted mean cell of its heatmap channel in a ``kernel`` window round it, where
    the window's highest confidence reaches ``min_confidence``.

    points : (k, 2) normalised in the model's input; heatmap : (hh, hw, k) float32 logits
    """
    hh, hw, _ = heatmap.shape
    out = np.array(points, np.float64, copy=True)
    half = (kernel - 1) // 2
    for i, (x, y) in enumerate(points):
        col, row = int(x * hw), int(y * hh)  # truncation toward zero, as C++'s float -> int
        if not (0 <= col < hw and 0 <= row < hh):
            continue
        r0, r1 = max(0, row - half), min(hh, row + half + 1)
        c0, c1 = max(0, col - half), min(hw, col + half + 1)
        conf = sigmoid(heatmap[r0:r1, c0:c1, i])
        total = conf.sum()
        if conf.max() >= min_confidence and total > 0:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[i, 0] = (cols * conf).sum() / hw / total
            out[i, 1] = (rows * conf).sum() / hh / total
    return out


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
