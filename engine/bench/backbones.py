"""The semantic backbones at their real size, timed on each device.

DINOv2 ViT-B/14 and Stable Diffusion 1.5's UNet and VAE encoder (the engine's default models,
engine.features.model_store) are built from their published configurations with random
weights (no download: a forward's time does not depend on the weights' values) and run through
the engine's own feature extractors (engine.features.dino / sd) on as many views as a match
renders per mesh, at the engine's default sizes and dtypes (fp16 on a GPU, fp32 on the CPU).

    python -m engine.bench.backbones --devices cpu,cuda [--views 8] [--out DIR]

Per device and backbone: GFLOPs per view (torch's FlopCounterMode), seconds per view (median
of ``--repeats`` after a warm-up), the achieved TFLOP/s, and the feature stage of one match
(two meshes). The benchmark's semantic rows run tiny models of the same architectures
(engine.features.testing): their match time less their feature stage, plus this stage, is what
a match with the real weights would take -- an estimate, stated as one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

BACKBONES = ("dino", "sd")


def real_dino(device: torch.device, dtype: torch.dtype, image_size: int):
    """DinoFeatures over DINOv2 ViT-B/14 (transformers' Dinov2Config defaults are the base model)."""
    from transformers import Dinov2Config, Dinov2Model

    from ..features.dino import DinoFeatures

    model = Dinov2Model(Dinov2Config(image_size=518)).to(device, dtype)
    return DinoFeatures(model, image_size=image_size)


def real_sd(device: torch.device, dtype: torch.dtype, image_size: int):
    """SDFeatures over Stable Diffusion 1.5's UNet and VAE (their published configurations; the
    prompt embedding of an empty prompt stands in as zeros of CLIP ViT-L's shape, 77 x 768)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from ..features.sd import SDFeatures

    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2).to(device, dtype)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4).to(device, dtype)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
    return SDFeatures(unet, vae, torch.zeros(1, 77, 768), sched.alphas_cumprod, image_size=image_size)


@dataclass
class BackboneTiming:
    device: str
    backbone: str
    gflop_per_view: float
    seconds_per_view: float
    views: int

    @property
    def tflops(self) -> float:
        return self.gflop_per_view / max(self.seconds_per_view, 1e-12) / 1e3

    @property
    def match_stage_seconds(self) -> float:
        """The feature stage of one match: both meshes' views."""
        return 2 * self.views * self.seconds_per_view


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_backbone(build: Callable, device: str, views: int, render_resolution: int, image_size: int,
                  repeats: int = 3, name: str = "") -> BackboneTiming:
    """Build a feature extractor with ``build(device, dtype, image_size)`` and time it on ``views``
    rendered-size images (render_resolution square), as a match calls it per mesh."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..features.dino import default_dtype

    dev = torch.device(device)
    torch.manual_seed(0)
    extractor = build(dev, default_dtype(dev), image_size)
    images = torch.rand(views, 3, render_resolution, render_resolution, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:  # one view's work
        extractor(images[:1])
    flops = float(counter.get_total_flops())
    extractor(images)  # warm-up: kernels chosen, caches filled
    _sync(dev)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        extractor(images)
        _sync(dev)
        times.append((time.perf_counter() - t0) / views)
    return BackboneTiming(str(dev), name or getattr(extractor, "name", "?"), flops / 1e9, statistics.median(times), views)


def markdown(rows: list[BackboneTiming]) -> str:
    lines = ["| device | backbone | GFLOP / view | s / view | TFLOP/s | feature stage of a match (2 x views) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.device} | {r.backbone} | {r.gflop_per_view:.1f} | {r.seconds_per_view:.3f} | {r.tflops:.2f} | "
                     f"{r.match_stage_seconds:.2f} s ({2 * r.views} views) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..errors import InputError
    from ..features.semantic import SemanticSettings

    d = SemanticSettings()
    ap = argparse.ArgumentParser(prog="python -m engine.bench.backbones", description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="cpu", help="comma-separated torch devices, e.g. cpu,cuda (default cpu)")
    ap.add_argument("--backbones", default="dino,sd", help="comma-separated: dino, sd (default both)")
    ap.add_argument("--views", type=int, default=d.views, help=f"views per mesh (default {d.views}, as a match renders)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up (default 3)")
    ap.add_argument("--out", default="", help="folder for backbones.md (default: print only)")
    args = ap.parse_args(argv)
    try:
        devices = [s.strip() for s in args.devices.split(",") if s.strip()]
        names = [s.strip() for s in args.backbones.split(",") if s.strip()]
        bad = [n for n in names if n not in BACKBONES]
        if bad or not names:
            raise InputError(f"--backbones: unknown backbone {bad[0] if bad else '(none)'}; use dino and/or sd")
        if args.views < 1 or args.repeats < 1:
            raise InputError("--views and --repeats must be at least 1")
        for dev in devices:
            if dev.startswith("cuda") and not torch.cuda.is_available():
                raise InputError(f"--devices: {dev} asked for but torch sees no CUDA device")
            torch.device(dev)
    except (InputError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    builders = {"dino": (real_dino, d.dino_image_size, "DINOv2 ViT-B/14"), "sd": (real_sd, d.sd_image_size, "SD 1.5 UNet + VAE")}
    rows = []
    for dev in devices:
        for n in names:
            build, size, label = builders[n]
            rows.append(time_backbone(build, dev, args.views, d.render_resolution, size, args.repeats, label))
            print(f"  {dev} {label}: {rows[-1].seconds_per_view:.3f} s/view", file=sys.stderr, flush=True)
    table = markdown(rows)
    print(table)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "backbones.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
