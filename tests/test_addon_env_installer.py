"""The managed-environment installer: a venv plus pip install of the engine wheel, without blocking."""
from __future__ import annotations

import os
import time
import zipfile

import pytest

from tests.test_addon_support import enable_extension


def _tiny_wheel(folder, project: str = "stablewrap_engine", version: str = "0.0.1", module: str = "engine_probe") -> str:
    """A minimal valid wheel named like the engine's (so no network and no build are needed)."""
    name = f"{project}-{version}-py3-none-any.whl"
    path = os.path.join(folder, name)
    dist = f"{project}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": "VALUE = 42\n",
        # a stand-in for the engine's command line: records the arguments of its last call (the
        # real ``models install`` is tested in tests/test_mediapipe_files.py)
        "engine/__init__.py": "",
        "engine/__main__.py": ("import os, sys\nopen(os.path.join(sys.prefix, 'engine-args.txt'), 'w')"
                               ".write(' '.join(sys.argv[1:]))\n"),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {project.replace('_', '-')}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
    return path


def _run(installer, timeout=180):
    t0 = time.monotonic()
    while not installer.step():
        assert time.monotonic() - t0 < timeout, "installer did not finish"
        time.sleep(0.05)


@pytest.mark.slow
def test_installer_creates_a_venv_with_the_engine_wheel(tmp_path):
    env_mod = enable_extension().engine_env
    wheel = _tiny_wheel(str(tmp_path))
    _tiny_wheel(str(tmp_path), "torch", "2.13.0", "torch")  # the pinned torch, from the offline wheel folder
    _tiny_wheel(str(tmp_path), "mediapipe", "0.10.14", "mediapipe")  # and the keypoint model
    env_dir = str(tmp_path / "env")
    inst = env_mod.EnvInstaller(env_dir, extras="", wheel=wheel, pip_args=("--no-index", "--no-deps"))
    assert [c[1:3] for c in inst.commands] == [["-m", "venv"]] + [["-m", "pip"]] * 3 + [["-m", "engine"]]
    assert inst.commands[2][-1].endswith(".whl[keypoints]") and inst.commands[3][-2:] == ["--no-deps", env_mod.MEDIAPIPE_PIN]
    assert inst.commands[4][3:] == ["models", "install", "--find-links", str(tmp_path), "--no-index"]
    assert inst.commands[1][-1] == env_mod.TORCH_PIN and "--index-url" not in inst.commands[1]  # offline: no index
    assert inst.step() is False  # returns at once: the UI polls it from a timer
    assert not env_mod.env_ready(env_dir)
    _run(inst)
    assert inst.error is None, inst.error
    assert env_mod.env_ready(env_dir)  # stamped only now
    py = env_mod.env_python(env_dir)
    assert os.path.isfile(py)
    import subprocess

    out = subprocess.run([py, "-c", "import engine_probe, mediapipe; print(engine_probe.VALUE)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"
    with open(os.path.join(env_dir, "engine-args.txt")) as fh:  # the model files step ran, offline
        assert fh.read() == f"models install --find-links {tmp_path} --no-index"


def test_each_python_gets_only_what_has_a_wheel_for_it():
    """Blender 5.1+ embeds Python 3.13: no mediapipe step there (no cp313 wheel), the model files
    all the same; a Python the engine cannot serve is one line naming its version."""
    env_mod = enable_extension().engine_env
    wheel = "/w/stablewrap_engine-1.0-py3-none-any.whl"
    for version, has_mediapipe in (((3, 11), True), ((3, 12), True), ((3, 13), False)):
        cmds = env_mod.install_commands("/x/env", "", wheel, gpu=False, python=version)
        assert any(env_mod.MEDIAPIPE_PIN in c for c in cmds) is has_mediapipe
        assert cmds[-1][1:] == ["-m", "engine", "models", "install", "--find-links", "/w"]
        assert cmds[2][-1] == wheel + "[keypoints]"
    for version in ((3, 10), (3, 14)):
        with pytest.raises(env_mod.WorkerError, match=rf"Python {version[0]}\.{version[1]} cannot run") as e:
            env_mod.install_commands("/x/env", "", wheel, python=version)
        assert "\n" not in str(e.value)


def test_installer_reports_a_failing_step(tmp_path):
    env_mod = enable_extension().engine_env
    wheel = _tiny_wheel(str(tmp_path))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the environment folder should go")
    inst = env_mod.EnvInstaller(str(blocker / "env"), wheel=wheel, pip_args=("--no-index",))
    _run(inst)
    assert inst.error and "venv" in inst.error and "failed (exit code" in inst.error and "log:" in inst.error
    assert inst.index == 0  # stopped at the failing step


def test_a_failed_set_up_leaves_no_half_built_environment(tmp_path):
    env_mod = enable_extension().engine_env
    wheel = _tiny_wheel(str(tmp_path))  # no torch wheel beside it: the offline torch step fails
    env_dir = str(tmp_path / "env")
    inst = env_mod.EnvInstaller(env_dir, wheel=wheel, pip_args=("--no-index",))
    _run(inst)
    assert inst.error and inst.index == 1 and "torch" in open(inst.log_path).read()
    assert not os.path.exists(env_dir) and not env_mod.env_ready(env_dir)


def test_torch_build_and_download_follow_the_gpu():
    env_mod = enable_extension().engine_env
    import sys

    cpu = env_mod.install_commands("/x/env", "", "/w/stablewrap_engine-1.0-py3-none-any.whl", gpu=False)
    cuda = env_mod.install_commands("/x/env", "", "/w/stablewrap_engine-1.0-py3-none-any.whl", gpu=True)
    assert cpu[1][-1] == cuda[1][-1] == env_mod.TORCH_PIN
    if sys.platform != "darwin":
        assert cpu[1][-3:-1] == ["--index-url", env_mod.TORCH_CPU_INDEX] and "--index-url" not in cuda[1]
    assert env_mod.download_estimate("", gpu=False).startswith("Downloads about 0.7 GB (no NVIDIA GPU")
    if sys.platform != "darwin":
        assert env_mod.download_estimate("features", gpu=True).startswith("Downloads about 6.")


def test_torch_and_mediapipe_pins_are_the_projects():
    env_mod = enable_extension().engine_env
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "scripts", "dev")) as fh:
        text = fh.read()
    assert f'TORCH_PIN="{env_mod.TORCH_PIN}"' in text and f'MEDIAPIPE_PIN="{env_mod.MEDIAPIPE_PIN}"' in text


def test_offline_blender_refuses_in_one_line(tmp_path, monkeypatch):
    env_mod = enable_extension().engine_env
    monkeypatch.setattr(env_mod, "online_access_allowed", lambda: False)
    wheel = _tiny_wheel(str(tmp_path))
    with pytest.raises(env_mod.WorkerError, match="online access is off") as e:
        env_mod.EnvInstaller(str(tmp_path / "env"), wheel=wheel)
    assert "\n" not in str(e.value) and not (tmp_path / "env").exists()
    env_mod.EnvInstaller(str(tmp_path / "env"), wheel=wheel, pip_args=("--no-index",))  # a local wheel folder is fine


def test_no_bundled_wheel_is_a_clear_error(tmp_path):
    env_mod = enable_extension().engine_env
    with pytest.raises(env_mod.WorkerError, match="bundles no engine wheel"):
        env_mod.install_commands(str(tmp_path / "env"), "", None)
