"""Fast numpy exchange with Blender meshes: read geometry, write attributes and shape keys.

Everything goes through ``foreach_get`` / ``foreach_set`` on flat float32 /
int32 buffers (never per-element Python loops), with the ``position`` and
corner attributes as the fast paths. Face indices refer to the mesh's loop
triangles (Blender's own triangulation, ``mesh.loop_triangles``), so
non-triangle faces are handled and a triangle index plus barycentric
coordinates always names a point on the surface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import bpy
import numpy as np


class MeshDataError(Exception):
    """A mesh cannot be used (not a mesh, no faces, evaluated topology differs...)."""


@dataclass
class MeshArrays:
    """Geometry of one object as numpy arrays.

    Attributes
    ----------
    vertices : (n, 3) float32   local (object) coordinates
    triangles : (t, 3) int32    loop-triangle vertex indices
    tri_loops : (t, 3) int32    loop (corner) indices of every triangle corner
    tri_polys : (t,) int32      polygon of every triangle
    matrix_world : (4, 4) float64
    """

    vertices: np.ndarray
    triangles: np.ndarray
    tri_loops: np.ndarray
    tri_polys: np.ndarray
    matrix_world: np.ndarray

    def world_vertices(self) -> np.ndarray:
        """(n, 3) float64 vertices in world space."""
        return to_world(self.vertices, self.matrix_world)


def matrix_to_numpy(matrix) -> np.ndarray:
    """(4, 4) float64 from a mathutils Matrix (numpy would give float32 by default)."""
    return np.array([list(row) for row in matrix], dtype=np.float64)


def to_world(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return p @ matrix[:3, :3].T + matrix[:3, 3]


def to_local(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(matrix)
    return to_world(points, inv)


def read_positions(mesh: bpy.types.Mesh) -> np.ndarray:
    """(n, 3) float32 vertex positions."""
    n = len(mesh.vertices)
    buf = np.empty(n * 3, np.float32)
    if n:
        pos = mesh.attributes.get("position")
        if pos is not None:
            pos.data.foreach_get("vector", buf)
        else:  # a mesh in edit mode exposes no attributes (after update_from_editmode the vertices are current)
            mesh.vertices.foreach_get("co", buf)
    return buf.reshape(n, 3)


def read_corner_verts(mesh: bpy.types.Mesh) -> np.ndarray:
    """(loops,) int32 vertex of every face corner."""
    buf = np.empty(len(mesh.loops), np.int32)
    if len(buf):
        attr = mesh.attributes.get(".corner_vert")
        if attr is not None:
            attr.data.foreach_get("value", buf)
        else:  # edit mode exposes no attributes
            mesh.loops.foreach_get("vertex_index", buf)
    return buf


def read_triangles(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop triangles: vertices (t,3) int32, loops (t,3) int32, polygon (t,) int32.

    Only the triangles' loops go through ``loop_triangles.foreach_get`` (its
    ``vertices`` property is three times slower); vertices come from the
    corner-vertex attribute, polygons from ``loop_triangle_polygons``.
    """
    mesh.calc_loop_triangles()
    t = len(mesh.loop_triangles)
    loops = np.empty(t * 3, np.int32)
    polys = np.empty(t, np.int32)
    if t:
        mesh.loop_triangles.foreach_get("loops", loops)
        mesh.loop_triangle_polygons.foreach_get("value", polys)
    loops = loops.reshape(t, 3)
    tris = read_corner_verts(mesh)[loops] if t else np.empty((0, 3), np.int32)
    return tris, loops, polys


def check_mesh_object(obj, role: str) -> None:
    """Raise :class:`MeshDataError` unless ``obj`` is a mesh object with faces."""
    if obj is None:
        raise MeshDataError(f"no {role} object set")
    if obj.type != "MESH":
        kind = obj.type.lower()
        raise MeshDataError(f"{role} '{obj.name}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not a mesh")
    if len(obj.data.polygons) == 0:
        raise MeshDataError(f"{role} '{obj.name}' has no faces (a point cloud or edges only); a surface is needed")


