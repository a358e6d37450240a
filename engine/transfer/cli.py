"""``python -m engine transfer uv|texture|attributes|morph|retopo``: transfers through a match file.

Every sub-command reads the ``.npz`` written by ``python -m engine match``
plus the meshes it was made from, and writes one output file atomically
(a temporary file renamed into place; nothing is left behind on error).
Wired into ``engine/cli.py`` through :func:`add_subparser`.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path


# --------------------------------------------------------------------------- inputs

def _load(path: str, role: str):
    from ..mesh import load_mesh

    return load_mesh(path, name=os.path.basename(path))


def _load_match(path: str, source=None, target=None):
    """Load a match file and check that it fits the meshes."""
    from ..correspondence import Correspondence

    corr = Correspondence.load(path)
    base = os.path.basename(path)
    if source is not None:
        ns, ms = len(source.orig_vertices), len(source.orig_triangles)
        if len(corr.src_to_tgt_face) != ns or len(corr.fitted_vertices) != ns:
            raise InputError(f"{base}: made for a source with {len(corr.fitted_vertices)} vertices, but {source.name} has {ns}")
        if len(corr.tgt_to_src_face) and (corr.tgt_to_src_face.min() < 0 or corr.tgt_to_src_face.max() >= ms):
            raise InputError(f"{base}: refers to source triangle {int(corr.tgt_to_src_face.max())}, but {source.name} has {ms} triangles")
    if target is not None:
        nt, mt = len(target.orig_vertices), len(target.orig_triangles)
        if len(corr.tgt_to_src_face) != nt:
            raise InputError(f"{base}: made for a target with {len(corr.tgt_to_src_face)} vertices, but {target.name} has {nt}")
        if len(corr.src_to_tgt_face) and (corr.src_to_tgt_face.min() < 0 or corr.src_to_tgt_face.max() >= mt):
            raise InputError(f"{base}: refers to target triangle {int(corr.src_to_tgt_face.max())}, but {target.name} has {mt} triangles")
    return corr


def _require_uv(mesh, what: str) -> np.ndarray:
    if mesh.uv is None:
        raise InputError(f"{mesh.name}: {what} has no UVs (an OBJ file with 'vt' coordinates on every face is needed)")
    uv = np.asarray(mesh.uv)
    if uv.shape != (len(mesh.orig_triangles), 3, 2):
        raise InputError(f"{mesh.name}: UVs do not match the faces ({uv.shape[0]} UV triangles for {len(mesh.orig_triangles)} triangles)")
    if not np.all(np.isfinite(uv)):
        raise InputError(f"{mesh.name}: UVs contain NaN or infinite values")
    return uv


def read_image(path: str) -> np.ndarray:
    """(H, W, C) uint8 or uint16 pixels of an image file (row 0 = top)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: texture file not found")
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGBA" if "A" in im.mode or im.info.get("transparency") is not None else "RGB")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32)
                arr = np.clip(arr, 0, 65535).astype(np.uint16)
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            else:
                arr = np.asarray(im)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read image ({exc.__class__.__name__})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def _atomic(path: str, suffix: str, write) -> None:
    """Call ``write(tmp_path)`` then rename into ``path``; remove the temporary file on any error."""
    final = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(final)) or "."
    if not os.path.isdir(folder):
        raise InputError(f"{final}: output folder does not exist")
    with atomic_path(final, suffix) as tmp:
        write(tmp)


