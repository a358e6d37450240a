"""Tiny randomly initialised backbones of the real architectures (tests, CPU demos).

They exercise exactly the code paths of the real models (transformers
``Dinov2Model``, diffusers ``UNet2DConditionModel`` + ``AutoencoderKL``, a CLIP
text encoder and tokenizer) in well under a second on a CPU. Their features are
meaningless, but deterministic (fixed seeds).
"""
from __future__ import annotations

import json
import os

import torch

from .semantic import Backbones


def tiny_dino_model(seed: int = 0):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       patch_size=14, image_size=56)
    return Dinov2Model(cfg).eval()


def tiny_sd_parts(seed: int = 0):
    """(unet, vae, scheduler) tiny diffusers models with the SD layout (4 up-blocks, VAE factor 8)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32, 32), layers_per_block=1,
        norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8, layers_per_block=1,
        sample_size=64,
    ).eval()
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
    return unet, vae, sched


def tiny_text_encoder(seed: int = 0, max_length: int = 8):
    """(text_encoder, tokenizer) tiny CLIP pair whose hidden size matches the tiny UNet (16)."""
    import tempfile

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=max_length, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1)
    text = CLIPTextModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5}
        with open(os.path.join(d, "vocab.json"), "w") as fh:
            json.dump(vocab, fh)
        with open(os.path.join(d, "merges.txt"), "w") as fh:
            fh.write("#version: 0.2\n")
        tok = CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"), model_max_length=max_length,
                            pad_token="<|endoftext|>")
    return text, tok


def save_tiny_dino(path: str, seed: int = 0) -> str:
    """A fake DINOv2 model folder (``save_pretrained`` of a tiny model)."""
    tiny_dino_model(seed).save_pretrained(path)
    return path


def save_tiny_sd(path: str, seed: int = 0) -> str:
    """A fake Stable Diffusion folder with unet/, vae/, text_encoder/, tokenizer/, scheduler/."""
    unet, vae, sched = tiny_sd_parts(seed)
    text, tok = tiny_text_encoder(seed)
    unet.save_pretrained(os.path.join(path, "unet"))
    vae.save_pretrained(os.path.join(path, "vae"))
    sched.save_pretrained(os.path.join(path, "scheduler"))
    text.save_pretrained(os.path.join(path, "text_encoder"))
    tok.save_pretrained(os.path.join(path, "tokenizer"))
    with open(os.path.join(path, "model_index.json"), "w") as fh:
        json.dump({"_class_name": "StableDiffusionPipeline"}, fh)
    return path


def tiny_backbones(mode: str = "dino+sd", seed: int = 0, dino_image_size: int = 56, sd_image_size: int = 64,
                   device="cpu", dtype: torch.dtype = torch.float32) -> Backbones:
    """Injectable :class:`~engine.features.semantic.Backbones` made of tiny random models."""
    from .dino import DinoFeatures

    dino = DinoFeatures(tiny_dino_model(seed).to(device, dtype), image_size=dino_image_size, batch_size=8)
    sd = None
    if mode == "dino+sd":
        from .sd import SDFeatures

        unet, vae, sched = tiny_sd_parts(seed)
        text, tok = tiny_text_encoder(seed)
        with torch.no_grad():
            ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
            emb = text(ids)[0]
        sd = SDFeatures(unet.to(device, dtype), vae.to(device, dtype), emb, sched.alphas_cumprod, timestep=100,
                        image_size=sd_image_size, batch_size=8)
    return Backbones(dino, sd, {"dino": f"tiny-{seed}", "sd": f"tiny-{seed}"})
