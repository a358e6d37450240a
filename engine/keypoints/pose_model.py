"""2D body keypoint models: the interface, the choice of back end, and MediaPipe's solutions.

A :class:`PoseModel` takes rendered images and returns, per image, the pixel
position and visibility of the named body keypoints (or None where no body was
found). The models are MediaPipe's BlazePose and hand landmarks (the ``.tflite``
files of the ``mediapipe`` 0.10.14 wheel: no download), run by one of two back
ends with the same landmarks:

- ``mediapipe``: the mediapipe package's solutions (Python <= 3.12 where it is installed);
- ``litert``: the model runner (``engine.keypoints.litert_models``: LiteRT plus MediaPipe's
  pre- and post-processing in numpy), on every Python the engine supports, 3.13 included.

``STABLEWRAP_KEYPOINT_BACKEND`` = ``auto`` (default: mediapipe where installed, else the
runner), ``mediapipe`` or ``litert`` chooses. The models are rotation invariant (a body upside
down or lying in the image is found and its keypoints keep their names), and tell left from
right in back views too.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import types
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailable, InputError

BACKEND_ENV = "STABLEWRAP_KEYPOINT_BACKEND"
BACKENDS = ("auto", "mediapipe", "litert")

# The body keypoints used (MediaPipe pose indices). Left / right are the body's own sides.
# Left out: the inner / outer eye corners, mouth corners, pinky and thumb (they add little
# beyond eye, nose and index tip, and are the least stable on untextured renders).
BODY_KEYPOINTS = (
    ("nose", 0), ("left_eye", 2), ("right_eye", 5), ("left_ear", 7), ("right_ear", 8),
    ("left_shoulder", 11), ("right_shoulder", 12), ("left_elbow", 13), ("right_elbow", 14),
    ("left_wrist", 15), ("right_wrist", 16), ("left_hand", 19), ("right_hand", 20),
    ("left_hip", 23), ("right_hip", 24), ("left_knee", 25), ("right_knee", 26),
    ("left_ankle", 27), ("right_ankle", 28), ("left_heel", 29), ("right_heel", 30),
    ("left_toe", 31), ("right_toe", 32),
)
BODY_NAMES = tuple(n for n, _ in BODY_KEYPOINTS)
# Hand keypoints (MediaPipe hand landmark indices): the wrist, the thumb tip, and the base and
# tip of each finger: enough to orient a hand and place every finger; the middle joints add
# little on a clay render
HAND_KEYPOINTS = (
    ("hand_wrist", 0), ("thumb_tip", 4), ("index_base", 5), ("index_tip", 8), ("middle_base", 9),
    ("middle_tip", 12), ("ring_tip", 16), ("pinky_base", 17), ("pinky_tip", 20),
)
HAND_NAMES = tuple(f"{side}_{n}" for side in ("left", "right") for n, _ in HAND_KEYPOINTS)
# The face mesh's 468 points by index (MediaPipe's canonical face model: 1 the nose tip, 33 / 263
# the subject's right / left outer eye corners, 61 / 291 the mouth corners, 152 the chin)
FACE_NAMES = tuple(f"face_{i:03d}" for i in range(468))
ALL_NAMES = BODY_NAMES + HAND_NAMES


def mirror_name(name: str) -> str:
    """The name of the keypoint on the other side of the body ("left_knee" <-> "right_knee")."""
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


@dataclass
class ViewKeypoints:
    """The keypoints found in one image.

    xy : (k, 2) float64 pixel coordinates (x to the right, y down; pixel centres at +0.5)
    visibility : (k,) float64 in [0, 1], the model's confidence that the point is in view
    """

    xy: np.ndarray
    visibility: np.ndarray


class PoseModel:
    """Interface: named 2D keypoints in images."""

    name = "pose"
    names: tuple[str, ...] = BODY_NAMES

    def detect(self, images: np.ndarray) -> list[ViewKeypoints | None]:
        """images : (K, H, W, 3) uint8 RGB; returns one ViewKeypoints (or None: no body) per image."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Load what the first ``detect`` would (a caller runs this on another thread while it
        renders); never raises: ``detect`` reports what failed."""


@contextlib.contextmanager
def muted_stderr():
    """Send file descriptor 2 to /dev/null for the block (C++ logging that Python cannot filter)."""
    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no real stderr (embedded interpreters): nothing to mute
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def mediapipe_status() -> tuple[bool, str]:
    """Whether the MediaPipe pose model can run here (without importing it: that costs a second)."""
    from importlib.util import find_spec

    if find_spec("mediapipe") is None:
        return False, ("the mediapipe package is not installed (pip install --no-deps mediapipe==0.10.14 "
                       "plus pip install 'stablewrap-engine[keypoints]'; scripts/dev does both)")
    return True, "ok"


class _PyplotOnDemand(types.ModuleType):
    """Stands in for ``matplotlib.pyplot`` while mediapipe imports: its drawing helpers import
    pyplot at load (0.25 s of mediapipe's 0.4 s import, paid by every process that detects
    keypoints: each batch match, each CLI run) and the pose graphs never use it; an attribute
    asked of it later imports the real one."""

    def __getattr__(self, name: str):
        import importlib

        return getattr(importlib.import_module("matplotlib.pyplot"), name)


def _import_solutions():
    """``mediapipe.python.solutions`` without loading ``matplotlib.pyplot`` (see _PyplotOnDemand)."""
    key = "matplotlib.pyplot"
    stand_in = None
    if key not in sys.modules and "mediapipe" not in sys.modules:
        stand_in = sys.modules[key] = _PyplotOnDemand(key)
    try:
        from mediapipe.python import solutions
    finally:
        if stand_in is not None and sys.modules.get(key) is stand_in:
            del sys.modules[key]  # a later import of pyplot gets the real module
    return solutions


class ServedModel(PoseModel):
    """A model whose detections run in the models' child process (``engine.keypoints.pose_server``)
    where one can run, else here; what both back ends share.

    Subclasses set ``name``, ``names``, ``index`` (the landmark of each name in the model's
    output) and ``_lock`` (one per back end: its models are not re-entrant), and implement
    ``_load()`` (build what the first image needs, once per process) and ``_one(state, image)``
    (one image through what ``_load`` gave: the ``index`` points normalised to [0, 1] of the
    image (k, 2) and their scores (k,), or None where nothing was found).
    """

    index: tuple[int, ...] = ()
    min_detection: float = 0.5

    def _load(self):
        raise NotImplementedError

    def _one(self, state, image: np.ndarray):
        raise NotImplementedError

    def _detect_here(self, images: np.ndarray) -> list[ViewKeypoints | None]:
        """The images through the model in this process: pixel positions and clipped scores."""
        h, w = images.shape[1:3]
        out: list[ViewKeypoints | None] = []
        with self._lock:
            state = self._load()
            for img in images:
                found = self._one(state, np.ascontiguousarray(img))
                if found is None:
                    out.append(None)
                    continue
                pts, scores = found
                xy = np.asarray(pts, np.float64) * np.array([w, h], np.float64)
                out.append(ViewKeypoints(xy, np.clip(np.asarray(scores, np.float64), 0.0, 1.0)))
        return out

    def warm_up(self) -> None:
        """Start the models' child process (it loads the models on its own), or where none runs
        load them here; an error is left for ``detect`` to raise."""
        from . import pose_server

        if pose_server.server() is not None:
            return
        try:
            with self._lock:
                self._load()
        except Exception:  # noqa: BLE001  (detect loads again and says what failed)
            pass

    def detect(self, images: np.ndarray) -> list[ViewKeypoints | None]:
        """images : (K, H, W, 3) uint8 RGB, or (K, H, W) uint8 grey (clay renders: a third of the
        bytes to the models' process, made RGB there)."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise ValueError(f"{self.name}: expected (K, H, W, 3) or (K, H, W) uint8 images, got {images.shape} {images.dtype}")
        from . import pose_server

        found = pose_server.detect(type(self).__name__, self.min_detection, images)
        if found is not None:  # the child process ran the model
            return found
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        return self._detect_here(images)


class _MediaPipeModel(ServedModel):
    """What the MediaPipe solutions share: the availability check, one graph per detection
    threshold (built once per process, its set-up logs muted), and reading a graph's result.

    Subclasses implement ``_build(solutions)`` (the graph) and ``_read(result)`` (landmarks +
    scores or None).
    """

    _lock = threading.Lock()  # a graph is not re-entrant: one image at a time per process
    _graphs: dict = {}

    def __init__(self, min_detection: float) -> None:
        ok, why = mediapipe_status()
        if not ok:
            raise BackendUnavailable(f"keypoints: {why}")
        self.min_detection = float(min_detection)

    def _build(self, solutions):
        raise NotImplementedError

    def _read(self, result):
        """(landmark list, per-index scores (k,)) of the first detection, or None."""
        raise NotImplementedError

    def _load(self):
        key = (type(self).__name__, self.min_detection)
        if key not in self._graphs:
            try:
                solutions = _import_solutions()
            except Exception as exc:  # a broken install: say which package, in one line
                raise BackendUnavailable(f"keypoints: mediapipe cannot be imported ({exc.__class__.__name__}: {exc})") from None
            # The graph's C++ side logs its set-up (TFLite delegate, absl, feedback tensors) on the
            # process's stderr at the first image: build it and run one blank image with fd 2 muted
            with muted_stderr():
                graph = self._build(solutions)
                graph.process(np.zeros((64, 64, 3), np.uint8))
            self._graphs[key] = graph
        return self._graphs[key]

    def _one(self, graph, image: np.ndarray):
        with warnings.catch_warnings():  # protobuf's deprecation notice inside mediapipe, every call
            warnings.simplefilter("ignore", UserWarning)
            found = self._read(graph.process(image))
        if found is None:
            return None
        lm, scores = found
        return np.array([[lm[i].x, lm[i].y] for i in self.index], np.float64), scores


class MediaPipePose(_MediaPipeModel):
    """BlazePose (full) from the mediapipe wheel, static-image mode.

    min_detection : the person detector's threshold; 0.5 is MediaPipe's own default
    """

    name = "mediapipe-pose"
    index = tuple(i for _, i in BODY_KEYPOINTS)

    def __init__(self, min_detection: float = 0.5) -> None:
        super().__init__(min_detection)

    def _build(self, solutions):
        # model_complexity=1 is the "full" model inside the wheel (2, "heavy", would download)
        return solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                   min_detection_confidence=self.min_detection)

    def _read(self, result):
        if result.pose_landmarks is None:
            return None
        lm = result.pose_landmarks.landmark
        return lm, [lm[i].visibility for i in self.index]


