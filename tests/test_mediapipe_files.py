"""Where the runner's model files come from (engine.keypoints.mediapipe_files): a wheel file, an
installed mediapipe, or the wheel pip downloads; checked against their pinned SHA-256 sums."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.errors import BackendUnavailable, InputError
from engine.keypoints import mediapipe_files as mf
from engine.keypoints.pose_model import mediapipe_status

needs_mediapipe = pytest.mark.skipif(not mediapipe_status()[0], reason="mediapipe is not installed (the files' source here)")
PACKAGE = mf._package_dir()  # the installed mediapipe, read before the tests hide it


@pytest.fixture()
def nowhere(tmp_path, monkeypatch):
    """No model source at all: no installed package, an empty default folder, no env folder."""
    monkeypatch.setattr(mf, "_package_dir", lambda: None)
    monkeypatch.setattr(mf, "default_dir", lambda: tmp_path / "default")
    monkeypatch.delenv(mf.ENV_DIR, raising=False)
    return tmp_path


def _wheel_like(path: Path, tamper: str | None = None) -> Path:
    """A wheel holding the installed mediapipe's model files under their wheel paths."""
    pkg = PACKAGE
    with zipfile.ZipFile(path, "w") as zf:
        for name, (member, _) in mf.MODEL_FILES.items():
            data = (pkg.parent / member).read_bytes()
            zf.writestr(member, data[:-1] + b"x" if name == tamper else data)
        zf.writestr(f"mediapipe-{mf.MEDIAPIPE_VERSION}.dist-info/LICENSE", "Apache License\nVersion 2.0\n")
    return path


@needs_mediapipe
def test_install_from_a_wheel_file_puts_checked_files_and_the_licence_where_they_are_found(nowhere):
    wheel = _wheel_like(nowhere / f"mediapipe-{mf.MEDIAPIPE_VERSION}-cp312-cp312-win_amd64.whl")
    assert mf.find_model("pose_detection") is None and not mf.models_status()[0]
    with pytest.raises(BackendUnavailable, match=r"pose_detection.tflite is not installed \(run: python -m engine models install\)"):
        mf.model_path("pose_detection")
    dest = mf.install_models(wheel=wheel)
    assert dest == nowhere / "default"
    for name, (_, digest) in mf.MODEL_FILES.items():
        assert mf.find_model(name).parent == dest and mf.sha256(mf.find_model(name)) == digest
    assert "Apache" in (dest / "LICENSE").read_text() and "Apache License 2.0" in (dest / "NOTICE").read_text()
    assert mf.models_status() == (True, "ok")
    assert not list(dest.glob("*.part"))


@needs_mediapipe
def test_a_file_that_is_not_mediapipes_is_refused_and_nothing_half_written_stays(nowhere):
    wheel = _wheel_like(nowhere / "mp.whl", tamper="palm_detection_full")
    with pytest.raises(InputError, match=r"palm_detection_full.tflite has SHA-256 .* \(not mediapipe 0.10.14's file\)") as e:
        mf.install_models(wheel=wheel)
    assert "\n" not in str(e.value)
    assert not (nowhere / "default" / "palm_detection_full.tflite").exists()
    assert not list((nowhere / "default").glob("*.part"))


def test_a_wheel_that_is_not_one_is_one_line(nowhere):
    bad = nowhere / "bad.whl"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match="bad.whl: not a wheel"):
        mf.install_models(wheel=bad)
    other = nowhere / "other.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("other/__init__.py", "")
    with pytest.raises(InputError, match="is not a mediapipe 0.10.14 wheel"):
        mf.install_models(wheel=other)
    with pytest.raises(BackendUnavailable, match="downloading is off"):
        mf.install_models(download=False)


@needs_mediapipe
def test_without_a_wheel_pip_downloads_the_pinned_one_for_a_fixed_platform(nowhere, monkeypatch):
    """What any Python (3.13 included) runs: pip download of mediapipe 0.10.14 for one platform,
    with the studio's local folder passed on; the wheel it writes is unpacked and checked."""
    asked = []

    def fake_pip(cmd, **kw):
        asked.append(cmd)
        folder = Path(cmd[cmd.index("-d") + 1])
        _wheel_like(folder / f"mediapipe-{mf.MEDIAPIPE_VERSION}-cp312-cp312-manylinux_2_17_x86_64.whl")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(mf.subprocess, "run", fake_pip)
    dest = mf.install_models(pip_args=("--find-links", "/studio/wheels", "--no-index"))
    (cmd,) = asked
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and cmd[-1] == "mediapipe==0.10.14"
    assert cmd[cmd.index("--platform") + 1] == mf.DOWNLOAD_PLATFORM[0] and "--no-deps" in cmd
    assert cmd[cmd.index("--find-links") + 1] == "/studio/wheels" and "--no-index" in cmd
    assert mf.models_status() == (True, "ok") and dest == nowhere / "default"
    mf.install_models()  # everything there and intact: nothing to do, no second download
    assert len(asked) == 1


def test_a_failed_download_is_one_line_with_the_way_round_it(nowhere, monkeypatch):
    monkeypatch.setattr(mf.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement mediapipe==0.10.14\n"))
    with pytest.raises(BackendUnavailable, match=r"could not download mediapipe==0.10.14 \(ERROR: Could not find .*\); "
                                                 r"download the wheel elsewhere and pass it with --wheel"):
        mf.install_models()


@needs_mediapipe
def test_models_install_command_and_the_env_folder(tmp_path, monkeypatch):
    from engine.cli import main

    assert main(["models", "install", "--dest", str(tmp_path / "m")]) == 0  # from the installed package
    monkeypatch.setattr(mf, "_package_dir", lambda: None)
    monkeypatch.setattr(mf, "default_dir", lambda: tmp_path / "default")
    monkeypatch.setenv(mf.ENV_DIR, str(tmp_path / "m"))
    assert mf.find_model("hand_landmark_full") == tmp_path / "m" / "hand_landmark_full.tflite"
