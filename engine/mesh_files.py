"""Mesh files: OBJ and OFF read by hand (polygons, OBJ corner UVs), other formats through trimesh."""
from __future__ import annotations

import os

import numpy as np

from .errors import InputError

SUPPORTED_EXTENSIONS = (".obj", ".ply", ".off", ".glb", ".gltf", ".stl")


def _numbers(lines: list[str], dtype) -> np.ndarray:
    """The whitespace-separated numbers of ``lines`` in one parse (it stops short at a token that
    is not one: the callers compare the count with what they expect)."""
    import warnings

    with warnings.catch_warnings():  # a parse stopping short warns
        warnings.simplefilter("ignore")
        return np.fromstring(" ".join(lines), dtype=dtype, sep=" ")


def _read_obj_fast(lines: list[str], name: str):
    """:func:`_read_obj` in a few whole-file parses for the common file (a scan, an export):
    every ``v`` line three coordinates, every ``vt`` line as many, every face as many corners in
    one index form (``v``, ``v/t``, ``v/t/n`` or ``v//n``), positive indices. Returns
    (vertices (n, 3), faces (m, k) int64, corner UVs (m, k, 2) or None), or None for any other
    file (the line-by-line reader takes it: the same result, 5-10x slower)."""
    v_lines = [ln[2:] for ln in lines if ln.startswith("v ")]
    f_lines = [ln[2:] for ln in lines if ln.startswith("f ")]
    t_lines = [ln[3:] for ln in lines if ln.startswith("vt ")]
    if not v_lines or not f_lines or any(len(ln.split()) != 3 for ln in v_lines):
        return None
    per_face = [len(ln.split()) for ln in f_lines]
    k = per_face[0]
    if k < 3 or per_face.count(k) != len(per_face):
        return None
    first = f_lines[0].split()[0]
    slashes, double = first.count("/"), "//" in first
    text = " ".join(f_lines)
    corners = k * len(f_lines)
    if text.count("/") != slashes * corners or text.count("//") != (corners if double else 0):
        return None
    fields = 1 if slashes == 0 else (2 if double else slashes + 1)  # v, v/t, v/t/n; v//n: v and n
    nums = _numbers([text.replace("//", " ").replace("/", " ")], np.int64)
    verts = _numbers(v_lines, np.float64)
    if nums.size != fields * corners or verts.size != 3 * len(v_lines):
        return None
    nums = nums.reshape(len(f_lines), k, fields)
    if (nums[:, :, 0] <= 0).any():  # relative (negative) indices count from their own line
        return None
    polys, verts = nums[:, :, 0] - 1, verts.reshape(-1, 3)
    if slashes == 0 or double or not t_lines:
        return verts, polys, None
    t_count = len(t_lines[0].split())
    if t_count < 2 or any(len(ln.split()) != t_count for ln in t_lines):
        return None
    uv = _numbers(t_lines, np.float64)
    t_idx = nums[:, :, 1]
    if uv.size != t_count * len(t_lines) or (t_idx <= 0).any():
        return None
    if t_idx.max() > len(t_lines):
        raise InputError(f"{name}: UV index out of range in a face")
    return verts, polys, uv.reshape(-1, t_count)[:, :2][t_idx - 1]


def _read_obj(path: str) -> tuple[np.ndarray, list[list[int]] | np.ndarray, np.ndarray | None]:
    """Vertices, polygons (0-based) and per-polygon-corner UVs (or None) of an OBJ file."""
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    fast = _read_obj_fast(lines, os.path.basename(path))
    if fast is not None:
        return fast
    verts: list[list[float]] = []
    uvs: list[list[float]] = []
    polys: list[list[int]] = []
    poly_uv: list[list[int]] = []
    has_uv = True
    for line in lines:
        if line.startswith("v "):
            parts = line.split()
            verts.append([float(parts[1]), float(parts[2]), float(parts[3])])
        elif line.startswith("vt "):
            parts = line.split()
            uvs.append([float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0])
        elif line.startswith("f "):
            idx, tidx = [], []
            for tok in line.split()[1:]:
                sub = tok.split("/")
                i = int(sub[0])
                idx.append(i - 1 if i > 0 else len(verts) + i)
                if len(sub) > 1 and sub[1]:
                    t = int(sub[1])
                    tidx.append(t - 1 if t > 0 else len(uvs) + t)
                else:
                    has_uv = False
            polys.append(idx)
            poly_uv.append(tidx)
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    if not has_uv or not uvs or not polys:
        return v, polys, None
    uv_arr = np.asarray(uvs, dtype=np.float64)
    try:
        corner_uv = [uv_arr[t] for t in poly_uv]
    except IndexError:
        raise InputError(f"{os.path.basename(path)}: UV index out of range in a face")
    return v, polys, corner_uv  # type: ignore[return-value]


