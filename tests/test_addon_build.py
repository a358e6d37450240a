"""build_addon.py: manifest validation, a reproducible zip, and that the zip installs into a fresh Blender profile."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import build_addon  # noqa: E402


def test_repository_manifest_is_valid():
    m = build_addon.read_manifest()
    assert build_addon.validate_manifest(m) == []
    assert m["id"] == "stablewrap" and m["blender_version_min"] == "4.2.0"
    assert "files" in m["permissions"]


@pytest.mark.parametrize("mutate, expect", [
    (lambda m: m.pop("id"), "missing required field 'id'"),
    (lambda m: m.update(id="Stable-Wrap"), "lowercase"),
    (lambda m: m.update(version="1.0"), "not semantic"),
    (lambda m: m.update(blender_version_min="4.1.0"), "4.2.0"),
    (lambda m: m.update(schema_version="2.0.0"), "schema_version"),
    (lambda m: m.update(tagline="x" * 65), "limit is 64"),
    (lambda m: m.update(tagline="Wraps meshes."), "punctuation"),
    (lambda m: m.pop("permissions"), "[permissions] table is missing"),
    (lambda m: m["permissions"].pop("files"), "must declare 'files'"),
    (lambda m: m["permissions"].update(telepathy="why not"), "unknown permission"),
    (lambda m: m.update(license=["MIT"]), "SPDX"),
    (lambda m: m.update(wheels=["./wheels/stablewrap_engine-0.1.0-py3-none-any.whl"]), "must not be listed"),
])
def test_manifest_validation_names_the_problem(mutate, expect):
    m = copy.deepcopy(build_addon.read_manifest())
    mutate(m)
    problems = build_addon.validate_manifest(m)
    assert any(expect in p for p in problems), problems


def test_bad_manifest_stops_the_build(tmp_path):
    addon = tmp_path / "addon"
    addon.mkdir()
    (addon / "blender_manifest.toml").write_text('schema_version = "1.0.0"\nid = "stablewrap"\n')
    with pytest.raises(build_addon.BuildError, match="missing required field"):
        build_addon.build(str(tmp_path / "dist"), with_engine_wheel=False, addon_dir=str(addon))
    assert not (tmp_path / "dist").exists() or not os.listdir(tmp_path / "dist")


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, os.path.join(REPO, "build_addon.py"), "--out-dir", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out / f"stablewrap-{build_addon.read_manifest()['version']}.zip"


def test_zip_contents(built_zip):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(built_zip).st_mode & 0o777 == 0o666 & ~umask  # readable like any build output, not 0600
    with zipfile.ZipFile(built_zip) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert "blender_manifest.toml" in names and "__init__.py" in names
        wheels = [n for n in names if n.startswith("wheels/")]
        assert wheels == [f"wheels/stablewrap_engine-{build_addon.engine_version()}-py3-none-any.whl"]
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert {zi.date_time for zi in zf.infolist()} == {build_addon.FIXED_DATE}
        # the engine wheel holds the worker the extension starts
        import io

        with zipfile.ZipFile(io.BytesIO(zf.read(wheels[0]))) as wz:
            assert "engine/worker.py" in wz.namelist()
        # the extension itself never imports torch
        for n in names:
            if n.endswith(".py"):
                src = zf.read(n).decode()
                assert "import torch" not in src, n


def test_build_is_reproducible(tmp_path):
    # build twice from one snapshot of the sources (the live tree may change between two builds)
    import shutil

    snap = tmp_path / "snap"
    snap.mkdir()
    shutil.copy2(os.path.join(REPO, "pyproject.toml"), snap / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(REPO, "engine"), snap / "engine", ignore=ignore)
    shutil.copytree(os.path.join(REPO, "blender_addon"), snap / "blender_addon", ignore=ignore)
    a = build_addon.build(str(tmp_path / "a"), addon_dir=str(snap / "blender_addon"), root=str(snap))
    b = build_addon.build(str(tmp_path / "b"), addon_dir=str(snap / "blender_addon"), root=str(snap))
    assert os.path.basename(a) == os.path.basename(b) == f"stablewrap-{build_addon.read_manifest()['version']}.zip"
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert hashlib.sha256(fa.read()).hexdigest() == hashlib.sha256(fb.read()).hexdigest()


def test_zip_installs_into_a_fresh_profile_and_enables(built_zip, tmp_path):
    pytest.importorskip("bpy")
    profile = tmp_path / "profile"
    profile.mkdir()
    script = textwrap.dedent(f"""
        import json, os, sys
        import bpy
        r = bpy.ops.extensions.package_install_files(filepath={str(built_zip)!r}, repo="user_default", enable_on_install=True)
        mod_name = "bl_ext.user_default.stablewrap"
        mod = sys.modules.get(mod_name)
        ext_root = os.path.join(bpy.utils.user_resource("EXTENSIONS"), "user_default", "stablewrap")
        print("RESULT" + json.dumps({{
            "ret": sorted(r),
            "enabled": mod_name in bpy.context.preferences.addons,
            "ops": [hasattr(bpy.ops.stablewrap, o) for o in ("match", "transfer_uvs", "bake_texture", "transfer_weights", "make_morph", "clear")],
            "scene_props": hasattr(bpy.types.Scene, "stablewrap"),
            "wheel": os.path.basename(mod.engine_env.bundled_engine_wheel() or ""),
            "engine_in_blender": "engine" in sys.modules,
            "site_local": os.path.exists(os.path.join(bpy.utils.user_resource("EXTENSIONS"), ".local")),
            "installed_here": os.path.isfile(os.path.join(ext_root, "__init__.py")),
        }}))
    """)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(profile))
    env.pop("STABLEWRAP_ENGINE_PYTHON", None)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    line = [l for l in res.stdout.splitlines() if l.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    assert out["ret"] == ["FINISHED"]
    assert out["enabled"] and out["scene_props"] and all(out["ops"])
    assert out["installed_here"]
    assert out["wheel"].startswith("stablewrap_engine-")
    # the engine is not installed into Blender's Python
    assert not out["engine_in_blender"] and not out["site_local"]


def test_blenders_own_validator_accepts_the_zip(built_zip):
    bpy = pytest.importorskip("bpy")
    import glob

    found = glob.glob(os.path.join(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    if not found:
        pytest.skip("Blender's extension command-line tool is not in this bpy build")
    res = subprocess.run([sys.executable, found[0], "validate", str(built_zip)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "Success" in res.stdout, res.stdout + res.stderr