def write_image(path: str, image: np.ndarray) -> None:
    """Write (H, W, C) pixels as PNG (or any format Pillow knows by the extension), atomically."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype == np.uint16 and img.ndim == 3:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype.kind == "f":
        img = np.clip(np.rint(img * 255.0 if img.max() <= 1.0 else img), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    ext = os.path.splitext(path)[1] or ".png"
    _atomic(path, ext, lambda tmp: pil.save(tmp, format=None if os.path.splitext(path)[1] else "PNG"))


def _polygons_with_uv(triangles: np.ndarray, tri_to_poly: np.ndarray, corner_uv: np.ndarray | None):
    """Rebuild the caller's polygons (fan triangulation) where their triangles agree on the UVs.

    Returns a list of (vertex ids, corner uvs or None) per output face.
    """
    out = []
    starts = np.r_[0, np.nonzero(np.diff(tri_to_poly))[0] + 1, len(tri_to_poly)]
    for a, b in zip(starts[:-1], starts[1:]):
        tris = triangles[a:b]
        uvs = corner_uv[a:b] if corner_uv is not None else None
        ok = True
        if b - a > 1:
            fan = all(tris[i, 0] == tris[0, 0] and tris[i, 1] == tris[i - 1, 2] for i in range(1, b - a))
            if uvs is not None and fan:
                same0 = np.abs(uvs[:, 0] - uvs[0, 0]).max() < 1e-7
                chain = all(np.abs(uvs[i, 1] - uvs[i - 1, 2]).max() < 1e-7 for i in range(1, b - a))
                ok = bool(same0 and chain)
            ok = ok and fan
        if ok:
            ids = [int(tris[0, 0]), int(tris[0, 1])] + [int(t[2]) for t in tris]
            cuv = None if uvs is None else np.vstack([uvs[0, 0], uvs[0, 1], uvs[:, 2]])
            out.append((ids, cuv))
        else:
            for i in range(b - a):
                out.append(([int(x) for x in tris[i]], None if uvs is None else uvs[i]))
    return out


def write_obj(path: str, vertices: np.ndarray, triangles: np.ndarray, tri_to_poly: np.ndarray | None = None,
              corner_uv: np.ndarray | None = None) -> None:
    """Write an OBJ (vertices, optional per-corner UVs), rebuilding polygons where possible, atomically."""
    v = np.asarray(vertices, np.float64)
    tris = np.asarray(triangles, np.int64)
    t2p = np.arange(len(tris)) if tri_to_poly is None else np.asarray(tri_to_poly)
    faces = _polygons_with_uv(tris, t2p, None if corner_uv is None else np.asarray(corner_uv, np.float64))
    lines = ["# written by StableWrap (python -m engine transfer)\n"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in v]
    if corner_uv is not None:
        all_uv = np.vstack([c for _, c in faces])
        uniq, inv = np.unique(all_uv.astype(np.float32), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        lines += [f"vt {a:.9g} {b:.9g}\n" for a, b in uniq]
        pos = 0
        for ids, _ in faces:
            k = len(ids)
            lines.append("f " + " ".join(f"{i + 1}/{inv[pos + j] + 1}" for j, i in enumerate(ids)) + "\n")
            pos += k
    else:
        lines += ["f " + " ".join(str(i + 1) for i in ids) + "\n" for ids, _ in faces]

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(lines)

    _atomic(path, ".obj", write)


def _parse_size(text: str | None):
    if text is None:
        return None
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return (int(h), int(w))
        n = int(text)
        return (n, n)
    except ValueError:
        raise InputError(f"--size: expected N or WIDTHxHEIGHT, got {text!r}") from None


def _load_mask(path: str, n: int, what: str) -> np.ndarray:
    """A vertex mask from .npy (bool or 0/1), .txt (one 0-based index per line) or .npz (first array)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: {what} file not found")
    try:
        if path.endswith(".txt"):
            idx = np.loadtxt(path, dtype=np.int64, ndmin=1)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise InputError(f"{os.path.basename(path)}: vertex index out of range (mesh has {n} vertices)")
            m = np.zeros(n, bool)
            m[idx] = True
            return m
        arr = np.load(path, allow_pickle=False)
        if hasattr(arr, "files"):
            arr = arr[arr.files[0]]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read {what} ({exc.__class__.__name__})") from None
    arr = np.asarray(arr)
    if arr.shape == (n,):
        return arr.astype(bool)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        if len(arr) and (arr.min() < 0 or arr.max() >= n):
            raise InputError(f"{os.path.basename(path)}: vertex index out of range (mesh has {n} vertices)")
        m = np.zeros(n, bool)
        m[arr] = True
        return m
    raise InputError(f"{os.path.basename(path)}: {what} must be {n} booleans or a list of vertex indices, got shape {arr.shape}")


# --------------------------------------------------------------------------- commands

def cmd_uv(args) -> int:
    from .uv import transfer_uvs

    src, tgt = _load(args.source, "source"), _load(args.target, "target")
    corr = _load_match(args.match, src, tgt)
    if not args.reverse:
        suv = _require_uv(src, "the source")
        res = transfer_uvs(src.orig_triangles, suv, tgt.orig_triangles, corr.tgt_to_src_face, corr.tgt_to_src_bary,
                           src_vertices=src.orig_vertices, tgt_tri_to_poly=tgt.tri_to_poly)
        write_obj(args.output, tgt.orig_vertices, tgt.orig_triangles, tgt.tri_to_poly, res.corner_uv)
        print(f"{args.output}: target with UVs from {src.name}; {len(res.seam_faces)} triangles straddled a seam")
    else:
        tuv = _require_uv(tgt, "the target")
        res = transfer_uvs(tgt.orig_triangles, tuv, src.orig_triangles, corr.src_to_tgt_face, corr.src_to_tgt_bary,
                           src_vertices=tgt.orig_vertices, tgt_tri_to_poly=src.tri_to_poly)
        write_obj(args.output, corr.fitted_vertices, src.orig_triangles, src.tri_to_poly, res.corner_uv)
        print(f"{args.output}: fitted source with UVs from {tgt.name}; {len(res.seam_faces)} triangles straddled a seam")
    return 0