class MediaPipeFace(_MediaPipeModel):
    """The face mesh from the mediapipe wheel (one face per image, static-image mode, without
    the attention model): 468 points named ``FACE_NAMES``, each scored 1 where a face is found
    (the solution reports no per-point score)."""

    name = "mediapipe-face"
    names = FACE_NAMES
    index = tuple(range(len(FACE_NAMES)))

    def __init__(self, min_detection: float = 0.5) -> None:
        super().__init__(min_detection)

    def _build(self, solutions):
        return solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                            min_detection_confidence=self.min_detection)

    def _read(self, result):
        if not result.multi_face_landmarks:
            return None
        return result.multi_face_landmarks[0].landmark, [1.0] * len(self.index)


class MediaPipeHands(_MediaPipeModel):
    """The hand landmark model from the mediapipe wheel (one hand per image, static-image mode).

    Handedness is not read (MediaPipe assumes mirrored selfie images); the caller knows which
    wrist it rendered. ``names`` are the unprefixed ``HAND_KEYPOINTS`` names; every point of a
    hand gets the hand's detection score.
    """

    name = "mediapipe-hands"
    names = tuple(n for n, _ in HAND_KEYPOINTS)
    index = tuple(i for _, i in HAND_KEYPOINTS)

    def __init__(self, min_detection: float = 0.3) -> None:
        # 0.3: clay renders have no skin texture; the detections kept are then checked by
        # triangulation across views
        super().__init__(min_detection)

    def _build(self, solutions):
        return solutions.hands.Hands(static_image_mode=True, max_num_hands=1, model_complexity=1,
                                     min_detection_confidence=self.min_detection)

    def _read(self, result):
        if not result.multi_hand_landmarks:
            return None
        score = float(result.multi_handedness[0].classification[0].score) if result.multi_handedness else 1.0
        return result.multi_hand_landmarks[0].landmark, [score] * len(self.index)


