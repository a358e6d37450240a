"""Part tasks: a source vertex group or an image click -> the matching part of the target,
written as a selection and / or a vertex group (Best Segmentation Buddies in the engine)."""
from __future__ import annotations

from typing import Optional

import bpy
import numpy as np

from . import mesh_io
from .mesh_io import MeshDataError
from .task_base import EditModeGuard, Task, TaskError, mesh_signature, resolve_object, check_pair, check_unchanged


class NoMatch(TaskError):
    """The engine found no counterpart of the part on the target (a valid answer; nothing is written)."""

    type = "NoMatch"


def read_image_rgba(image) -> np.ndarray:
    """(H, W, 4) float32 pixels of a Blender image, row 0 = top (Blender stores row 0 = bottom)."""
    if image is None:
        raise TaskError("no image given; open an image in the Image Editor or pick one")
    w, h = (int(x) for x in image.size)
    if w == 0 or h == 0:
        raise TaskError(f"image '{image.name}' has no pixels (missing file or unsupported format)")
    ch = int(image.channels)
    if ch not in (1, 2, 3, 4):
        raise TaskError(f"image '{image.name}' has {ch} channels; use an RGB or RGBA image")
    buf = np.empty(w * h * ch, np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, ch)[::-1]
    if ch == 4:
        rgba = px
    elif ch == 3:
        rgba = np.concatenate([px, np.ones((h, w, 1), np.float32)], axis=2)
    else:  # grey (+ alpha)
        alpha = px[..., 1:2] if ch == 2 else np.ones((h, w, 1), np.float32)
        rgba = np.concatenate([np.repeat(px[..., :1], 3, axis=2), alpha], axis=2)
    rgba = np.ascontiguousarray(rgba, np.float32)
    if not np.all(np.isfinite(rgba)):
        raise TaskError(f"image '{image.name}' has NaN or infinite pixel values")
    return rgba


def select_vertices(obj, mask: np.ndarray) -> None:
    """Make ``mask`` (n,) bool the object's vertex selection (edges and faces follow; object mode)."""
    mesh = obj.data
    mask = np.asarray(mask, bool)
    mesh.vertices.foreach_set("select", mask)
    ev = np.empty(len(mesh.edges) * 2, np.int32)
    if len(ev):
        mesh.edges.foreach_get("vertices", ev)
        mesh.edges.foreach_set("select", mask[ev.reshape(-1, 2)].all(axis=1))
    if len(mesh.polygons):
        starts = np.empty(len(mesh.polygons), np.int32)
        mesh.polygons.foreach_get("loop_start", starts)
        corner = mask[mesh_io.read_corner_verts(mesh)].astype(np.int8)
        mesh.polygons.foreach_set("select", np.minimum.reduceat(corner, starts).astype(bool))
    mesh.update()


class _PartResultTask(Task):
    """Writes a part result (target vertex indices) as a selection and/or a vertex group on the target."""

    target = None
    new_group = ""
    select = True

    def _still_same(self) -> None:
        check_unchanged((self.target,), (self.signature,), "while matching; run it again")

    def apply(self, data, arrays):
        bsb = arrays.get("bsb_vertex")
        verts = arrays.get("target_vertices")
        if bsb is None or verts is None:
            raise TaskError("engine reply has no 'bsb_vertex' / 'target_vertices'")
        n = len(self.target.data.vertices)
        verts = np.asarray(verts).reshape(-1)
        if int(bsb) < 0:
            raise NoMatch(f"no match: {self.what} has no counterpart on '{self.target.name}'; nothing was changed")
        if len(verts) == 0 or verts.min() < 0 or verts.max() >= n or not 0 <= int(bsb) < n:
            raise TaskError(f"engine reply refers to vertices outside '{self.target.name}' ({n} vertices)")
        self._still_same()
        mask = np.zeros(n, bool)
        mask[verts] = True
        score = float(np.asarray(arrays.get("score", 0.0)))
        with EditModeGuard(self.target):
            if self.new_group:
                mesh_io.write_vertex_group(self.target, self.new_group, mask.astype(np.float32))
                created = [g for g in self.target.stablewrap.created_groups.split("\t") if g and g != self.new_group]
                self.target.stablewrap.created_groups = "\t".join(created + [self.new_group])
            if self.select:
                select_vertices(self.target, mask)
        where = f" as vertex group '{self.new_group}'" if self.new_group else ""
        return (f"Matched {self.what} to {int(mask.sum())} vertices of '{self.target.name}'{where} "
                f"(score {score:.2f})")