def cmd_texture(args) -> int:
    from ..progress import Progress
    from .texture import STAGES, bake_texture

    src, tgt = _load(args.source, "source"), _load(args.target, "target")
    corr = _load_match(args.match, src, tgt)
    suv = _require_uv(src, "the source")
    tuv = _require_uv(tgt, "the target (it is what the texture is baked into)")
    img = read_image(args.texture)
    size = _parse_size(args.size) or img.shape[:2]
    prog = None
    if not args.quiet:
        def show(stage, frac):
            print(f"\r{stage:>8s} {frac * 100:5.1f} %", end="", file=sys.stderr, flush=True)

        prog = Progress(show, stages=STAGES)
    out = bake_texture(src.orig_triangles, suv, img, tgt.orig_triangles, tuv, corr.tgt_to_src_face, corr.tgt_to_src_bary,
                       size=size, padding=args.padding, progress=prog, src_vertices=src.orig_vertices, wrap=args.wrap)
    if prog is not None:
        print(file=sys.stderr)
    write_image(args.output, out)
    print(f"{args.output}: {out.shape[1]}x{out.shape[0]} texture in the UV layout of {tgt.name}")
    return 0


def cmd_attributes(args) -> int:
    from . import attributes as A

    src, tgt = _load(args.source, "source"), _load(args.target, "target")
    corr = _load_match(args.match, src, tgt)
    if args.reverse:  # target values onto the source
        give, take = tgt, src
        face, bary = corr.src_to_tgt_face, corr.src_to_tgt_bary
    else:
        give, take = src, tgt
        face, bary = corr.tgt_to_src_face, corr.tgt_to_src_bary
    if not os.path.exists(args.values):
        raise InputError(f"{args.values}: attribute file not found")
    try:
        with np.load(args.values, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise InputError(f"{os.path.basename(args.values)}: cannot read attribute file ({exc.__class__.__name__}); expected an .npz of arrays") from None
    if not data:
        raise InputError(f"{os.path.basename(args.values)}: contains no arrays")
    for k in list(args.weights) + list(args.labels) + list(args.face_labels):
        if k not in data:
            raise InputError(f"{os.path.basename(args.values)}: no array named {k!r} (has: {', '.join(sorted(data))})")
    nv, ntri, npoly = len(give.orig_vertices), len(give.orig_triangles), int(give.tri_to_poly.max()) + 1
    fill = {}
    if args.fill_below is not None:
        if args.reverse:
            raise InputError("--fill-below works source -> target only (the match confidence is per source vertex)")
        fill = dict(confidence=corr.confidence, fill_below=args.fill_below,
                    tgt_vertices=take.orig_vertices, tgt_faces=take.orig_triangles)
    out = {}
    for name, arr in data.items():
        what = f"{os.path.basename(args.values)}[{name}]"
        try:
            if name in args.face_labels:
                lab = np.asarray(arr)
                if len(lab) == npoly and npoly != ntri:
                    lab = lab[give.tri_to_poly]
                elif len(lab) != ntri:
                    raise InputError(f"has {len(lab)} entries but {give.name} has {npoly} faces")
                tl = A.transfer_face_labels(lab, give.orig_triangles, take.orig_triangles, face, bary)
                # back to the receiving mesh's polygons: the label of each polygon's first triangle
                first = np.r_[0, np.nonzero(np.diff(take.tri_to_poly))[0] + 1]
                out[name] = tl[first]
            elif len(arr) != nv:
                raise InputError(f"has {len(arr)} rows but {give.name} has {nv} vertices")
            elif name in args.weights:
                out[name] = A.transfer_skin_weights(arr, give.orig_triangles, face, bary, mode=args.mode,
                                                    renormalize_input=args.renormalize, **fill).astype(np.float32)
            elif name in args.labels:
                out[name] = A.transfer_vertex_labels(arr, give.orig_triangles, face, bary)
            else:
                res = A.transfer_vertex_attributes(arr, give.orig_triangles, face, bary, mode=args.mode,
                                                   n_src_vertices=nv, **fill)
                out[name] = res.astype(np.float32) if res.dtype == np.float64 else res
        except InputError as exc:
            msg = str(exc)
            raise InputError(msg if msg.startswith(what) else f"{what}: {msg}") from None
    from ..correspondence import save_npz_atomic

    save_npz_atomic(args.output, out)
    print(f"{args.output}: {len(out)} attribute(s) on the {len(take.orig_vertices)} vertices of {take.name}")
    return 0


def cmd_morph(args) -> int:
    from .morph import morph_sequence

    src = _load(args.source, "source")
    corr = _load_match(args.match, src, None)
    frames = morph_sequence(src.orig_vertices, src.orig_triangles, corr.fitted_vertices, args.n, method=args.method)
    from ..correspondence import save_npz_atomic

    save_npz_atomic(args.output, {"frames": frames, "times": np.linspace(0.0, 1.0, args.n).astype(np.float32)})
    print(f"{args.output}: {len(frames)} shapes of {frames.shape[1]} vertices ({args.method})")
    return 0


def cmd_retopo(args) -> int:
    from .retopo import fit_retopology

    src, tgt = _load(args.source, "source"), _load(args.target, "target")
    corr = _load_match(args.match, src, tgt)
    mask = _load_mask(args.rigid_mask, len(src.orig_vertices), "rigid mask") if args.rigid_mask else None
    res = fit_retopology(src.orig_vertices, src.orig_triangles, tgt.orig_vertices, tgt.orig_triangles,
                         corr.fitted_vertices, hug=not args.no_hug, keep_rigid_mask=mask)
    write_obj(args.output, res.vertices, src.orig_triangles, src.tri_to_poly, src.uv)
    print(f"{args.output}: {src.name} fitted to {tgt.name}; {int(res.on_surface.sum())} vertices on the surface, "
          f"{len(res.flipped_faces)} flipped triangles")
    return 0


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``transfer`` (uv, texture, attributes, morph, retopo) on an argparse subparsers object."""
    p = subparsers.add_parser("transfer", help="transfer UVs, textures, attributes or morphs through a match file")
    sub = p.add_subparsers(dest="transfer_command")

    def common(sp, target=True):
        sp.add_argument("source", help="source mesh file (the one given to match)")
        if target:
            sp.add_argument("target", help="target mesh file (the one given to match)")
        sp.add_argument("match", help="the .npz written by 'python -m engine match'")
        sp.add_argument("-o", "--output", required=True)

    s = sub.add_parser("uv", help="source UVs onto the target (OBJ out); --reverse: target UVs onto the fitted source")
    common(s)
    s.add_argument("--reverse", action="store_true", help="target UVs onto the source topology at its fitted positions")
    s.set_defaults(func=cmd_uv)

    s = sub.add_parser("texture", help="bake the source texture into the target's UV layout (PNG out)")
    common(s)
    s.add_argument("--texture", required=True, help="the source texture image")
    s.add_argument("--size", default=None, help="output size N or WIDTHxHEIGHT (default: the texture's)")
    s.add_argument("--padding", type=int, default=16, help="texels of dilation around islands (default 16)")
    s.add_argument("--wrap", choices=("repeat", "clamp"), default="repeat")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=cmd_texture)

    s = sub.add_parser("attributes", help="per-vertex / per-face arrays of an .npz onto the other mesh (.npz out)")
    common(s)
    s.add_argument("--values", required=True, help=".npz with one array per attribute (rows = vertices of the giving mesh)")
    s.add_argument("--mode", choices=("barycentric", "nearest"), default="barycentric")
    s.add_argument("--weights", nargs="*", default=[], metavar="NAME", help="arrays that are skin weights (rows summing to 1)")
    s.add_argument("--renormalize", action="store_true", help="rescale skin weights that do not sum to 1 instead of failing")
    s.add_argument("--labels", nargs="*", default=[], metavar="NAME", help="arrays that are integer vertex labels")
    s.add_argument("--face-labels", nargs="*", default=[], metavar="NAME", help="arrays that are per-face labels")
    s.add_argument("--fill-below", type=float, default=None, metavar="C",
                   help="refill target vertices whose match confidence is below C by harmonic inpainting")
    s.add_argument("--reverse", action="store_true", help="target arrays onto the source")
    s.set_defaults(func=cmd_attributes)

    s = sub.add_parser("morph", help="in-between shapes from the source to its fitted shape (.npz with 'frames')")
    common(s, target=False)
    s.add_argument("-n", type=int, default=5, help="number of shapes including both ends (default 5)")
    s.add_argument("--method", choices=("jacobian", "linear"), default="jacobian")
    s.set_defaults(func=cmd_morph)

    s = sub.add_parser("retopo", help="the source topology hugging the target surface (OBJ out)")
    common(s)
    s.add_argument("--no-hug", action="store_true", help="keep the fitted positions (no projection onto the target)")
    s.add_argument("--rigid-mask", default=None, help="source vertices to keep rigid (.npy bools / indices, or .txt indices)")
    s.set_defaults(func=cmd_retopo)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p