def keypoint_backend() -> str:
    """The back end ``STABLEWRAP_KEYPOINT_BACKEND`` asks for: "mediapipe" or "litert" ("auto",
    the default: mediapipe where the package is installed, else the runner)."""
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise InputError(f"{BACKEND_ENV}={choice!r}: expected one of {', '.join(BACKENDS)}")
    if choice != "auto":
        return choice
    return "mediapipe" if mediapipe_status()[0] else "litert"


def keypoints_status() -> tuple[bool, str]:
    """Whether the chosen back end can run here, and why not (one line naming the package)."""
    try:
        backend = keypoint_backend()
    except InputError as exc:
        return False, str(exc)
    if backend == "mediapipe":
        return mediapipe_status()
    from .litert_models import litert_status

    return litert_status()


def _chosen(mediapipe_class: type, litert_class: str, min_detection: float) -> PoseModel:
    """``mediapipe_class`` or the runner's class named ``litert_class``, as the back end says."""
    if keypoint_backend() == "mediapipe":
        return mediapipe_class(min_detection)
    from . import litert_models

    return getattr(litert_models, litert_class)(min_detection)


def body_model(min_detection: float = 0.5) -> PoseModel:
    """The body keypoint model of the chosen back end (BackendUnavailable where it cannot run)."""
    return _chosen(MediaPipePose, "LiteRTPose", min_detection)


def hand_model(min_detection: float = 0.3) -> PoseModel:
    """The hand keypoint model of the chosen back end (BackendUnavailable where it cannot run)."""
    return _chosen(MediaPipeHands, "LiteRTHands", min_detection)


def face_model(min_detection: float = 0.5) -> PoseModel:
    """The face mesh of the chosen back end (BackendUnavailable where it cannot run)."""
    return _chosen(MediaPipeFace, "LiteRTFace", min_detection)


def served_model_class(name: str) -> type:
    """A ServedModel class by its name (what the parent sends the models' child process)."""
    from .litert_models import LiteRTFace, LiteRTHands, LiteRTPose

    classes = {c.__name__: c for c in (MediaPipePose, MediaPipeHands, MediaPipeFace, LiteRTPose, LiteRTHands, LiteRTFace)}
    return classes[name]
