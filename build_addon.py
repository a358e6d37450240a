"""Build the installable Blender extension: ``dist/stablewrap-<version>.zip``.

    python build_addon.py                 # validate the manifest, build the engine wheel, write the zip
    python build_addon.py --check         # validate only
    python build_addon.py --out-dir DIR   # write the zip elsewhere

The zip holds ``blender_addon/`` at its root (``blender_manifest.toml`` first
level), the wheels the manifest lists, and the engine wheel in ``wheels/``.
The engine wheel is *not* listed in the manifest: Blender must not install the
engine (torch) into its own Python; the extension's managed-environment
installer pip-installs it from there into the worker's environment.

The build is reproducible: entries sorted, fixed timestamps and permissions,
the engine wheel built from a clean copy of the sources with
``SOURCE_DATE_EPOCH`` set. Two builds of the same tree give identical bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.abspath(__file__))
ADDON_DIR = os.path.join(ROOT, "blender_addon")
MANIFEST = "blender_manifest.toml"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip can hold
EXCLUDE_DIRS = {"__pycache__", ".pytest_cache", "wheels"}
EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", "~")
PERMISSIONS = {"files", "network", "clipboard", "camera", "microphone"}
REQUIRED = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min", "license")
MIN_BLENDER = "4.2.0"


class BuildError(Exception):
    """A one-line reason the build stopped."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def validate_manifest(m: dict) -> list[str]:
    """Problems with a parsed ``blender_manifest.toml`` (empty list: valid)."""
    problems = []
    for key in REQUIRED:
        if key not in m:
            problems.append(f"missing required field '{key}'")
    if m.get("schema_version") not in (None, "1.0.0"):
        problems.append(f"schema_version must be \"1.0.0\", got {m.get('schema_version')!r}")
    if "id" in m and not re.fullmatch(r"[a-z][a-z0-9_]*", str(m["id"])):
        problems.append(f"id {m['id']!r} must be lowercase letters, digits and underscores, starting with a letter")
    if "version" in m and not re.fullmatch(r"\d+\.\d+\.\d+", str(m["version"])):
        problems.append(f"version {m['version']!r} is not semantic (MAJOR.MINOR.PATCH)")
    if m.get("type") not in (None, "add-on"):
        problems.append(f"type must be \"add-on\", got {m.get('type')!r}")
    tagline = str(m.get("tagline", ""))
    if len(tagline) > 64:
        problems.append(f"tagline is {len(tagline)} characters; the limit is 64")
    if tagline and tagline[-1] in ".!?,;:":
        problems.append("tagline must not end with punctuation")
    bmin = str(m.get("blender_version_min", ""))
    if bmin:
        if not re.fullmatch(r"\d+\.\d+\.\d+", bmin):
            problems.append(f"blender_version_min {bmin!r} is not MAJOR.MINOR.PATCH")
        elif bmin != MIN_BLENDER:
            problems.append(f"blender_version_min must be \"{MIN_BLENDER}\" (extensions need 4.2+), got {bmin!r}")
    lic = m.get("license")
    if lic is not None and (not isinstance(lic, list) or not lic or not all(str(x).startswith("SPDX:") for x in lic)):
        problems.append("license must be a non-empty list of \"SPDX:...\" identifiers")
    perms = m.get("permissions")
    if not isinstance(perms, dict):
        problems.append("[permissions] table is missing (the extension writes temporary files: 'files' is required)")
    else:
        if "files" not in perms:
            problems.append("[permissions] must declare 'files' (mesh data goes to the engine through temporary files)")
        for key, reason in perms.items():
            if key not in PERMISSIONS:
                problems.append(f"unknown permission '{key}' (known: {', '.join(sorted(PERMISSIONS))})")
            elif not isinstance(reason, str) or not reason.strip():
                problems.append(f"permission '{key}' needs a reason")
            elif len(reason) > 64 or reason.rstrip()[-1] in ".!?":
                problems.append(f"permission '{key}': reason must be at most 64 characters without a final period")
    wheels = m.get("wheels", [])
    if not isinstance(wheels, list):
        problems.append("wheels must be a list of paths")
    else:
        for w in wheels:
            if not str(w).startswith("./wheels/") or not str(w).endswith(".whl"):
                problems.append(f"wheel {w!r} must be a ./wheels/*.whl path")
            elif "stablewrap_engine" in str(w):
                problems.append("the engine wheel must not be listed in the manifest (Blender would install torch-dependent code into its own Python)")
    return problems


