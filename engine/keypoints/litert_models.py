"""The body and hand keypoint models run by the model runner: MediaPipe's ``.tflite`` files
through Google's LiteRT interpreter (``ai-edge-litert``: wheels for CPython 3.11-3.13 on Linux,
Windows and macOS), with MediaPipe's pre- and post-processing in ``engine.keypoints.blaze``.

The same models and the same steps as ``mediapipe.solutions`` pose (full, static images) and
hands (full, one hand, static images), without the mediapipe package: the engine's keypoints on
every Python Blender embeds. ``tests/test_litert_models.py`` holds both back ends to the same
landmarks on the same renders.
"""
from __future__ import annotations

import threading

import numpy as np

from ..errors import BackendUnavailable
from . import blaze
from .mediapipe_files import model_path, models_status
from .pose_model import BODY_KEYPOINTS, FACE_NAMES, HAND_KEYPOINTS, ServedModel, muted_stderr

# the pose landmark model's input and the presence threshold of MediaPipe's pose graph
# (pose_landmark_by_roi_cpu: ThresholdingCalculator 0.5, the solution's min_tracking_confidence)
_POSE_INPUT, _POSE_PRESENCE = 256, 0.5
_HAND_INPUT, _HAND_PRESENCE = 224, 0.5
# SSD anchors of the two detectors (pose_detection_cpu / palm_detection_cpu graphs)
_POSE_ANCHORS = blaze.ssd_anchors(224, (8, 16, 32, 32, 32))
_PALM_ANCHORS = blaze.ssd_anchors(192, (8, 16, 16, 16))
# the face detector (short range, 128 px) and the face mesh (192 px, 468 points) of MediaPipe's
# face_landmark_front_cpu graph; the face flag is a logit there (TensorsToFloats with sigmoid)
_FACE_ANCHORS = blaze.ssd_anchors(128, (8, 16, 16, 16))
_FACE_INPUT, _FACE_PRESENCE = 192, 0.5


def litert_status() -> tuple[bool, str]:
    """Whether the runner can run here (the LiteRT package and the model files), without importing it."""
    from importlib.util import find_spec

    for module, package in (("ai_edge_litert", "ai-edge-litert"), ("cv2", "opencv-python-headless")):
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return False, (f"the {package} package is not installed "
                           "(pip install 'stablewrap-engine[keypoints]')")
    return models_status(("pose_detection", "pose_landmark_full", "palm_detection_full", "hand_landmark_full",
                          "face_detection_short_range", "face_landmark"))


