"""The MediaPipe model files the keypoint runner uses: where they are found, how they get there.

The files are data inside the ``mediapipe`` 0.10.14 wheel (Apache-2.0, Google): the last
release line that bundles them, with no wheel for CPython 3.13 (Blender 5.1 and later). They
are the same bytes in every platform's wheel (checked: Linux x86-64 and Windows, cp311 /
cp312), so their SHA-256 sums are pinned here and a copy from anywhere is checked against them.

Found, in this order (nothing is ever fetched while matching):

1. ``$STABLEWRAP_MEDIAPIPE_MODELS``: a folder holding the files by their base names;
2. ``<sys.prefix>/share/stablewrap/mediapipe-0.10.14``: where ``python -m engine models
   install`` puts them (the add-on's managed environment runs it once at its creation);
3. the installed ``mediapipe`` package's own folder (Python <= 3.12 with mediapipe installed).

``install_models`` copies them into (2) from a wheel file given, else from an installed
mediapipe package, else from the wheel ``pip download`` fetches for a fixed platform (any
Python can download it: the files are data). The wheel's Apache-2.0 licence is written beside
them with a notice saying where they came from.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import BackendUnavailable, InputError

MEDIAPIPE_VERSION = "0.10.14"
ENV_DIR = "STABLEWRAP_MEDIAPIPE_MODELS"
# path inside the wheel, SHA-256 of the file
MODEL_FILES = {
    "pose_detection": ("mediapipe/modules/pose_detection/pose_detection.tflite",
                       "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                           "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
    "palm_detection_full": ("mediapipe/modules/palm_detection/palm_detection_full.tflite",
                            "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
    "hand_landmark_full": ("mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                           "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"),
    "face_detection_short_range": ("mediapipe/modules/face_detection/face_detection_short_range.tflite",
                                   "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_landmark": ("mediapipe/modules/face_landmark/face_landmark.tflite",
                      "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
}
# the wheel pip downloads when no other source is given: one fixed platform, whatever this
# machine is (the model files are identical in every platform's wheel)
DOWNLOAD_PLATFORM = ("manylinux_2_17_x86_64", "3.12")
_LICENSE_IN_WHEEL = f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE"
NOTICE = (f"The .tflite files in this folder are MediaPipe {MEDIAPIPE_VERSION}'s models (Copyright Google LLC),\n"
          f"taken unchanged from the mediapipe {MEDIAPIPE_VERSION} wheel on PyPI and distributed under the\n"
          "Apache License 2.0 (LICENSE beside this file). StableWrap runs them with its own pre- and\n"
          "post-processing (engine.keypoints.blaze).\n")


def default_dir() -> Path:
    """Where ``install_models`` puts the files: inside this Python environment."""
    return Path(sys.prefix) / "share" / "stablewrap" / f"mediapipe-{MEDIAPIPE_VERSION}"


def _file_name(name: str) -> str:
    return MODEL_FILES[name][0].rsplit("/", 1)[1]


def _package_dir() -> Path | None:
    """The installed mediapipe package's folder, found without importing it."""
    from importlib.util import find_spec

    try:
        spec = find_spec("mediapipe")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _candidates(name: str) -> list[Path]:
    base = _file_name(name)
    out = []
    env = os.environ.get(ENV_DIR)
    if env:
        out.append(Path(env) / base)
    out.append(default_dir() / base)
    pkg = _package_dir()
    if pkg is not None:
        out.append(pkg.parent / MODEL_FILES[name][0])
    return out


def find_model(name: str) -> Path | None:
    """The path of model ``name`` (a key of ``MODEL_FILES``), or None where no source has it."""
    if name not in MODEL_FILES:
        raise KeyError(f"unknown MediaPipe model {name!r} (known: {', '.join(MODEL_FILES)})")
    for path in _candidates(name):
        if path.is_file():
            return path
    return None


def model_path(name: str) -> Path:
    """``find_model``, raising BackendUnavailable (one line, the fix included) where it is missing."""
    path = find_model(name)
    if path is None:
        raise BackendUnavailable(f"keypoints: the model file {_file_name(name)} is not installed "
                                 f"(run: python -m engine models install)")
    return path


