"""The jobs behind every button: read Blender data -> worker request -> write the result back.

A task has two halves that run on Blender's main thread: ``prepare()`` reads
and validates the meshes and returns the worker request, ``apply()`` checks
the reply completely and only then writes it into the scene. A failed or
cancelled job never reaches ``apply()``, so the scene stays unchanged. The
modal operators (UI) and the blocking API (``--background``, scripts) share
these classes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import mesh_io
from .bake_tasks import BakeTextureTask, find_image, remove_bake, show_bake  # noqa: F401  (re-exported; clear_results uses remove_bake)
from .landmark_tasks import DetectLandmarksTask, write_detected_landmarks  # noqa: F401  (re-exported)
from .mesh_io import MeshDataError
from .morph_tasks import MorphTask, add_morph_driver, remove_morph  # noqa: F401  (re-exported; clear_results uses remove_morph)
from .part_tasks import MatchPartTask, NoMatch, PickFromImageTask, read_image_rgba, select_vertices  # noqa: F401  (re-exported)
from .task_base import (  # noqa: F401  (re-exported: callers use tasks.<name>)
    ATTR_COLOR, ATTR_CONFIDENCE, ATTR_SOURCE_BARY, ATTR_SOURCE_FACE, ATTR_TARGET_BARY, ATTR_TARGET_FACE, FIT_KEY,
    IMAGE_SUFFIX, MORPH_PREFIX, UV_NAME, EditModeGuard, MappedTask, Task, TaskError, applied_on_top, check_faces,
    check_length, check_pair, check_unchanged, correspondence_colors, interpolate, landmark_pairs, mesh_signature,
    read_corner_uv, read_pair, resolve_object, stored_map, topology_key,
)


# meshes from this size on are matched on decimated working copies at a cost the artist should
# know before waiting (the engine's notice threshold, engine.pair_context.LARGE_MESH_VERTICES)
LARGE_MESH_VERTICES = 50_000


class MatchTask(Task):
    """Dense correspondence; writes maps, confidence, colours and the fit shape key."""

    label = "Match"
    cmd = "match"

    def __init__(self, source, target, features: str = "auto", quality: str = "balanced", exclude_group: str = "",
                 use_evaluated: bool = False, show_fit: bool = True, method: Optional[str] = None,
                 device: Optional[str] = None, orientation: str = "auto", skin_group: str = "",
                 rest_pose: bool = False, keypoints: str = "auto") -> None:
        self.source = resolve_object(source, "source")
        self.target = resolve_object(target, "target")
        self.features, self.quality, self.method, self.device = features, quality, method, device
        self.orientation = orientation
        self.exclude_group = exclude_group
        self.skin_group = skin_group
        self.rest_pose = rest_pose
        self.keypoints = keypoints
        self.use_evaluated = use_evaluated
        self.show_fit = show_fit

    def prepare(self):
        check_pair(self.source, self.target)
        arrays = read_pair(self, self.use_evaluated, self.rest_pose)
        try:
            exclude = mesh_io.vertex_group_mask(self.source, self.exclude_group) if self.exclude_group else None
            skin = mesh_io.vertex_group_mask(self.source, self.skin_group) if self.skin_group else None
        except MeshDataError as exc:
            raise TaskError(str(exc)) from None
        lms = landmark_pairs(self.source, self.target)
        if len(lms):
            arrays["landmarks"] = lms
        if exclude is not None:
            if exclude.all():
                raise TaskError(f"exclusion group '{self.exclude_group}' covers the whole source; nothing left to match")
            arrays["exclude"] = exclude
        if skin is not None:
            if not skin.any():
                raise TaskError(f"skin group '{self.skin_group}' holds no vertex of '{self.source.name}'")
            arrays["skin"] = skin
        big = [(role, len(arrays[key])) for role, key in (("source", "src_vertices"), ("target", "tgt_vertices"))
               if len(arrays[key]) >= LARGE_MESH_VERTICES]
        if big:
            what = " and ".join(f"{role} {n:,}" for role, n in big)
            self.start_note = (f"large mesh ({what} vertices): matched on decimated working copies, then fitted and "
                               "projected at full resolution; this takes a minute or more (Esc cancels)")
        # Blender's world is Z-up: the semantic features' orbit renders must turn around Z (the
        # engine's default is Y-up, as OBJ / glTF files are)
        args = {"features": self.features, "quality": self.quality, "config": {"semantic": {"up": "z"}}}
        if self.method:
            args["method"] = self.method
        if self.device:
            args["device"] = self.device
        if self.orientation != "auto":  # (engines before the stated orientation know no such argument)
            args["orientation"] = self.orientation
        if self.keypoints != "auto":
            args["keypoints"] = self.keypoints
        return self.cmd, args, arrays

    def check(self, arrays: dict) -> dict:
        ns, nt = len(self.src.vertices), len(self.tgt.vertices)
        out = {
            "src_to_tgt_face": check_length("src_to_tgt_face", arrays.get("src_to_tgt_face"), (ns,)),
            "src_to_tgt_bary": check_length("src_to_tgt_bary", arrays.get("src_to_tgt_bary"), (ns, 3)),
            "tgt_to_src_face": check_length("tgt_to_src_face", arrays.get("tgt_to_src_face"), (nt,)),
            "tgt_to_src_bary": check_length("tgt_to_src_bary", arrays.get("tgt_to_src_bary"), (nt, 3)),
            "fitted_vertices": check_length("fitted_vertices", arrays.get("fitted_vertices"), (ns, 3)),
            "confidence": check_length("confidence", arrays.get("confidence"), (ns,)),
        }
        check_faces("src_to_tgt_face", out["src_to_tgt_face"], len(self.tgt.triangles))
        check_faces("tgt_to_src_face", out["tgt_to_src_face"], len(self.src.triangles))
        return out

    def apply(self, data, arrays):
        out = self.check(arrays)
        check_unchanged((self.source, self.target), self.signature, "while matching; run Match again")
        # what the previous map made (on this pair, or on the source's former target) is stale now
        stale = remove_derived((self.source, self.target, self.source.stablewrap.matched_with))
        fitted_local = mesh_io.to_local(out["fitted_vertices"], self.src.matrix_world)
        src_colors = correspondence_colors(self.src.vertices)
        tgt_colors = interpolate(src_colors, self.src.triangles, out["tgt_to_src_face"], out["tgt_to_src_bary"])
        with EditModeGuard(self.source, self.target):
            sm, tm = self.source.data, self.target.data
            mesh_io.write_attribute(sm, ATTR_TARGET_FACE, out["src_to_tgt_face"], "INT")
            mesh_io.write_attribute(sm, ATTR_TARGET_BARY, out["src_to_tgt_bary"], "FLOAT_VECTOR")
            mesh_io.write_attribute(sm, ATTR_CONFIDENCE, np.clip(out["confidence"], 0.0, 1.0), "FLOAT")
            mesh_io.write_attribute(tm, ATTR_SOURCE_FACE, out["tgt_to_src_face"], "INT")
            mesh_io.write_attribute(tm, ATTR_SOURCE_BARY, out["tgt_to_src_bary"], "FLOAT_VECTOR")
            for mesh, colors in ((sm, src_colors), (tm, tgt_colors)):
                mesh_io.write_attribute(mesh, ATTR_COLOR, colors, "FLOAT_COLOR")
                mesh.color_attributes.active_color = mesh.color_attributes[ATTR_COLOR]
            had_keys = sm.shape_keys is not None
            mesh_io.write_shape_key(self.source, FIT_KEY, fitted_local, 1.0 if self.show_fit else 0.0)
            if not had_keys:
                self.source.stablewrap.created_basis = True
            self.source.stablewrap.matched_with = self.target
            self.target.stablewrap.matched_with = self.source
            self.target.stablewrap.source_topology = topology_key(self.src.triangles)
        meta = data.get("meta") or {}
        secs = meta.get("worker_seconds")
        conf = float(np.mean(out["confidence"])) if len(out["confidence"]) else 0.0
        msg = (f"Matched '{self.source.name}' to '{self.target.name}'"
               + (f" in {secs:.1f} s" if isinstance(secs, (int, float)) else "") + f", mean confidence {conf:.2f}")
        # what the engine decided on its own (parts left out, working copies, a suspect fit) is said too
        verdict = (meta.get("verdict") or {}).get("verdict") if isinstance(meta.get("verdict"), dict) else None
        if verdict in ("check", "wrong"):  # said first: the sidebar and the status bar cut long reports
            msg = (f"{'WRONG' if verdict == 'wrong' else 'CHECK'}: {meta['verdict'].get('reason', '')}; " + msg)
        parts = meta.get("target_parts") or {}
        if parts.get("left_out"):
            msg += f"; {parts['left_out']} small or detached target parts left out"
        notices = [str(n) for n in meta.get("notices") or []]
        if notices:  # the engine's fallbacks and decisions: two in the report, all in the console
            msg += "; " + "; ".join(notices[:2]) + (f" (+{len(notices) - 2} more in the console)" if len(notices) > 2 else "")
            for n in notices:
                print(f"StableWrap Match: {n}")
        for line in riding_lines(meta.get("pieces")):
            print(f"StableWrap Match: {line}")
        if self.pose_note:
            msg += f"; {self.pose_note}"
        if stale:
            msg += "; removed the previous map's results: " + ", ".join(stale)
        # the verdict stays with the source (the panel's box, batch reports): none from an older engine
        self.source.stablewrap.verdict = verdict or ""
        self.source.stablewrap.verdict_reason = str(meta["verdict"].get("reason", "")) if verdict else ""
        if verdict in ("check", "wrong"):
            self.report_level = "WARNING"
        on_top = applied_on_top(self.source)
        if on_top:
            msg += f"; Blender shows the fit with the source's {on_top} on top (set keys to 0, hide modifiers to see it alone)"
        return msg


def riding_lines(pieces) -> list:
    """One console line per piece of the source that rode along with its skin (meta "pieces"):
    its number, kind, how it was carried, its size and where it sits."""
    out = []
    for r in (pieces or {}).get("riding", []):
        centre = ", ".join(f"{c:.3g}" for c in r.get("centre", []))
        out.append(f"piece {r.get('piece')}: {r.get('kind')}, carried {r.get('carried')} "
                   f"({r.get('vertices')} vertices at {centre})")
    return out


class TransferUVTask(MappedTask):
    """Carries the source's active UV map onto the target (seam-aware) as 'StableWrap UV'."""

    label = "Transfer UVs"
    cmd = "transfer_uvs"

    def __init__(self, source, target, uv_name: Optional[str] = None, new_name: str = UV_NAME) -> None:
        super().__init__(source, target)
        self.uv_name, self.new_name = uv_name, new_name

    def prepare(self):
        arrays = self._common()
        self.src_uv_name, arrays["src_corner_uv"] = read_corner_uv(self.source.data, self.src_loops, self.uv_name)
        arrays["src_vertices"] = mesh_io.basis_positions(self.source)
        # the triangles of one polygon share its corners: they are laid out in one chart
        arrays["tgt_tri_to_poly"] = np.asarray(self.tgt_polys, np.int64)
        return self.cmd, {}, arrays

    def apply(self, data, arrays):
        cuv = check_length("corner_uv", arrays.get("corner_uv"), (len(self.tgt_tris), 3, 2))
        self._still_same()
        mesh = self.target.data
        loop_uv = np.zeros((len(mesh.loops), 2), np.float32)
        loop_uv[self.tgt_loops.reshape(-1)] = cuv.reshape(-1, 2)
        with EditModeGuard(self.target):
            layer = mesh.uv_layers.get(self.new_name) or mesh.uv_layers.new(name=self.new_name)
            if layer is None:
                raise TaskError(f"'{self.target.name}' cannot take another UV map (the limit is 8)")
            layer.uv.foreach_set("vector", loop_uv.reshape(-1))
            mesh.uv_layers.active = layer
        seams = len(arrays.get("seam_faces", ()))
        return f"UV map '{self.new_name}' written on '{self.target.name}' from '{self.src_uv_name}'" + (f" ({seams} triangles across seams)" if seams else "")


