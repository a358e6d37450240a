"""The managed-environment installer: a venv plus pip install of the engine wheel, without blocking."""
from __future__ import annotations

import os
import time
import zipfile

import pytest

from tests.test_addon_support import enable_extension


def _tiny_wheel(folder) -> str:
    """A minimal valid wheel named like the engine's (so no network and no build are needed)."""
    name = "stablewrap_engine-0.0.1-py3-none-any.whl"
    path = os.path.join(folder, name)
    dist = "stablewrap_engine-0.0.1.dist-info"
    files = {
        "engine_probe/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: stablewrap-engine\nVersion: 0.0.1\n",
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
    env_dir = str(tmp_path / "env")
    inst = env_mod.EnvInstaller(env_dir, extras="", wheel=wheel, pip_args=("--no-index", "--no-deps"))
    assert [c[1:3] for c in inst.commands] == [["-m", "venv"], ["-m", "pip"]]
    assert inst.step() is False  # returns at once: the UI polls it from a timer
    _run(inst)
    assert inst.error is None, inst.error
    py = env_mod.env_python(env_dir)
    assert os.path.isfile(py)
    import subprocess

    out = subprocess.run([py, "-c", "import engine_probe; print(engine_probe.VALUE)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"


def test_installer_reports_a_failing_step(tmp_path):
    env_mod = enable_extension().engine_env
    wheel = _tiny_wheel(str(tmp_path))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the environment folder should go")
    inst = env_mod.EnvInstaller(str(blocker / "env"), wheel=wheel, pip_args=("--no-index",))
    _run(inst)
    assert inst.error and "venv" in inst.error and "failed (exit code" in inst.error and "log:" in inst.error
    assert inst.index == 0  # stopped at the failing step


def test_no_bundled_wheel_is_a_clear_error(tmp_path):
    env_mod = enable_extension().engine_env
    with pytest.raises(env_mod.WorkerError, match="bundles no engine wheel"):
        env_mod.install_commands(str(tmp_path / "env"), "", None)