def models_status(names=None) -> tuple[bool, str]:
    """Whether every model in ``names`` (default: all) is found; the reason when not."""
    missing = [_file_name(n) for n in (names or MODEL_FILES) if find_model(n) is None]
    if missing:
        return False, (f"the MediaPipe model files are not installed ({', '.join(missing)}; "
                       "run: python -m engine models install)")
    return True, "ok"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(folder: Path, pip_args: tuple = ()) -> Path:
    """``pip download`` the pinned wheel (no dependencies, the fixed platform) into ``folder``;
    ``pip_args`` as ``("--find-links", DIR, "--no-index")`` for a studio's local wheel folder."""
    platform, python = DOWNLOAD_PLATFORM
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
           "--platform", platform, "--python-version", python, "--implementation", "cp", "-d", str(folder),
           *pip_args, f"mediapipe=={MEDIAPIPE_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise BackendUnavailable(f"models: pip could not download mediapipe=={MEDIAPIPE_VERSION} "
                                 f"({last[-1] if last else f'exit code {proc.returncode}'}); "
                                 "download the wheel elsewhere and pass it with --wheel")
    return wheels[0]


def install_models(dest: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
                   download: bool = True, pip_args: tuple = ()) -> Path:
    """Put the model files (checked against their SHA-256) and their licence into ``dest``
    (default ``default_dir()``); returns the folder. Files already there and intact are kept.

    Sources, first that applies: ``wheel`` (a mediapipe 0.10.14 wheel file), the installed
    mediapipe package, a wheel ``pip download``s (``download``). The folder never holds a
    partial file: each is written beside its place and renamed into it.
    """
    dest = Path(dest) if dest is not None else default_dir()
    todo = [n for n in MODEL_FILES if not ((dest / _file_name(n)).is_file() and sha256(dest / _file_name(n)) == MODEL_FILES[n][1])]
    if not todo and (dest / "LICENSE").is_file():
        return dest
    with tempfile.TemporaryDirectory(prefix="stablewrap-models-") as tmp:
        if wheel is None and _package_dir() is not None and all((_package_dir().parent / MODEL_FILES[n][0]).is_file() for n in todo):
            read = lambda member: (_package_dir().parent / member).read_bytes()  # noqa: E731
            licence = _installed_licence()
        else:
            if wheel is None:
                if not download:
                    raise BackendUnavailable("models: no mediapipe wheel given or installed, and downloading is off")
                wheel = _download_wheel(Path(tmp), tuple(pip_args))
            wheel = Path(wheel)
            if not wheel.is_file():
                raise InputError(f"models: {wheel}: no such wheel file")
            try:
                zf = zipfile.ZipFile(wheel)
            except zipfile.BadZipFile:
                raise InputError(f"models: {wheel}: not a wheel (zip) file") from None
            members = set(zf.namelist())
            missing = [MODEL_FILES[n][0] for n in todo if MODEL_FILES[n][0] not in members]
            if missing:
                raise InputError(f"models: {wheel.name} is not a mediapipe {MEDIAPIPE_VERSION} wheel "
                                 f"(it lacks {missing[0]})")
            read = zf.read
            licence = zf.read(_LICENSE_IN_WHEEL).decode("utf-8") if _LICENSE_IN_WHEEL in members else None
        dest.mkdir(parents=True, exist_ok=True)
        for name in todo:
            member, want = MODEL_FILES[name]
            data = read(member)
            got = hashlib.sha256(data).hexdigest()
            if got != want:
                raise InputError(f"models: {member} has SHA-256 {got[:12]}..., expected {want[:12]}... "
                                 f"(not mediapipe {MEDIAPIPE_VERSION}'s file)")
            part = dest / (_file_name(name) + ".part")
            part.write_bytes(data)
            os.replace(part, dest / _file_name(name))
        (dest / "NOTICE").write_text(NOTICE, encoding="utf-8")
        if licence:
            (dest / "LICENSE").write_text(licence, encoding="utf-8")
    return dest


def _installed_licence() -> str | None:
    """The Apache-2.0 text from the installed mediapipe's dist-info, where it has one."""
    try:
        from importlib.metadata import distribution

        dist = distribution("mediapipe")
        for f in dist.files or ():
            if f.name == "LICENSE":
                return Path(dist.locate_file(f)).read_text(encoding="utf-8")
    except Exception:  # noqa: BLE001  (no metadata: the NOTICE still names the licence)
        return None
    return None


def remove_models(dest: str | os.PathLike | None = None) -> None:
    """Delete an installed model folder (tests, uninstall)."""
    shutil.rmtree(Path(dest) if dest is not None else default_dir(), ignore_errors=True)