GROUP_SUFFIX = ".sw"  # a transferred group whose name the artist's own group already has


class TransferWeightsTask(MappedTask):
    """Copies every vertex group of the source onto the target."""

    label = "Transfer Weights"
    cmd = "transfer_weights"

    def __init__(self, source, target, normalize: bool = False) -> None:
        super().__init__(source, target)
        self.normalize = normalize

    def prepare(self):
        arrays = self._common()
        self.names, weights = mesh_io.read_vertex_groups(self.source)
        if not self.names:
            raise TaskError(f"source '{self.source.name}' has no vertex groups to transfer")
        arrays["values"] = weights
        return self.cmd, {"mode": "barycentric", "normalize": self.normalize}, arrays

    def apply(self, data, arrays):
        vals = check_length("values", arrays.get("values"), (len(self.target.data.vertices), len(self.names)))
        self._still_same()
        created = [g for g in self.target.stablewrap.created_groups.split("\t") if g]
        kept = []
        with EditModeGuard(self.target):
            written = []
            for i, name in enumerate(self.names):
                out = name
                # the artist's own group of that name stays as it is: the transfer gets a suffixed one
                while out in self.target.vertex_groups and out not in created:
                    out += GROUP_SUFFIX
                if out != name:
                    kept.append(name)
                mesh_io.write_vertex_group(self.target, out, vals[:, i])
                written.append(out)
            self.target.stablewrap.created_groups = "\t".join(dict.fromkeys(created + written))
        msg = f"{len(self.names)} vertex group{'s' if len(self.names) != 1 else ''} transferred to '{self.target.name}'"
        if kept:
            msg += (f"; {len(kept)} of its own groups kept as they were, the transfer written as "
                    f"'{kept[0]}{GROUP_SUFFIX}'" + (" etc." if len(kept) > 1 else ""))
        return msg