class _Network:
    """One ``.tflite`` model in a LiteRT interpreter: float32 tensors in, named outputs out."""

    def __init__(self, name: str, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except Exception as exc:  # noqa: BLE001  (a broken install: one line naming the package)
            raise BackendUnavailable(f"keypoints: ai-edge-litert cannot be imported ({exc.__class__.__name__}: {exc})") from None
        path = model_path(name)
        with muted_stderr():  # "Created TensorFlow Lite XNNPACK delegate", on the process's stderr
            try:
                self.interp = Interpreter(model_path=str(path), num_threads=threads)
                self.interp.allocate_tensors()
            except Exception as exc:  # noqa: BLE001  (a damaged file)
                raise BackendUnavailable(f"keypoints: LiteRT cannot load {path.name} ({exc})") from None
        self.input = self.interp.get_input_details()[0]["index"]
        self.outputs = [d["index"] for d in self.interp.get_output_details()]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.interp.set_tensor(self.input, tensor)
        self.interp.invoke()
        return [self.interp.get_tensor(i) for i in self.outputs]


class _LiteRTModel(ServedModel):
    """What the two runner models share: the availability check and their networks, loaded
    once per process."""

    files: tuple[str, ...] = ()
    threads = 2  # XNNPACK threads: the two cores CI and small machines have; the renders wait on it
    _networks: dict = {}
    _lock = threading.Lock()

    def __init__(self, min_detection: float) -> None:
        ok, why = litert_status()
        if not ok:
            raise BackendUnavailable(f"keypoints: {why}")
        self.min_detection = float(min_detection)

    def _load(self):
        for f in self.files:
            if f not in self._networks:
                self._networks[f] = _Network(f, self.threads)
        return [self._networks[f] for f in self.files]

    def _one(self, nets, img):
        found = self._read(nets, img)
        if found is None:
            return None
        pts, scores = found
        return pts[list(self.index)], scores

    def _read(self, nets, img):
        """All the model's points (n, 2) normalised to the image and the ``index`` points'
        scores (k,), or None."""
        raise NotImplementedError

    def _best_detection(self, detector: _Network, img: np.ndarray, size: int, value_range: tuple[float, float],
                        anchors: np.ndarray, num_keypoints: int):
        """The detector's best detection in normalised image coordinates: (box (4,), key points
        (k, 2)), or None below ``min_detection``. The whole image letterboxed into the detector's
        square (zero border), decoded, merged by weighted suppression (IoU 0.3, both graphs)."""
        h, w = img.shape[:2]
        whole, pad = blaze.letterbox(w, h, None)
        raw_boxes, raw_scores = detector(blaze.crop(img, whole, size, value_range, zero_border=True))
        dets = blaze.decode_boxes(raw_boxes[0], raw_scores[0, :, 0], anchors, float(size), num_keypoints, self.min_detection)
        if not len(dets):
            return None
        dets = blaze.weighted_nms(dets, 0.3, max_out=1)
        box = blaze.remove_letterbox(dets.boxes[0].reshape(2, 2), pad).ravel()
        return box, blaze.remove_letterbox(dets.keypoints[0], pad)

    @staticmethod
    def _on_region(network: _Network, img: np.ndarray, roi: blaze.Rect, size: int):
        """A landmark model on the region ``roi`` of the image (squared, turned upright, cropped
        to its ``size`` input with the edge pixels repeated, in [0, 1]): its outputs, and the map
        of its points (p, 2) in input pixels back to normalised image coordinates."""
        h, w = img.shape[:2]
        padded, pad = blaze.letterbox(w, h, roi)
        outputs = network(blaze.crop(img, padded, size, (0.0, 1.0), zero_border=False))
        return outputs, lambda pts: blaze.project(blaze.remove_letterbox(np.asarray(pts, np.float64) / size, pad), roi)


class LiteRTPose(_LiteRTModel):
    """BlazePose (full) through LiteRT: person detection, then 39 landmarks (33 named) on the
    region the detection gives, refined on the model's heatmaps.

    min_detection : the person detector's threshold; 0.5 is MediaPipe's own default
    """

    name = "litert-pose"
    index = tuple(i for _, i in BODY_KEYPOINTS)
    files = ("pose_detection", "pose_landmark_full")

    def __init__(self, min_detection: float = 0.5) -> None:
        super().__init__(min_detection)

    def _read(self, nets, img):
        detector, landmarks = nets
        h, w = img.shape[:2]
        found = self._best_detection(detector, img, 224, (-1.0, 1.0), _POSE_ANCHORS, 4)
        if found is None:
            return None
        kps = found[1]
        # key point 0: the hips' centre; 1: a point on the circle round the whole body
        roi = blaze.transform_rect(blaze.alignment_rect(kps[0], kps[1], w, h), w, h, 1.25)
        (raw, flag, _mask, heatmap, _world), to_image = self._on_region(landmarks, img, roi, _POSE_INPUT)
        if float(flag.ravel()[0]) < _POSE_PRESENCE:
            return None
        raw = raw.reshape(39, 5).astype(np.float64)
        # the heatmap refines the points in the model's input, normalised to it
        pts = blaze.refine_from_heatmap(raw[:, :2] / _POSE_INPUT, heatmap[0], kernel=7, min_confidence=0.5)
        visibility = blaze.sigmoid(raw[:, 3])
        return to_image(pts * _POSE_INPUT), visibility[list(self.index)]


class LiteRTHands(_LiteRTModel):
    """The hand landmark model (full) through LiteRT, after the palm detector (one hand).

    As ``MediaPipeHands``: the unprefixed ``HAND_KEYPOINTS`` names, every point scored with the
    handedness classifier's confidence (what the mediapipe solution reports).
    """

    name = "litert-hands"
    names = tuple(n for n, _ in HAND_KEYPOINTS)
    index = tuple(i for _, i in HAND_KEYPOINTS)
    files = ("palm_detection_full", "hand_landmark_full")

    def __init__(self, min_detection: float = 0.3) -> None:
        # 0.3 as MediaPipeHands: clay renders have no skin texture
        super().__init__(min_detection)

    def _read(self, nets, img):
        detector, landmarks = nets
        h, w = img.shape[:2]
        found = self._best_detection(detector, img, 192, (0.0, 1.0), _PALM_ANCHORS, 7)
        if found is None:
            return None
        box, kps = found
        # key point 0: the wrist's centre; 2: the middle finger's base
        rect = blaze.box_rect(box, blaze.keypoint_rotation(kps[0], kps[2], w, h))
        roi = blaze.transform_rect(rect, w, h, 2.6, shift_y=-0.5)
        (raw, flag, handedness, _world), to_image = self._on_region(landmarks, img, roi, _HAND_INPUT)
        if float(flag.ravel()[0]) < _HAND_PRESENCE:
            return None
        p = float(handedness.ravel()[0])
        return to_image(raw.reshape(21, 3)[:, :2]), [max(p, 1.0 - p)] * len(self.index)


class LiteRTFace(_LiteRTModel):
    """The face mesh through LiteRT: the short-range face detector, then 468 landmarks on the
    region its eyes turn upright (one face per image, as ``mediapipe.solutions.face_mesh`` in
    static-image mode without the attention model).

    The face mesh reports no per-point score: every point of a found face scores 1 (the caller
    judges points by the agreement of views).
    """

    name = "litert-face"
    names = FACE_NAMES
    index = tuple(range(len(FACE_NAMES)))
    files = ("face_detection_short_range", "face_landmark")

    def __init__(self, min_detection: float = 0.5) -> None:
        super().__init__(min_detection)

    def _read(self, nets, img):
        detector, landmarks = nets
        h, w = img.shape[:2]
        found = self._best_detection(detector, img, 128, (-1.0, 1.0), _FACE_ANCHORS, 6)
        if found is None:
            return None
        box, kps = found
        # key points 0 and 1: the eyes (the image's left one first); turned level, not up
        rect = blaze.box_rect(box, blaze.keypoint_rotation(kps[0], kps[1], w, h, target=0.0))
        roi = blaze.transform_rect(rect, w, h, 1.5)
        (raw, flag), to_image = self._on_region(landmarks, img, roi, _FACE_INPUT)
        if float(blaze.sigmoid(flag.ravel()[0])) < _FACE_PRESENCE:
            return None
        return to_image(raw.reshape(-1, 3)[:, :2]), [1.0] * len(self.index)
