"""DINOv2 patch features (transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel``).

Images are resized to a multiple of the patch size, ImageNet-normalised, and
the last hidden state (after the final layer norm) of the patch tokens is
returned as a feature map, L2-normalised per patch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..device import resolve_device  # noqa: F401  (the engine's one device policy, used here)
from ..errors import BackendUnavailable, InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def transformers_dtype_kw(dtype: torch.dtype) -> dict:
    """``dtype=`` for transformers >= 5, ``torch_dtype=`` before."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs, fp32 on CPU."""
    return torch.float16 if torch.device(device).type in ("cuda", "mps") else torch.float32


class DinoFeatures:
    """Dense DINOv2 features of rendered images.

    Parameters
    ----------
    model : a transformers Dinov2 model (already on ``device`` in ``dtype``)
    image_size : input side length in pixels (rounded to the patch size)
    batch_size : images per forward pass
    """

    name = "dino"

    def __init__(self, model, image_size: int = 448, batch_size: int = 4):
        self.model = model.eval()
        self.patch = int(model.config.patch_size)
        self.n_registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
        self.image_size = max(self.patch, int(round(image_size / self.patch)) * self.patch)
        self.batch_size = max(1, int(batch_size))
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, path: str, device="cpu", dtype: torch.dtype | None = None, **kw) -> "DinoFeatures":
        """Load from a local folder (a Hugging Face snapshot or ``save_pretrained`` output)."""
        from transformers import AutoConfig, AutoModel

        dev = resolve_device(device)
        dtype = dtype or default_dtype(dev)
        try:
            cfg = AutoConfig.from_pretrained(path, local_files_only=True)
            if cfg.model_type not in ("dinov2", "dinov2_with_registers"):
                raise BackendUnavailable(f"models: {path} holds a {cfg.model_type!r} model, not DINOv2")
            model = AutoModel.from_pretrained(path, local_files_only=True, **transformers_dtype_kw(dtype))
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"models: cannot load DINOv2 from {path} ({exc.__class__.__name__})") from None
        return cls(model.to(dev), **kw)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images : (K, 3, H, W) float in [0, 1] -> (K, C, h, w) float32, unit-norm per patch."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"dino: images must have shape (K, 3, H, W), got {tuple(images.shape)}")
        s = self.image_size
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        g = s // self.patch
        outs = []
        for i in range(0, len(images), self.batch_size):
            x = images[i : i + self.batch_size].to(self.device, torch.float32)
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            x = ((x - mean) / std).to(self.dtype)
            hidden = self.model(pixel_values=x).last_hidden_state  # (B, 1 + R + g*g, C)
            tok = hidden[:, 1 + self.n_registers :, :].float()
            fmap = tok.reshape(len(x), g, g, -1).permute(0, 3, 1, 2)
            outs.append(F.normalize(fmap, dim=1))
        return torch.cat(outs)
