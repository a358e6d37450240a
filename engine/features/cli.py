"""``python -m engine models list|download``: what feature models are present, and fetching them.

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
    p = subparsers.add_parser("models", help="list or download the semantic feature models (DINOv2, Stable Diffusion)")
    sub = p.add_subparsers(dest="models_command")
    pl = sub.add_parser("list", help="show which models are present in the Hugging Face cache")
    pl.add_argument("--cache-dir", default=None, help="Hugging Face hub cache (default: HF_HUB_CACHE / ~/.cache/huggingface/hub)")
    pl.set_defaults(func=cmd_list)
    pd = sub.add_parser("download", help="fetch models into the Hugging Face cache (needs network)")
    pd.add_argument("models", nargs="*", help=f"model keys ({', '.join(model_store.MODELS)}), 'dino', 'sd' or 'all'; default: the dino and sd defaults")
    pd.add_argument("--cache-dir", default=None)
    pd.set_defaults(func=cmd_download)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p
