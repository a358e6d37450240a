"""Where the foundation models come from: the Hugging Face cache, offline once present.

Models are named by a short key (``dinov2-base``, ``sd-1.5``...) that maps to a
Hugging Face repository, a revision and the files we need. A key can be
overridden by a local directory (a ``save_pretrained`` folder) through the
``STABLEWRAP_DINO_MODEL`` / ``STABLEWRAP_SD_MODEL`` environment variables or
the ``dino_model`` / ``sd_model`` config entries.

Resolution never touches the network: only :func:`download` does (used by
``python -m engine models download``). A missing model raises
:class:`~engine.errors.BackendUnavailable` with the command that fetches it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import BackendUnavailable, InputError


@dataclass(frozen=True)
class ModelSpec:
    """A downloadable model.

    key : short name used on the command line
    kind : "dino" or "sd"
    repo_id, revision : Hugging Face repository and branch / tag / commit
    allow_patterns : files to fetch (None: everything)
    approx_size : human-readable download size
    """

    key: str
    kind: str
    repo_id: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] | None = None
    approx_size: str = ""
    description: str = ""


_SD_FILES = (
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
)
_DINO_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")

MODELS: dict[str, ModelSpec] = {
    s.key: s
    for s in (
        ModelSpec("dinov2-small", "dino", "facebook/dinov2-small", allow_patterns=_DINO_FILES, approx_size="90 MB",
                  description="DINOv2 ViT-S/14"),
        ModelSpec("dinov2-base", "dino", "facebook/dinov2-base", allow_patterns=_DINO_FILES, approx_size="350 MB",
                  description="DINOv2 ViT-B/14 (default)"),
        ModelSpec("dinov2-large", "dino", "facebook/dinov2-large", allow_patterns=_DINO_FILES, approx_size="1.2 GB",
                  description="DINOv2 ViT-L/14"),
        ModelSpec("sd-1.5", "sd", "stable-diffusion-v1-5/stable-diffusion-v1-5", allow_patterns=_SD_FILES,
                  approx_size="2.0 GB", description="Stable Diffusion 1.5: UNet, VAE, CLIP text encoder, fp16 (default)"),
        ModelSpec("sd-2.1-base", "sd", "stabilityai/stable-diffusion-2-1-base", allow_patterns=_SD_FILES,
                  approx_size="2.6 GB", description="Stable Diffusion 2.1 base, fp16"),
    )
}
DEFAULT_MODELS = {"dino": "dinov2-base", "sd": "sd-1.5"}
ENV_OVERRIDES = {"dino": "STABLEWRAP_DINO_MODEL", "sd": "STABLEWRAP_SD_MODEL"}


@dataclass
class ModelChoice:
    """What to load for one kind of backbone: a registry spec or a local folder."""

    kind: str
    spec: ModelSpec | None = None
    local_dir: str | None = None

    @property
    def label(self) -> str:
        return self.local_dir if self.local_dir else self.spec.key  # type: ignore[union-attr]


def choose(kind: str, config: dict | None = None) -> ModelChoice:
    """The model to use for ``kind`` ("dino" or "sd").

    Order: ``config[f"{kind}_model"]``, then the environment variable, then the default.
    A value is a key of :data:`MODELS`, a Hugging Face repo id, or a local directory.
    """
    if kind not in DEFAULT_MODELS:
        raise InputError(f"models: unknown model kind {kind!r}; use 'dino' or 'sd'")
    value = (config or {}).get(f"{kind}_model") or os.environ.get(ENV_OVERRIDES[kind]) or DEFAULT_MODELS[kind]
    value = str(value)
    if value in MODELS:
        spec = MODELS[value]
        if spec.kind != kind:
            raise InputError(f"models: {value!r} is a {spec.kind} model, not a {kind} model")
        return ModelChoice(kind, spec=spec)
    if os.path.isdir(value):
        return ModelChoice(kind, local_dir=os.path.abspath(value))
    if "/" in value and not os.path.isabs(value) and not value.startswith("."):
        files = _DINO_FILES if kind == "dino" else _SD_FILES
        return ModelChoice(kind, spec=ModelSpec(value, kind, value, allow_patterns=files))
    raise InputError(f"models: {value!r} is neither a known model ({', '.join(MODELS)}), a Hugging Face repo id nor an existing directory")


def hf_cache_dir(cache_dir: str | None = None) -> str:
    """The Hugging Face hub cache used (``HF_HUB_CACHE`` / ``HF_HOME`` are honoured)."""
    if cache_dir:
        return os.fspath(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_hint(spec: ModelSpec) -> str:
    return f"python -m engine models download {spec.key}"


def resolve(choice: ModelChoice, cache_dir: str | None = None) -> str:
    """Local directory holding the model; never downloads.

    Raises BackendUnavailable naming the model and the command that fetches it.
    """
    if choice.local_dir is not None:
        if not os.path.isdir(choice.local_dir):
            raise BackendUnavailable(f"models: local model directory {choice.local_dir} does not exist")
        return choice.local_dir
    spec = choice.spec
    assert spec is not None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise BackendUnavailable("models: huggingface_hub is not installed; install it with: pip install 'stablewrap-engine[features]'") from None
    try:
        path = snapshot_download(
            spec.repo_id,
            revision=spec.revision,
            cache_dir=hf_cache_dir(cache_dir),
            local_files_only=True,
            allow_patterns=list(spec.allow_patterns) if spec.allow_patterns else None,
        )
    except Exception:
        raise BackendUnavailable(
            f"models: {spec.key} ({spec.repo_id}@{spec.revision}) is not in the Hugging Face cache "
            f"{hf_cache_dir(cache_dir)}; fetch it once with: {download_hint(spec)}"
        ) from None
    missing = _missing_files(path, spec)
    if missing:
        raise BackendUnavailable(
            f"models: {spec.key} is only partly downloaded (missing {missing[0]}); fetch it again with: {download_hint(spec)}"
        )
    return path


def _missing_files(path: str, spec: ModelSpec) -> list[str]:
    """Required files (patterns without wildcards) absent from a snapshot folder."""
    if not spec.allow_patterns:
        return []
    need = [p for p in spec.allow_patterns if "*" not in p and p != "preprocessor_config.json"]
    return [p for p in need if not os.path.exists(os.path.join(path, p))]


def is_present(choice: ModelChoice, cache_dir: str | None = None) -> tuple[bool, str]:
    """(present, path or reason) without raising."""
    try:
        return True, resolve(choice, cache_dir)
    except BackendUnavailable as exc:
        return False, str(exc)


def download(key: str, cache_dir: str | None = None) -> str:
    """Fetch a model into the Hugging Face cache (network); returns its local folder."""
    if key not in MODELS:
        raise InputError(f"models: unknown model {key!r}; known models: {', '.join(MODELS)}")
    spec = MODELS[key]
    if offline():
        raise BackendUnavailable(f"models: HF_HUB_OFFLINE is set, so {key} cannot be downloaded; unset it or copy the cache from another machine")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            spec.repo_id,
            revision=spec.revision,
            cache_dir=hf_cache_dir(cache_dir),
            allow_patterns=list(spec.allow_patterns) if spec.allow_patterns else None,
        )
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BackendUnavailable(f"models: downloading {key} from {spec.repo_id} failed ({exc.__class__.__name__}: {first})") from None
    missing = _missing_files(path, spec)
    if missing:
        raise BackendUnavailable(f"models: {spec.repo_id} does not provide {missing[0]}; this model cannot be used as {key}")
    return path


@dataclass
class ModelStatus:
    key: str
    kind: str
    repo_id: str
    present: bool
    detail: str
    size_bytes: int = 0
    extra: dict = field(default_factory=dict)


def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.realpath(os.path.join(root, f)))
            except OSError:
                pass
    return total


def list_models(cache_dir: str | None = None) -> list[ModelStatus]:
    """Every known model and whether it is available locally."""
    out = []
    for spec in MODELS.values():
        ok, detail = is_present(ModelChoice(spec.kind, spec=spec), cache_dir)
        out.append(ModelStatus(spec.key, spec.kind, spec.repo_id, ok, detail, _dir_size(detail) if ok else 0))
    return out