def read_mesh(obj, role: str = "mesh", evaluated: bool = False, depsgraph=None) -> MeshArrays:
    """Geometry of ``obj``, optionally with modifiers (and shape keys) applied.

    The evaluated mesh is used only when its vertex count equals the
    original's, since results are written back per original vertex; otherwise
    :class:`MeshDataError` says so.
    """
    check_mesh_object(obj, role)
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    if not evaluated:
        mesh = obj.data
        return MeshArrays(read_positions(mesh), *read_triangles(mesh), matrix_to_numpy(obj.matrix_world))
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    try:
        n_orig, n_eval = len(obj.data.vertices), len(mesh.vertices)
        if n_eval != n_orig:
            raise MeshDataError(
                f"{role} '{obj.name}': the modifiers change the vertex count ({n_orig} -> {n_eval}); "
                "turn off 'Use modifiers' or apply the modifiers")
        if len(mesh.polygons) == 0:
            raise MeshDataError(f"{role} '{obj.name}' has no faces after modifiers")
        return MeshArrays(read_positions(mesh), *read_triangles(mesh), matrix_to_numpy(obj.matrix_world))
    finally:
        ev.to_mesh_clear()


# --------------------------------------------------------------------------- attributes

_VALUE_KEY = {
    "FLOAT": ("value", 1), "INT": ("value", 1), "BOOLEAN": ("value", 1),
    "FLOAT_VECTOR": ("vector", 3), "FLOAT_COLOR": ("color", 4), "FLOAT2": ("vector", 2),
    "INT32_2D": ("value", 2), "BYTE_COLOR": ("color", 4),
}


def _domain_size(mesh, domain: str) -> int:
    return {"POINT": len(mesh.vertices), "CORNER": len(mesh.loops), "FACE": len(mesh.polygons), "EDGE": len(mesh.edges)}[domain]


def write_attribute(mesh: bpy.types.Mesh, name: str, values: np.ndarray, type_: str, domain: str = "POINT"):
    """Create or replace attribute ``name`` and fill it from ``values`` ((n,) or (n, k))."""
    key, width = _VALUE_KEY[type_]
    n = _domain_size(mesh, domain)
    dtype = np.int32 if type_ in ("INT", "INT32_2D") else (bool if type_ == "BOOLEAN" else np.float32)
    flat = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    if flat.size != n * width:
        raise MeshDataError(f"attribute {name}: {flat.size // max(width, 1)} values for {n} {domain.lower()} elements")
    attr = mesh.attributes.get(name)
    if attr is not None and (attr.data_type != type_ or attr.domain != domain):
        mesh.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = mesh.attributes.new(name, type_, domain)
    attr.data.foreach_set(key, flat)
    return attr


def read_attribute(mesh: bpy.types.Mesh, name: str, width_hint: Optional[int] = None) -> Optional[np.ndarray]:
    """Values of attribute ``name`` as (n,) or (n, k), or None when it does not exist."""
    attr = mesh.attributes.get(name)
    if attr is None:
        return None
    key, width = _VALUE_KEY[attr.data_type]
    n = _domain_size(mesh, attr.domain)
    dtype = np.int32 if attr.data_type in ("INT", "INT32_2D") else (bool if attr.data_type == "BOOLEAN" else np.float32)
    buf = np.empty(n * width, dtype)
    if n:
        attr.data.foreach_get(key, buf)
    return buf if width == 1 else buf.reshape(n, width)


def remove_attribute(mesh: bpy.types.Mesh, name: str) -> bool:
    attr = mesh.attributes.get(name)
    if attr is None:
        return False
    mesh.attributes.remove(attr)
    return True


# --------------------------------------------------------------------------- shape keys