class MatchPartTask(_PartResultTask):
    """Source vertex group -> the corresponding part of the target, as a new vertex group there."""

    label = "Match Part"
    cmd = "match_part"

    def __init__(self, source, target, group_name: str, new_group: Optional[str] = None, select: bool = True,
                 k: Optional[int] = None) -> None:
        self.source = resolve_object(source, "source")
        self.target = resolve_object(target, "target")
        self.group_name = group_name or ""
        self.new_group = self.group_name if new_group is None else new_group
        self.select, self.k = bool(select), k
        self.what = f"'{self.group_name}'"

    def prepare(self):
        check_pair(self.source, self.target)
        if not self.group_name:
            raise TaskError(f"pick a vertex group of '{self.source.name}' to match")
        if not self.new_group and not self.select:
            raise TaskError("nothing to write: give a target vertex group name or turn on Select")
        try:
            part = mesh_io.vertex_group_mask(self.source, self.group_name)
            src = mesh_io.read_mesh(self.source, "source")
            tgt = mesh_io.read_mesh(self.target, "target")
        except MeshDataError as exc:
            raise TaskError(str(exc)) from None
        if not part.any():
            raise TaskError(f"vertex group '{self.group_name}' of '{self.source.name}' is empty "
                            "(no vertex with weight above 0.5); assign the part's vertices to it")
        if part.all():
            raise TaskError(f"vertex group '{self.group_name}' covers the whole of '{self.source.name}'; "
                            "it must hold only the part to match")
        self.signature = mesh_signature(self.target)
        arrays = {"src_vertices": src.world_vertices(), "src_faces": src.triangles,
                  "tgt_vertices": tgt.world_vertices(), "tgt_faces": tgt.triangles,
                  "part": np.nonzero(part)[0].astype(np.int32)}
        args = {} if self.k is None else {"k": int(self.k)}
        return self.cmd, args, arrays


class PickFromImageTask(_PartResultTask):
    """A click on a reference image -> the matching part of the target, selected (and/or as a vertex group)."""

    label = "Pick from Image"
    cmd = "match_image_part"

    def __init__(self, target, image, x: float, y: float, new_group: str = "", select: bool = True,
                 device: Optional[str] = None) -> None:
        self.target = resolve_object(target, "target")
        if isinstance(image, str):
            found = bpy.data.images.get(image)
            if found is None:
                raise TaskError(f"image '{image}' not found")
            image = found
        self.image = image
        self.x, self.y = float(x), float(y)
        self.new_group, self.select, self.device = new_group or "", bool(select), device
        self.what = f"the clicked part of '{getattr(image, 'name', '?')}'"

    def prepare(self):
        try:
            mesh_io.check_mesh_object(self.target, "target")
        except MeshDataError as exc:
            raise TaskError(str(exc)) from None
        if not self.new_group and not self.select:
            raise TaskError("nothing to write: give a target vertex group name or turn on Select")
        rgba = read_image_rgba(self.image)
        h, w = rgba.shape[:2]
        if not (np.isfinite(self.x) and np.isfinite(self.y) and 0 <= self.x < w and 0 <= self.y < h):
            raise TaskError(f"click ({self.x:g}, {self.y:g}) is outside the {w}x{h} image '{self.image.name}'")
        if rgba[int(self.y), int(self.x), 3] <= 0.5:
            raise TaskError(f"click ({self.x:g}, {self.y:g}) is on the transparent background of "
                            f"'{self.image.name}'; click on the object")
        try:
            tgt = mesh_io.read_mesh(self.target, "target")
        except MeshDataError as exc:
            raise TaskError(str(exc)) from None
        self.signature = mesh_signature(self.target)
        args = {"click": [self.x, self.y]}
        if self.device:
            args["device"] = self.device
        return self.cmd, args, {"image": rgba, "tgt_vertices": tgt.world_vertices(), "tgt_faces": tgt.triangles}
