"""``python -m engine part``: match a part of a source shape, or a clicked image region, to a target.

    python -m engine part --source SRC.obj --part MASK.npy TARGET.obj -o OUT.npz
    python -m engine part --image IMG.png --click X Y TARGET.obj -o OUT.npz [--mask M.png | --box X0 Y0 X1 Y1]

OUT.npz keys: ``target_vertices`` int32 (target vertex indices of the matched
part, in the file's vertex order), ``bsb_vertex`` int32 (-1 when there is no
match), ``score`` float32 (IoU of the buddy's segment with the query part).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..correspondence import save_npz_atomic
from ..errors import InputError, StableWrapError

EPILOG = __doc__.split("\n\n", 1)[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="target mesh file (.obj .ply .off .glb .stl)")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    src = p.add_argument_group("shape query")
    src.add_argument("--source", help="source mesh file")
    src.add_argument("--part", help=".npy file: int array of source vertex indices (the vertex group)")
    img = p.add_argument_group("image query")
    img.add_argument("--image", help="reference image (.png .jpg .jpeg .bmp .tif .tiff .webp)")
    img.add_argument("--click", nargs=2, type=float, metavar=("X", "Y"), help="clicked pixel (column, row; origin top-left)")
    img.add_argument("--mask", help="part mask image or .npy (H, W) bool, instead of growing one around the click")
    img.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="part box instead of growing one")
    p.add_argument("--device", default="auto")
    p.add_argument("--k", type=int, default=100, help="BSB candidates (default 100)")


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``part`` on the ``python -m engine`` command line."""
    p = subparsers.add_parser(
        "part",
        help="find the part of a target matching a source vertex group or an image click (Best Segmentation Buddies)",
        description="Part matching with Best Segmentation Buddies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def load_part_indices(path: str) -> np.ndarray:
    """Read a ``.npy`` vertex-index array (or a boolean mask) with clear errors."""
    if not os.path.exists(path):
        raise InputError(f"{path}: part file not found")
    if not path.lower().endswith(".npy"):
        raise InputError(f"{os.path.basename(path)}: part must be a .npy file of vertex indices")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{os.path.basename(path)}: cannot read part file ({exc.__class__.__name__})") from None
    if arr.dtype == bool:
        arr = np.nonzero(arr.reshape(-1))[0]
    return arr.reshape(-1)


def run(args: argparse.Namespace) -> int:
    try:
        if args.output and os.path.isdir(args.output):
            raise InputError(f"{args.output}: is a folder; give an output .npz file")
        if args.k < 1:
            raise InputError(f"--k must be at least 1 (got {args.k})")
        if args.image is not None:
            if args.source is not None or args.part is not None:
                raise InputError("give either --image/--click or --source/--part, not both")
            if args.click is None and args.mask is None and args.box is None:
                raise InputError("--image needs --click X Y (or --mask / --box)")
            from .image_match import match_image_part

            result = match_image_part(
                args.image, args.target, click=args.click, mask=args.mask, box=args.box,
                device=args.device, k=args.k,
            )
        else:
            if args.source is None or args.part is None:
                raise InputError("give --source SRC --part MASK.npy (or --image IMG --click X Y)")
            from .shape_match import match_part

            part = load_part_indices(args.part)
            result = match_part(args.source, part, args.target, k=args.k)
        save_npz_atomic(args.output, result.arrays())
    except StableWrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = f"bsb vertex {result.bsb_vertex}, {len(result.target_vertices)} target vertices, score {result.score:.3f}" \
        if result.matched else "no match: the part has no counterpart on the target"
    print(f"{args.output}: {state}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.parts.cli", description="Part matching with Best Segmentation Buddies.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