def clear_results(source, target) -> list[str]:
    """Remove everything StableWrap wrote on the two objects; returns what was removed."""
    removed = []
    for obj in (source, target):
        if obj is None or obj.type != "MESH":
            continue
        with EditModeGuard(obj):
            mesh = obj.data
            for name in (ATTR_TARGET_FACE, ATTR_TARGET_BARY, ATTR_CONFIDENCE, ATTR_SOURCE_FACE, ATTR_SOURCE_BARY, ATTR_COLOR):
                if mesh_io.remove_attribute(mesh, name):
                    removed.append(f"{obj.name}.{name}")
            if mesh_io.remove_shape_key(obj, FIT_KEY):
                removed.append(f"{obj.name}: {FIT_KEY}")
            removed += _remove_derived(obj)
            obj.stablewrap.matched_with = None
            obj.stablewrap.verdict, obj.stablewrap.verdict_reason = "", ""
        removed += remove_bake(obj)
    return removed


def remove_derived(objects) -> list[str]:
    """Remove what was made from a map (morph keys, the transferred UV map, transferred vertex
    groups, the bake) on each mesh object of ``objects``: stale once a new map replaces it.
    Returns what was removed ("<object>: <what>")."""
    removed, seen = [], set()
    for obj in objects:
        if obj is None or obj.type != "MESH" or obj.name in seen:
            continue
        seen.add(obj.name)
        with EditModeGuard(obj):
            removed += _remove_derived(obj)
        removed += remove_bake(obj)
    return removed


def _remove_derived(obj) -> list[str]:
    removed = []
    n = remove_morph(obj)
    if n:
        removed.append(f"{obj.name}: {n} morph keys")
    layer = obj.data.uv_layers.get(UV_NAME)
    if layer is not None:
        obj.data.uv_layers.remove(layer)
        removed.append(f"{obj.name}: {UV_NAME}")
    groups = [g for g in obj.stablewrap.created_groups.split("\t") if g]
    for g in groups:
        vg = obj.vertex_groups.get(g)
        if vg is not None:
            obj.vertex_groups.remove(vg)
    if groups:
        removed.append(f"{obj.name}: {len(groups)} vertex group{'s' if len(groups) != 1 else ''}")
        obj.stablewrap.created_groups = ""
    return removed


# --------------------------------------------------------------------------- part matching


# the landmark and part tasks live in their own modules; ``tasks.X`` keeps naming them all
