"""Stable Diffusion UNet features (diffusers), the recipe of the zero-shot correspondence papers.

One UNet pass on a noised latent of the rendered image (timestep ``t``, fixed
noise seed, empty prompt), keeping the outputs of decoder up-blocks 0, 1, 2
(1/32, 1/16 and 1/8 of the input). The pass stops right after the last block
that is needed. Blocks are returned raw; :mod:`engine.features.fusion` reduces
them by PCA jointly over a pair of shapes.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..errors import BackendUnavailable, InputError
from .dino import default_dtype, resolve_device, transformers_dtype_kw


class _StopForward(Exception):
    pass


class SDFeatures:
    """Dense Stable Diffusion features of rendered images.

    Parameters
    ----------
    unet : diffusers UNet2DConditionModel (on the device, in the dtype to run)
    vae : diffusers AutoencoderKL (same device and dtype)
    prompt_embeds : (1, L, D) text-encoder output for the prompt (empty prompt)
    alphas_cumprod : (T,) noise schedule
    timestep : diffusion step used to noise the latent
    blocks : indices of ``unet.up_blocks`` whose outputs are returned
    image_size : input side length (rounded to a multiple of 64)
    seed : noise seed (features are deterministic)
    """

    name = "sd"

    def __init__(self, unet, vae, prompt_embeds: torch.Tensor, alphas_cumprod: torch.Tensor, timestep: int = 100,
                 blocks=(0, 1, 2), image_size: int = 512, batch_size: int = 2, seed: int = 0):
        self.unet = unet.eval()
        self.vae = vae.eval()
        p = next(unet.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        if not (0 <= int(timestep) < len(self.alphas_cumprod)):
            raise InputError(f"sd: timestep must be in [0, {len(self.alphas_cumprod) - 1}], got {timestep}")
        self.timestep = int(timestep)
        n_up = len(unet.up_blocks)
        if not blocks or any(not (0 <= b < n_up) for b in blocks):
            raise InputError(f"sd: blocks must be indices of the {n_up} UNet up-blocks, got {tuple(blocks)}")
        self.blocks = tuple(sorted(int(b) for b in blocks))
        self.image_size = max(64, int(round(image_size / 64)) * 64)
        self.batch_size = max(1, int(batch_size))
        self.seed = int(seed)
        self.scaling = float(getattr(vae.config, "scaling_factor", 0.18215))

    @classmethod
    def from_pretrained(cls, path: str, device="cpu", dtype: torch.dtype | None = None, prompt: str = "", **kw) -> "SDFeatures":
        """Load UNet, VAE, scheduler and text encoder from a local diffusers folder (no network)."""
        dev = resolve_device(device)
        dtype = dtype or default_dtype(dev)
        try:
            from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as exc:
            raise BackendUnavailable(f"sd: diffusers/transformers not installed ({exc}); pip install 'stablewrap-engine[features]'") from None
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if not os.path.isdir(os.path.join(path, sub)):
                raise BackendUnavailable(f"models: {path} is not a Stable Diffusion folder (no {sub}/ subfolder)")

        def variant(sub: str, stem: str):
            return "fp16" if os.path.exists(os.path.join(path, sub, f"{stem}.fp16.safetensors")) else None

        import importlib.util

        low_mem = importlib.util.find_spec("accelerate") is not None  # diffusers warns when asked without it
        try:
            unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, local_files_only=True,
                                                        variant=variant("unet", "diffusion_pytorch_model"), low_cpu_mem_usage=low_mem)
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, local_files_only=True,
                                                variant=variant("vae", "diffusion_pytorch_model"), low_cpu_mem_usage=low_mem)
            sched = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
            tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
            text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True, **transformers_dtype_kw(dtype),
                                                 variant=variant("text_encoder", "model"))
        except Exception as exc:
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise BackendUnavailable(f"models: cannot load Stable Diffusion from {path} ({exc.__class__.__name__}: {first})") from None
        text = text.to(dev)
        with torch.no_grad():
            ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            embeds = text(ids.to(dev))[0]
        del text
        return cls(unet.to(dev), vae.to(dev), embeds, sched.alphas_cumprod, **kw)

    def _hooks(self, store: dict):
        handles = []
        last = self.blocks[-1]
        for b in self.blocks:
            def hook(_module, _inp, out, b=b):
                store[b] = out[0] if isinstance(out, tuple) else out
                if b == last:
                    raise _StopForward()
            handles.append(self.unet.up_blocks[b].register_forward_hook(hook))
        return handles

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images : (K, 3, H, W) float in [0, 1] -> one (K, C_b, h_b, w_b) float32 map per block."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"sd: images must have shape (K, 3, H, W), got {tuple(images.shape)}")
        s = self.image_size
        a = self.alphas_cumprod[self.timestep]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        per_block: dict[int, list[torch.Tensor]] = {b: [] for b in self.blocks}
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(self.device, torch.float32)
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            x = (x * 2.0 - 1.0).to(self.dtype)
            lat = self.vae.encode(x).latent_dist.mean * self.scaling
            noise = torch.randn(lat.shape, generator=gen).to(lat.device, lat.dtype)
            noisy = (a.sqrt() * lat.float() + (1 - a).sqrt() * noise.float()).to(self.dtype)
            t = torch.full((len(x),), self.timestep, device=self.device, dtype=torch.long)
            cond = self.prompt_embeds.expand(len(x), -1, -1)
            store: dict[int, torch.Tensor] = {}
            handles = self._hooks(store)
            try:
                self.unet(noisy, t, encoder_hidden_states=cond)
            except _StopForward:
                pass
            finally:
                for h in handles:
                    h.remove()
            for b in self.blocks:
                per_block[b].append(store[b].float())
        return [torch.cat(per_block[b]) for b in self.blocks]