def write_shape_key(obj, name: str, coords: np.ndarray, value: float, replace: bool = True):
    """Add (or refill) shape key ``name`` with ``coords`` (n, 3) in object space; sets ``value`` explicitly.

    A Basis key is created first when the object has none.
    """
    n = len(obj.data.vertices)
    flat = np.ascontiguousarray(coords, np.float32).reshape(-1)
    if flat.size != n * 3:
        raise MeshDataError(f"shape key {name}: {flat.size // 3} positions for {n} vertices")
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    keys = obj.data.shape_keys.key_blocks
    key = keys.get(name)
    if key is None:
        key = obj.shape_key_add(name=name, from_mix=False)
    key.points.foreach_set("co", flat)
    key.slider_min, key.slider_max = 0.0, 1.0
    key.value = float(value)  # new keys start at 1.0 in Blender 5.0: always set it
    obj.data.update()
    return key


def read_shape_key(obj, name: str) -> Optional[np.ndarray]:
    sk = obj.data.shape_keys
    if sk is None or sk.key_blocks.get(name) is None:
        return None
    key = sk.key_blocks[name]
    buf = np.empty(len(key.points) * 3, np.float32)
    key.points.foreach_get("co", buf)
    return buf.reshape(-1, 3)


def basis_positions(obj) -> np.ndarray:
    """(n, 3) float32: the reference shape key's positions, or the mesh positions without keys."""
    sk = obj.data.shape_keys
    if sk is not None and sk.reference_key is not None:
        key = sk.reference_key
        buf = np.empty(len(key.points) * 3, np.float32)
        key.points.foreach_get("co", buf)
        return buf.reshape(-1, 3)
    return read_positions(obj.data)


def remove_shape_key(obj, name: str) -> bool:
    sk = obj.data.shape_keys
    if sk is None or sk.key_blocks.get(name) is None:
        return False
    obj.shape_key_remove(sk.key_blocks[name])
    sk = obj.data.shape_keys
    if sk is not None and len(sk.key_blocks) == 1 and sk.key_blocks[0].name == "Basis" and getattr(obj, "stablewrap", None) is not None \
            and obj.stablewrap.created_basis:
        obj.shape_key_remove(sk.key_blocks[0])
        obj.stablewrap.created_basis = False
    return True


# --------------------------------------------------------------------------- vertex groups


def read_vertex_groups(obj) -> tuple[list[str], np.ndarray]:
    """Names and an (n, g) float32 weight matrix of all vertex groups."""
    names = [g.name for g in obj.vertex_groups]
    n = len(obj.data.vertices)
    w = np.zeros((n, len(names)), np.float32)
    if not names:
        return names, w
    index_of = {g.index: i for i, g in enumerate(obj.vertex_groups)}
    for v in obj.data.vertices:
        for ge in v.groups:
            col = index_of.get(ge.group)
            if col is not None:
                w[v.index, col] = ge.weight
    return names, w


def vertex_group_mask(obj, group_name: str) -> np.ndarray:
    """(n,) bool: vertices in ``group_name`` with weight > 0.5."""
    n = len(obj.data.vertices)
    mask = np.zeros(n, bool)
    group = obj.vertex_groups.get(group_name)
    if group is None:
        raise MeshDataError(f"'{obj.name}' has no vertex group '{group_name}'")
    gi = group.index
    for v in obj.data.vertices:
        for ge in v.groups:
            if ge.group == gi and ge.weight > 0.5:
                mask[v.index] = True
    return mask


def write_vertex_group(obj, name: str, weights: np.ndarray, threshold: float = 1e-4):
    """Create or replace vertex group ``name`` with ``weights`` (n,); tiny weights are left out."""
    group = obj.vertex_groups.get(name)
    if group is not None:
        obj.vertex_groups.remove(group)
    group = obj.vertex_groups.new(name=name)
    w = np.asarray(weights, np.float32)
    idx = np.nonzero(w > threshold)[0]
    if len(idx) == 0:
        return group
    # group vertices with equal (rounded) weights into one add() call each
    q = np.round(w[idx], 4)
    order = np.argsort(q, kind="stable")
    q, idx = q[order], idx[order]
    cuts = np.nonzero(np.diff(q))[0] + 1
    for part_idx, part_w in zip(np.split(idx, cuts), np.split(q, cuts)):
        group.add(part_idx.tolist(), float(part_w[0]), "REPLACE")
    return group
