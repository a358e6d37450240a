"""The one device policy of the engine.

``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU; an explicit
device that is not there is a BackendUnavailable error (one line). The Poisson
solve (cholespy) has no MPS backend: ``solver_device`` runs it, and the
registration around it, on the CPU there, while features may use MPS.
"""
from __future__ import annotations

import torch

from .errors import BackendUnavailable, InputError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device) -> torch.device:
    """"auto" -> cuda, then mps, then cpu; raises BackendUnavailable for an unusable explicit device."""
    name = str(device) if device is not None else "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"device: unknown device {name!r}; use auto, cpu, cuda or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device: unknown device {name!r}; use auto, cpu, cuda or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device: {name} requested but CUDA is not available (torch {torch.__version__}); use --device cpu or auto")
    if dev.type == "mps" and not _mps_available():
        raise BackendUnavailable(f"device: {name} requested but Apple MPS is not available; use --device cpu or auto")
    return dev


def solver_device(device: torch.device) -> str:
    """Where the Poisson solve and the registration run for a resolved device: "cpu" or "cuda[:i]"."""
    return "cpu" if device.type in ("cpu", "mps") else str(device)
