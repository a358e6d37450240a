"""``python -m engine models list|download|install``: what models are present, and getting them.

``download`` fetches the semantic feature models (DINOv2, Stable Diffusion) into the Hugging
Face cache; ``install`` puts the keypoint models (MediaPipe's ``.tflite`` files, for the model
runner) into this Python environment from a mediapipe wheel (given, installed or downloaded).

Wired into ``engine/cli.py`` through :func:`add_subparser`.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import StableWrapError
from . import model_store


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def cmd_list(args) -> int:
    rows = model_store.list_models(args.cache_dir)
    print(f"Hugging Face cache: {model_store.hf_cache_dir(args.cache_dir)}" + ("  (HF_HUB_OFFLINE is set)" if model_store.offline() else ""))
    for kind in ("dino", "sd"):
        chosen = model_store.choose(kind)
        print(f"{kind} model in use: {chosen.label}")
    width = max(len(r.key) for r in rows)
    for r in rows:
        spec = model_store.MODELS[r.key]
        state = f"present  {_fmt_size(r.size_bytes)}" if r.present else f"missing  (~{spec.approx_size}; python -m engine models download {r.key})"
        print(f"  {r.key:<{width}}  {r.repo_id:<45}  {state}")
    _list_keypoint_models()
    return 0


def _list_keypoint_models() -> None:
    from ..keypoints import mediapipe_files
    from ..keypoints.pose_model import keypoint_backend, keypoints_status

    try:
        backend = keypoint_backend()
    except StableWrapError as exc:
        backend = f"invalid ({exc})"
    ok, why = keypoints_status()
    print(f"keypoint back end: {backend}" + ("" if ok else f"  (unavailable: {why})"))
    for name in mediapipe_files.MODEL_FILES:
        path = mediapipe_files.find_model(name)
        print(f"  {name:<27}  {path if path is not None else 'missing  (python -m engine models install)'}")


def cmd_install(args) -> int:
    from ..keypoints import mediapipe_files

    pip_args = [a for d in args.find_links for a in ("--find-links", d)] + (["--no-index"] if args.no_index else [])
    dest = mediapipe_files.install_models(args.dest, wheel=args.wheel, download=not args.no_download, pip_args=tuple(pip_args))
    print(f"keypoint models (mediapipe {mediapipe_files.MEDIAPIPE_VERSION}) ready in {dest}")
    return 0


def cmd_download(args) -> int:
    keys = args.models or [model_store.DEFAULT_MODELS["dino"], model_store.DEFAULT_MODELS["sd"]]
    expanded = []
    for k in keys:
        if k in ("dino", "sd"):
            expanded.append(model_store.DEFAULT_MODELS[k])
        elif k == "all":
            expanded.extend(model_store.MODELS)
        else:
            expanded.append(k)
    status = 0
    for key in dict.fromkeys(expanded):
        try:
            path = model_store.download(key, args.cache_dir)
            print(f"{key}: ready in {path}")
        except StableWrapError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
    return status


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``models`` (with ``list`` and ``download``) on an argparse subparsers object."""
    p = subparsers.add_parser("models", help="list, download or install the feature and keypoint models")
    sub = p.add_subparsers(dest="models_command")
    pl = sub.add_parser("list", help="show which models are present in the Hugging Face cache")
    pl.add_argument("--cache-dir", default=None, help="Hugging Face hub cache (default: HF_HUB_CACHE / ~/.cache/huggingface/hub)")
    pl.set_defaults(func=cmd_list)
    pd = sub.add_parser("download", help="fetch models into the Hugging Face cache (needs network)")
    pd.add_argument("models", nargs="*", help=f"model keys ({', '.join(model_store.MODELS)}), 'dino', 'sd' or 'all'; default: the dino and sd defaults")
    pd.add_argument("--cache-dir", default=None)
    pd.set_defaults(func=cmd_download)
    pi = sub.add_parser("install", help="put the keypoint models (MediaPipe's .tflite files) into this environment")
    pi.add_argument("--wheel", default=None, metavar="FILE",
                    help="a mediapipe 0.10.14 wheel to take them from (any platform; default: the installed "
                         "mediapipe package, else pip downloads the wheel)")
    pi.add_argument("--dest", default=None, metavar="DIR",
                    help="folder to put them in (default: <python prefix>/share/stablewrap/mediapipe-0.10.14)")
    pi.add_argument("--no-download", action="store_true", help="fail instead of downloading the wheel")
    pi.add_argument("--find-links", action="append", default=[], metavar="DIR",
                    help="also look for the mediapipe wheel in this folder (pip's --find-links)")
    pi.add_argument("--no-index", action="store_true", help="only the --find-links folders, not PyPI (pip's --no-index)")
    pi.set_defaults(func=cmd_install)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p
