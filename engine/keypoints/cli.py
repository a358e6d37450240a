"""``python -m engine landmarks MESH -o OUT.json [--png PICTURE.png] [--face]``: named landmarks of a mesh.

The JSON holds, per landmark found: its name, the vertex index in the file as
given, the point (file coordinates: the joint estimate inside the body), the
confidence and the model; with ``--face`` also ``face``: the face mesh's
landmarks (surface points) and the face's front and up. ``--png`` draws the pose model's detections on the
renders (left side red, right side blue, centre green).
Wired into ``engine/cli.py`` through :func:`add_subparser`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

SIDE_COLOURS = {"left": (220, 40, 40), "right": (40, 80, 230), "centre": (30, 170, 60)}


def landmarks_json(kp, prepared) -> dict:
    """The detection of a PreparedMesh's clean mesh, in the caller's vertex indices and coordinates."""
    out = kp.as_dict()
    out["mesh"] = prepared.name
    for row in out["landmarks"]:
        v = row["vertex"]
        row["vertex"] = int(prepared.clean_to_orig[v])
        row["point"] = [round(float(x), 6) for x in prepared.normalization.invert(np.asarray(row["point"]))]
    return out


def detection_picture(kp, path: str) -> None:
    """A grid of the renders with the 2D keypoints of every view (needs ``keep_views``)."""
    from PIL import Image, ImageDraw

    from ..fileio import atomic_path

    tiles = []
    for image, det in kp.views:
        tile = Image.fromarray(image)
        if det is not None:
            draw = ImageDraw.Draw(tile)
            r = max(2, image.shape[0] // 96)
            for name, (x, y), vis in zip(kp.names, det.xy, det.visibility):
                if vis < 0.5:
                    continue
                side = "left" if name.startswith("left_") else "right" if name.startswith("right_") else "centre"
                draw.ellipse([x - r, y - r, x + r, y + r], fill=SIDE_COLOURS[side])
        tiles.append(tile)
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    with atomic_path(path, ".png") as tmp:
        sheet.save(tmp, format="PNG")


def cmd_landmarks(args) -> int:
    from ..cli import _check_input_file, check_output_path
    from ..errors import InputError
    from ..fileio import atomic_path
    from ..mesh import load_mesh
    from .detect import KeypointSettings, detect_keypoints

    _check_input_file(args.mesh, "mesh")
    out = check_output_path(args.output)
    png = check_output_path(args.png) if args.png else None
    prepared = load_mesh(args.mesh)
    settings = KeypointSettings(views=args.views, resolution=args.resolution, hands=args.hands)
    kp = detect_keypoints(prepared.mesh.vertices, prepared.mesh.faces, settings=settings, keep_views=png is not None)
    data = landmarks_json(kp, prepared)
    face = None
    if args.face:
        from .face import detect_face_landmarks

        face = detect_face_landmarks(prepared.mesh.vertices, prepared.mesh.faces, body=kp)
        data["face"] = landmarks_json(face, prepared)  # front / up: directions, unchanged by the normalisation
    if args.require and not kp.humanoid and not (face is not None and face.found_face):
        what = "no body" + (" and no face" if args.face else "")
        raise InputError(f"{args.mesh}: {what} found ({kp.views_found} of {settings.views} views show a body)")
    with atomic_path(out, ".json") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    if png:
        detection_picture(kp, png)
    what = f"{len(data['landmarks'])} landmarks" if kp.humanoid else "no body found"
    if face is not None:
        what += f", {len(data['face']['landmarks'])} face landmarks" if face.found_face else ", no face found"
    print(f"{os.path.basename(args.mesh)}: {what} ({kp.views_found} of {settings.views} views); wrote {args.output}"
          + (f" and {args.png}" if png else ""), file=sys.stderr)
    return 0


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``landmarks`` on an argparse subparsers object."""
    p = subparsers.add_parser("landmarks", help="named body landmarks of a mesh (MediaPipe pose on renders)",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("mesh", metavar="MESH", help="mesh file (any format trimesh reads)")
    p.add_argument("-o", "--output", metavar="OUT.json", required=True, help="landmarks JSON (written atomically)")
    p.add_argument("--png", metavar="PICTURE.png", default=None, help="also draw the detections on the renders")
    p.add_argument("--views", type=int, default=8, help="orbit views (default 8)")
    p.add_argument("--resolution", type=int, default=384, help="render size in pixels (default 384)")
    p.add_argument("--hands", action="store_true",
                   help="also finger landmarks (thumb, finger bases and tips) from close-ups of each hand")
    p.add_argument("--face", action="store_true",
                   help="also the face mesh's landmarks (face_NNN: 1 nose tip, 33 / 263 outer eye corners...), "
                        "found from the body's head or, for a head alone, by searching the mesh")
    p.add_argument("--require", action="store_true", help="exit with an error when no body (nor, with --face, face) is found")
    p.set_defaults(func=cmd_landmarks)
    return p
