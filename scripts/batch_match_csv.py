"""Match every source/target pair listed in a CSV, headless.

    blender --background scene.blend --python scripts/batch_match_csv.py -- pairs.csv [options]
    .venv/bin/python scripts/batch_match_csv.py pairs.csv [options]        # with the bpy wheel

``pairs.csv`` has a header with at least ``source`` and ``target``; each value
is an object name in the open .blend or a mesh file (.obj .ply .stl .glb
.gltf .fbx, relative to the CSV) that is imported. Optional columns override
the options per row: ``quality``, ``features``, ``uvs`` (1/0), ``weights``
(1/0), ``morph`` (number of in-betweens), ``output`` (.blend to save this
pair to).

A file's character is its skinned mesh (the meshes with an Armature modifier,
joined when the character is split in pieces), else its largest mesh; bone
display shapes never qualify, and a file with no mesh fails its row.

For each row the script runs Match (and the requested transfers) through the
StableWrap extension's blocking API, saves the result, and writes one line to
a report CSV (``--report``, default ``<pairs>_report.csv``) with the status
(``ok``; ``check`` or ``wrong`` when the match's verdict doubts the map;
``failed``), seconds and the one-line message. A failing row is reported and
skipped; the exit code is the number of failed rows (capped at 100). ``--row N``
matches data row N alone (1-based), for a farm that runs one task per pair
(Flamenco's job type: ``scripts/flamenco/stablewrap_batch.js``).

The extension must be installed and enabled in the Blender profile, or give
``--addon-dir blender_addon`` to load it from a source folder. The engine's
Python comes from the extension's preferences or ``STABLEWRAP_ENGINE_PYTHON``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

import bpy

IMPORTERS = {
    ".obj": lambda p: bpy.ops.wm.obj_import(filepath=p),
    ".ply": lambda p: bpy.ops.wm.ply_import(filepath=p),
    ".stl": lambda p: bpy.ops.wm.stl_import(filepath=p),
    ".glb": lambda p: bpy.ops.import_scene.gltf(filepath=p),
    ".gltf": lambda p: bpy.ops.import_scene.gltf(filepath=p),
    ".fbx": lambda p: bpy.ops.import_scene.fbx(filepath=p),
}


def script_args(argv: list[str]) -> list[str]:
    """Arguments after ``--`` under Blender, or after the script name under plain Python."""
    if "--" in argv:
        return argv[argv.index("--") + 1:]
    return argv[1:]


def find_extension(addon_dir: str | None):
    """The StableWrap extension module: an enabled installed one, or ``addon_dir`` registered from source."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("bl_ext.") and name.endswith(".stablewrap") and hasattr(mod, "match"):
            return mod
    import addon_utils

    for mod in addon_utils.modules():
        if mod.__name__.startswith("bl_ext.") and mod.__name__.endswith(".stablewrap"):
            return addon_utils.enable(mod.__name__, default_set=False, handle_error=None)
    if not addon_dir:
        raise SystemExit("error: the StableWrap extension is not installed; install the zip or pass --addon-dir blender_addon")
    root = tempfile.mkdtemp(prefix="sw-batch-repo-")
    os.symlink(os.path.abspath(addon_dir), os.path.join(root, "stablewrap"))
    bpy.context.preferences.use_preferences_save = False
    bpy.context.preferences.extensions.repos.new(name="swbatch", module="swbatch", custom_directory=root, source="USER")
    mod = addon_utils.enable("bl_ext.swbatch.stablewrap", default_set=False, handle_error=None)
    if mod is None:
        raise SystemExit(f"error: could not enable the extension from {addon_dir}")
    return mod


def get_object(value: str, base_dir: str, sw):
    """An object of the open file by name, or the character mesh imported from a file (the
    skinned mesh, its pieces joined; never a bone shape: the extension's characters module)."""
    obj = bpy.data.objects.get(value)
    if obj is not None:
        return obj
    path = value if os.path.isabs(value) else os.path.join(base_dir, value)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMPORTERS:
        raise ValueError(f"'{value}' is neither an object in this file nor a mesh file ({', '.join(IMPORTERS)})")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: file not found")
    before = set(bpy.data.objects)
    IMPORTERS[ext](path)
    mesh = sw.character_mesh([o for o in bpy.data.objects if o not in before], os.path.basename(path))
    mesh.name = os.path.splitext(os.path.basename(path))[0]
    return mesh


def truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y")


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="batch_match_csv.py", description="Match every pair listed in a CSV (StableWrap).")
    ap.add_argument("csv")
    ap.add_argument("--quality", default="balanced", choices=["fast", "balanced", "best"])
    ap.add_argument("--features", default="auto", choices=["auto", "geometric", "dino", "dino+sd"])
    ap.add_argument("--uvs", action="store_true", help="also transfer the source's UVs")
    ap.add_argument("--weights", action="store_true", help="also transfer the source's vertex groups")
    ap.add_argument("--morph", type=int, default=0, help="also make N in-between shape keys")
    ap.add_argument("--save", help="save the .blend with all results here at the end")
    ap.add_argument("--report", help="report CSV (default: <csv>_report.csv)")
    ap.add_argument("--addon-dir", help="load the extension from this source folder if it is not installed")
    ap.add_argument("--row", type=int, default=None, metavar="N",
                    help="match only data row N (1-based) of the CSV: a farm task per pair (scripts/flamenco/)")
    ns = ap.parse_args(argv)

    sw = find_extension(ns.addon_dir)
    base_dir = os.path.dirname(os.path.abspath(ns.csv))
    with open(ns.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"source", "target"} <= set(rows[0].keys()):
        print(f"error: {ns.csv} needs a header with 'source' and 'target' columns and at least one row", file=sys.stderr)
        return 100
    if ns.row is not None:
        if not 1 <= ns.row <= len(rows):
            print(f"error: --row {ns.row}: {ns.csv} has {len(rows)} data row{'s' if len(rows) != 1 else ''}", file=sys.stderr)
            return 100
        rows = [rows[ns.row - 1]]
    report_path = ns.report or os.path.splitext(ns.csv)[0] + "_report.csv"
    failures = doubtful = 0
    results = []
    for i, row in enumerate(rows, start=1):
        t0 = time.perf_counter()
        messages = []
        status = "ok"
        try:
            src = get_object(row["source"].strip(), base_dir, sw)
            tgt = get_object(row["target"].strip(), base_dir, sw)
            progress_state = {"stage": None}

            def progress(stage, fraction, _i=i):
                if stage != progress_state["stage"]:
                    progress_state["stage"] = stage
                    print(f"[{_i}/{len(rows)}] {src.name} -> {tgt.name}: {stage}", flush=True)

            messages.append(sw.match(src, tgt, quality=row.get("quality") or ns.quality,
                                     features=row.get("features") or ns.features, progress=progress))
            if src.stablewrap.verdict in ("check", "wrong"):  # matched, but the engine doubts the map
                status, doubtful = src.stablewrap.verdict, doubtful + 1
            if truthy(row.get("uvs", ns.uvs)) and src.data.uv_layers:
                messages.append(sw.transfer_uvs(src, tgt))
            if truthy(row.get("weights", ns.weights)) and src.vertex_groups:
                messages.append(sw.transfer_weights(src, tgt))
            steps = int(row.get("morph") or ns.morph or 0)
            if steps:
                messages.append(sw.make_morph(src, steps))
            if row.get("output"):
                out = row["output"] if os.path.isabs(row["output"]) else os.path.join(base_dir, row["output"])
                bpy.ops.wm.save_as_mainfile(filepath=out, copy=True)
                messages.append(f"saved {out}")
        except (sw.StableWrapAddonError, ValueError, OSError) as exc:
            status, failures = "failed", failures + 1
            messages.append(str(exc))
        secs = time.perf_counter() - t0
        print(f"[{i}/{len(rows)}] {row['source']} -> {row['target']}: {status} ({secs:.1f} s) {messages[-1] if messages else ''}", flush=True)
        results.append({"source": row["source"], "target": row["target"], "status": status,
                        "seconds": f"{secs:.2f}", "message": " | ".join(messages)})
    tmp = report_path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["source", "target", "status", "seconds", "message"])
        w.writeheader()
        w.writerows(results)
    os.replace(tmp, report_path)
    if ns.save:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(ns.save))
    sw.stop_engine()
    print(f"{len(rows) - failures} of {len(rows)} pairs matched"
          + (f", {doubtful} with a verdict to check (status check / wrong)" if doubtful else "") + f"; report: {report_path}")
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(run(script_args(sys.argv)))
