"""engine.isolated: one call in a fresh Python process that re-runs nothing of the caller's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import isolated

REPO = Path(__file__).resolve().parents[1]


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """multiprocessing's spawn ran the caller's script again in its child: a pipeline script
    without ``if __name__ == "__main__"`` did all its work twice (here: printed twice)."""
    script = tmp_path / "pipeline.py"
    script.write_text(
        f"import sys; sys.path.insert(0, {os.fspath(REPO)!r})\n"
        "print('top level ran', flush=True)\n"
        "from engine.isolated import run_isolated\n"
        "res = run_isolated('os:getpid', timeout=120)\n"
        "print('child', res['ok'], res['value'] != __import__('os').getpid())\n"
    )
    out = subprocess.run([sys.executable, os.fspath(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("top level ran") == 1, out.stdout
    assert "child True True" in out.stdout


def test_the_call_finds_modules_beside_the_callers_script(tmp_path, monkeypatch):
    """The child gets the caller's sys.path: a function in the caller's own module resolves."""
    (tmp_path / "my_step.py").write_text("def twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(os.fspath(tmp_path))
    res = isolated.run_isolated("my_step:twice", (21,), timeout=120)
    assert res["ok"] and res["value"] == 42, res.get("error")
    assert res["peak_rss"] > 0 and res["seconds"] >= 0
    assert not isolated.live_children()


def test_what_the_call_prints_does_not_break_its_reply(capfd):
    res = isolated.run_isolated("builtins:print", ("noise " * 20000,), timeout=120)
    assert res["ok"] and res["value"] is None, res.get("error")
    out, err = capfd.readouterr()
    assert "noise" in err and "noise" not in out  # the child's stdout goes to its stderr


def test_a_result_that_cannot_be_sent_back_is_a_one_line_failure():
    res = isolated.run_isolated("threading:Lock", timeout=120)
    assert not res["ok"] and "cannot be sent back" in res["error"] and "\n" not in res["error"]


def test_under_a_host_that_is_not_python_no_child_starts(monkeypatch):
    """Blender's own binary cannot run ``-c``: an OSError the callers catch (a decimation then
    runs in place)."""
    import numpy as np

    from engine.geometry import working_copy
    from engine.progress import CancelToken

    monkeypatch.setattr(isolated.sys, "executable", "/opt/blender/blender")
    assert isolated.child_python() is None
    with pytest.raises(OSError, match="no Python executable"):
        isolated.run_isolated("os:getpid")
    monkeypatch.setattr(working_copy, "CHILD_DECIMATION_FACES", 100)
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=4)
    v, f = working_copy.decimate(np.asarray(m.vertices), np.asarray(m.faces), 500, CancelToken())
    assert 450 <= len(v) <= 550