def _read_off(path: str) -> tuple[np.ndarray, list[list[int]] | np.ndarray]:
    """Vertices (n, 3) and the faces: an (m, k) int64 array when every face has k corners and no
    colour, else a list of index lists."""
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        tokens_lines = [ln.split("#")[0].split() for ln in fh]
    lines = [t for t in tokens_lines if t]
    if not lines:
        raise InputError(f"{os.path.basename(path)}: empty OFF file")
    head = lines[0]
    if not head[0].upper().endswith("OFF"):
        raise InputError(f"{os.path.basename(path)}: not an OFF file (no OFF header)")
    rest = head[1:]
    pos = 1
    if not rest:
        rest = lines[1]
        pos = 2
    nv, nf = int(rest[0]), int(rest[1])
    vlines = lines[pos : pos + nv]
    if len(vlines) < nv:
        raise InputError(f"{os.path.basename(path)}: OFF file is truncated (expected {nv} vertices)")
    v = np.asarray([[float(x) for x in ln[:3]] for ln in vlines], dtype=np.float64).reshape(-1, 3)
    flines = lines[pos + nv : pos + nv + nf]
    if flines and all(len(ln) == len(flines[0]) and ln[0] == str(len(ln) - 1) for ln in flines):
        # every face "k i1 .. ik" with one k and nothing after it (no colours): one (m, k) array
        return v, np.asarray(flines, dtype=np.int64)[:, 1:]
    polys = []
    for ln in flines:
        k = int(ln[0])
        polys.append([int(x) for x in ln[1 : 1 + k]])
    return v, polys


# glTF mesh compressions the loader cannot decode, and what to tell the artist
_GLTF_COMPRESSIONS = {"KHR_draco_mesh_compression": "Draco", "EXT_meshopt_compression": "meshopt",
                      "KHR_meshopt_compression": "meshopt"}


def _check_gltf_compression(path: str, base: str) -> None:
    """One line instead of the loader's failure when a glTF file uses mesh compression."""
    import json
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
            if head[:4] == b"glTF" and len(head) == 20:  # binary: 12-byte header, then the JSON chunk
                length, kind = struct.unpack("<II", head[12:20])
                doc = json.loads(fh.read(length)) if kind == 0x4E4F534A else {}
            else:
                fh.seek(0)
                doc = json.loads(fh.read())
    except (ValueError, struct.error):
        return  # not readable as glTF JSON: the loader says what is wrong
    if not isinstance(doc, dict):
        return
    used = set(doc.get("extensionsRequired") or []) | set(doc.get("extensionsUsed") or [])
    for ext, name in _GLTF_COMPRESSIONS.items():
        if ext in used:
            raise InputError(f"{base}: {name}-compressed glTF is not supported; export it again without mesh "
                             f"compression (Blender: File > Export > glTF, uncheck Compression)")


def load_mesh_file(path: str | os.PathLike) -> tuple[np.ndarray, list[list[int]] | np.ndarray, np.ndarray | None]:
    """Read a mesh file as it is (no cleaning).

    Returns
    -------
    vertices : (n, 3) float64
    faces : (m, k) int64 array or list of polygons (0-based vertex indices)
    corner_uv : (m, k, 2) array or list of (k, 2) arrays per polygon, or None (OBJ only)
    """
    path = os.fspath(path)
    base = os.path.basename(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: file not found")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a mesh file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise InputError(f"{base}: unsupported mesh format {ext or '(no extension)'!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    try:
        if ext == ".obj":
            v, polys, uv = _read_obj(path)
            return v, polys, uv
        if ext == ".off":
            v, polys = _read_off(path)
            return v, polys, None
        if ext in (".glb", ".gltf"):
            _check_gltf_compression(path, base)
        import trimesh

        loaded = trimesh.load(path, process=False)
        if isinstance(loaded, trimesh.Scene):
            loaded = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
        v = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
        f = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
        return v, f, None
    except InputError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{base}: cannot read file ({exc.__class__.__name__}: {exc})") from None
    except Exception as exc:  # parsers raise anything on garbage
        raise InputError(f"{base}: cannot parse mesh ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
