"""Bake Texture: the source's image texture baked into the target's UV layout, packed into the
.blend and shown on the target by a material (Clear Results removes both)."""
from __future__ import annotations

from typing import Optional

import bpy
import numpy as np

from . import mesh_io
from .task_base import IMAGE_SUFFIX, TaskError, MappedTask, read_corner_uv


class BakeTextureTask(MappedTask):
    """Bakes the source's image texture into a new image in the target's UV layout."""

    label = "Bake Texture"
    cmd = "bake_texture"

    def __init__(self, source, target, image=None, resolution: int = 1024, uv_name: Optional[str] = None) -> None:
        super().__init__(source, target)
        self.image = bpy.data.images.get(image) if isinstance(image, str) else image
        self.resolution, self.uv_name = int(resolution), uv_name

    def prepare(self):
        arrays = self._common()
        image = self.image or find_image(self.source)
        if image is None:
            raise TaskError(f"source '{self.source.name}' has no image texture in its material to bake from")
        w, h = image.size
        if w == 0 or h == 0:
            raise TaskError(f"image '{image.name}' has no pixels (missing file?)")
        px = np.empty(w * h * 4, np.float32)
        image.pixels.foreach_get(px)
        self.image_name = image.name
        _, arrays["src_corner_uv"] = read_corner_uv(self.source.data, self.src_loops, self.uv_name)
        tgt_layer = self.target.data.uv_layers.active
        if tgt_layer is None:
            raise TaskError(f"target '{self.target.name}' has no UV map to bake into: Transfer UVs or unwrap it first")
        _, arrays["tgt_corner_uv"] = read_corner_uv(self.target.data, self.tgt_loops, tgt_layer.name)
        self.tgt_uv_name, self.src_is_float = tgt_layer.name, bool(image.is_float)
        # the bake holds the source's values as they are: it reads them in the source's colour
        # space (a normal or roughness map is Non-Color, an albedo sRGB) and keeps its alpha mode
        self.src_colorspace, self.src_alpha_mode = image.colorspace_settings.name, image.alpha_mode
        arrays["src_image"] = px.reshape(h, w, 4)[::-1]  # Blender stores rows bottom-up; the engine top-down
        arrays["src_vertices"] = mesh_io.basis_positions(self.source)
        return self.cmd, {"size": [self.resolution, self.resolution], "padding": 16}, arrays

    def apply(self, data, arrays):
        img = arrays.get("image")
        if img is None or img.ndim != 3 or img.shape[2] not in (3, 4):
            raise TaskError("engine reply has no baked image")
        self._still_same()
        if img.shape[:2] != (self.resolution, self.resolution):
            raise TaskError(f"engine reply image is {img.shape[1]}x{img.shape[0]}, expected {self.resolution}x{self.resolution}")
        img = np.asarray(img, np.float32)[::-1]  # back to Blender's bottom-up rows
        h, w = img.shape[:2]
        if img.shape[2] == 3:
            img = np.concatenate([img, np.ones((h, w, 1), np.float32)], axis=2)
        name = f"{self.target.name}{IMAGE_SUFFIX}"
        out = bpy.data.images.get(name)
        if out is not None and (tuple(out.size) != (w, h) or out.is_float != self.src_is_float):
            bpy.data.images.remove(out)
            out = None
        if out is None:  # 8-bit like the source unless the source is a float (HDR) image
            out = bpy.data.images.new(name, width=w, height=h, alpha=True, float_buffer=self.src_is_float)
        # before the pixels: a generated image may rebuild its buffer when its colour space changes
        out.colorspace_settings.name = self.src_colorspace
        out.alpha_mode = self.src_alpha_mode
        out.pixels.foreach_set(np.ascontiguousarray(img, np.float32).reshape(-1))
        out.update()
        # packed into the .blend: the pixels survive save / reopen and undo / redo (a generated
        # image's pixels are not stored otherwise)
        out.file_format = "OPEN_EXR" if out.is_float else "PNG"
        out.pack()
        shown = show_bake(self.target, out, self.tgt_uv_name)
        return f"Baked '{self.image_name}' into image '{name}' ({w}x{h}, packed in the .blend); {shown}"


def show_bake(target, image, uv_name: str) -> str:
    """A material on ``target`` that shows the baked ``image`` through the UV map ``uv_name``
    (the image's user, so that it is saved); returns a short description for the report.

    A target without materials gets it on every face; a target with its own keeps them and
    gets one more slot, which the artist assigns where wanted."""
    name = f"{target.name}{IMAGE_SUFFIX}"
    mat = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5 creates materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    tex = nodes.new("ShaderNodeTexImage")
    uv = nodes.new("ShaderNodeUVMap")
    tex.image, uv.uv_map = image, uv_name
    out.location, bsdf.location, tex.location, uv.location = (300, 0), (0, 0), (-350, 0), (-600, 0)
    links.new(uv.outputs["UV"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    mats = target.data.materials
    if mat.name in [m.name for m in mats if m is not None]:
        return f"shown by material '{mat.name}'"
    had = len(mats)
    mats.append(mat)
    target.stablewrap.bake_material = mat.name
    if had == 0:
        return f"shown by the new material '{mat.name}'"
    return f"material '{mat.name}' added as slot {had + 1}: assign it to faces to see the bake"


def remove_bake(target) -> list[str]:
    """Remove the bake material, its slot and the baked image StableWrap made for ``target``."""
    removed = []
    name = target.stablewrap.bake_material
    mat = bpy.data.materials.get(name) if name else None
    if mat is not None:
        mats = target.data.materials
        for i in range(len(mats) - 1, -1, -1):
            if mats[i] is not None and mats[i].name == name:
                mats.pop(index=i)
        bpy.data.materials.remove(mat)
        removed.append(f"{target.name}: material {name}")
    target.stablewrap.bake_material = ""
    image = bpy.data.images.get(f"{target.name}{IMAGE_SUFFIX}")
    if image is not None:
        bpy.data.images.remove(image)
        removed.append(f"{target.name}: image {target.name}{IMAGE_SUFFIX}")
    return removed


def find_image(obj):
    """The first image texture node's image in the object's materials."""
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or mat.node_tree is None:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "TEX_IMAGE" and node.image is not None:
                return node.image
    return None