def read_manifest(addon_dir: str = ADDON_DIR) -> dict:
    path = os.path.join(addon_dir, MANIFEST)
    if not os.path.isfile(path):
        raise BuildError(f"{path}: manifest not found")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{MANIFEST}: not valid TOML ({exc})") from None


def engine_version(root: str = ROOT) -> str:
    with open(os.path.join(root, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def addon_files(addon_dir: str = ADDON_DIR) -> list[tuple[str, str]]:
    """(path on disk, name in the zip) of every extension source file, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(addon_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(EXCLUDE_SUFFIXES) or name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            out.append((full, os.path.relpath(full, addon_dir).replace(os.sep, "/")))
    return sorted(out, key=lambda t: t[1])


def build_engine_wheel(dest: str, root: str = ROOT) -> str:
    """``pip wheel --no-deps`` from a clean copy of the engine sources; returns the wheel path."""
    with tempfile.TemporaryDirectory(prefix="sw-wheel-src-") as src:
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if os.path.exists(os.path.join(root, name)):
                shutil.copy2(os.path.join(root, name), os.path.join(src, name))
        if not os.path.exists(os.path.join(src, "README.md")):
            with open(os.path.join(src, "README.md"), "w") as fh:
                fh.write("StableWrap engine\n")
        shutil.copytree(os.path.join(root, "engine"), os.path.join(src, "engine"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
               "--disable-pip-version-check", "-q", "-w", dest, src]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise BuildError(f"building the engine wheel failed: {tail[0]}")
    wheels = sorted(f for f in os.listdir(dest) if f.startswith("stablewrap_engine-") and f.endswith(".whl"))
    if not wheels:
        raise BuildError("pip wheel produced no stablewrap_engine wheel")
    return os.path.join(dest, wheels[-1])


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o644 & 0xFFFF) << 16
    info.create_system = 3  # unix, whatever the build machine
    return info


def write_zip(path: str, entries: list[tuple[str, bytes]]) -> None:
    """Write ``entries`` sorted by name with fixed metadata, atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sw-", suffix=".zip", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
            for name, data in sorted(entries, key=lambda e: e[0]):
                zf.writestr(_zip_entry(name), data, compresslevel=9)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private (0600): a build output is readable like any file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(out_dir: str, with_engine_wheel: bool = True, addon_dir: str = ADDON_DIR, root: str = ROOT) -> str:
    manifest = read_manifest(addon_dir)
    problems = validate_manifest(manifest)
    if problems:
        raise BuildError(f"{MANIFEST}: " + "; ".join(problems))
    if with_engine_wheel and manifest["version"] != engine_version(root):
        raise BuildError(f"{MANIFEST} version {manifest['version']} differs from the engine's {engine_version(root)} (pyproject.toml)")
    entries: list[tuple[str, bytes]] = []
    for full, name in addon_files(addon_dir):
        with open(full, "rb") as fh:
            entries.append((name, fh.read()))
    for rel in manifest.get("wheels", []):
        rel = rel[2:] if rel.startswith("./") else rel
        full = os.path.join(root, rel)
        if not os.path.isfile(full):
            raise BuildError(f"{MANIFEST} lists {rel} but {full} does not exist (put the wheel in wheels/)")
        with open(full, "rb") as fh:
            entries.append((rel, fh.read()))
    if with_engine_wheel:
        with tempfile.TemporaryDirectory(prefix="sw-wheel-") as tmp:
            wheel = build_engine_wheel(tmp, root)
            with open(wheel, "rb") as fh:
                entries.append(("wheels/" + os.path.basename(wheel), fh.read()))
    out = os.path.join(out_dir, f"{manifest['id']}-{manifest['version']}.zip")
    write_zip(out, entries)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "dist"))
    ap.add_argument("--check", action="store_true", help="validate the manifest and stop")
    ap.add_argument("--no-engine-wheel", action="store_true", help="leave the engine wheel out (users point to an existing engine Python)")
    ns = ap.parse_args(argv)
    try:
        if ns.check:
            problems = validate_manifest(read_manifest())
            if problems:
                raise BuildError(f"{MANIFEST}: " + "; ".join(problems))
            print(f"{MANIFEST}: ok")
            return 0
        out = build(ns.out_dir, with_engine_wheel=not ns.no_engine_wheel)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with open(out, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"{out}  ({n} files, sha256 {digest[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
