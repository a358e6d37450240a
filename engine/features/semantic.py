"""Semantic per-vertex features: multi-view renders -> DINOv2 (+ SD) -> fusion -> vertices.

    ok, why = available("dino+sd")
    fs, ft = vertex_features(source_mesh, target_mesh, "dino+sd", device="cuda")

Per mesh (cached by content + settings): render K views (clay shading, or lit
colour when an :class:`~engine.render.shading.Appearance` is given), run the
backbones, lift every feature map to the vertices. Per pair: reduce each SD
block by PCA fitted jointly on both meshes, L2-normalise per modality, fuse
with sqrt weights, L2-normalise the rows.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BackendUnavailable, InputError
from ..mesh import Mesh
from ..progress import Progress, SubProgress
from ..render import orbit_cameras, rasterize
from ..render.cameras import bounding_radius
from ..render.shading import Appearance, load_texture, shade, validate_appearance
from . import model_store
from .cache import FeatureCache, compress_rows, decompress_rows, mesh_key
from .dino import DinoFeatures, default_dtype, resolve_device
from .fusion import co_pca, fuse, l2_rows
from .lift import finish_lift, lift_to_vertices

log = logging.getLogger(__name__)

MODES = ("dino", "dino+sd")


@dataclass
class SemanticSettings:
    """Everything that changes the semantic features (all part of the cache key)."""

    views: int = 8
    elevations: tuple = (20.0, -15.0)
    fov: float = 40.0
    up: str = "y"
    render_resolution: int = 448
    shading: str = "lambert"
    raster_backend: str = "auto"
    dino_image_size: int = 448
    sd_image_size: int = 512
    sd_timestep: int = 100
    sd_blocks: tuple = (0, 1, 2)
    sd_pca_dim: int = 64
    dino_weight: float = 0.5
    sd_weight: float = 0.5
    view_chunk: int = 4

    @classmethod
    def from_config(cls, config: dict | None) -> "SemanticSettings":
        """Take the entries of ``config["semantic"]`` that name a field (others are ignored)."""
        sub = (config or {}).get("semantic") or {}
        if not isinstance(sub, dict):
            raise InputError(f"semantic settings: config['semantic'] must be a mapping, got {type(sub).__name__}")
        cfg = dict(sub)
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in cfg.items() if k in names}
        for k in ("elevations", "sd_blocks"):
            if k in kw:
                kw[k] = tuple(kw[k])
        s = cls(**kw)
        if s.views < 1 or s.render_resolution < 16 or s.sd_pca_dim < 1:
            raise InputError(f"semantic settings: views >= 1, render_resolution >= 16 and sd_pca_dim >= 1 are needed (got {s.views}, {s.render_resolution}, {s.sd_pca_dim})")
        if s.dino_weight < 0 or s.sd_weight < 0:
            raise InputError("semantic settings: feature weights must be >= 0")
        return s

    def key_dict(self, mode: str) -> dict:
        d = dataclasses.asdict(self)
        d.pop("view_chunk")
        d.pop("raster_backend")  # both backends give the same raster
        d.pop("dino_weight")
        d.pop("sd_weight")
        d.pop("sd_pca_dim")  # pair-level settings
        if mode == "dino":
            for k in ("sd_image_size", "sd_timestep", "sd_blocks"):
                d.pop(k)
        return d


@dataclass
class Backbones:
    """The 2D feature extractors: callables images (K, 3, H, W) in [0, 1] -> feature maps.

    dino : returns (K, C, h, w); sd : returns a list of (K, C_b, h_b, w_b) (None for "dino")
    labels : names that identify the weights (part of the cache key)
    """

    dino: object
    sd: object | None = None
    labels: dict = field(default_factory=dict)


# ------------------------------------------------------------------ availability / loading

_loaded: dict[tuple, object] = {}
_load_lock = threading.Lock()


def _packages(mode: str) -> tuple[bool, str]:
    """Whether the packages are installed, without importing them (importing costs seconds)."""
    from importlib.util import find_spec

    if find_spec("transformers") is None:
        return False, "the transformers package is not installed (pip install 'stablewrap-engine[features]')"
    if mode == "dino+sd" and find_spec("diffusers") is None:
        return False, "the diffusers package is not installed (pip install 'stablewrap-engine[features]')"
    return True, "ok"


def available(mode: str, config: dict | None = None, cache_dir: str | None = None) -> tuple[bool, str]:
    """Whether ``mode`` ("dino" or "dino+sd") can run here: packages installed and weights local.

    Never downloads, never raises for missing things; returns (False, reason).
    """
    if mode not in MODES:
        return False, f"unknown semantic feature mode {mode!r}; use one of {', '.join(MODES)}"
    ok, why = _packages(mode)
    if not ok:
        return False, why
    kinds = ["dino"] + (["sd"] if mode == "dino+sd" else [])
    problems, to_fetch = [], []
    for kind in kinds:
        try:
            choice = model_store.choose(kind, config)
        except InputError as exc:
            return False, str(exc)
        present, detail = model_store.is_present(choice, cache_dir)
        if not present:
            problems.append(detail)
            if choice.spec is not None and choice.spec.key in model_store.MODELS:
                to_fetch.append(choice.spec.key)
    if not problems:
        return True, "ok"
    if len(problems) == 1:
        return False, problems[0]
    return False, (f"models: {' and '.join(to_fetch) or 'the configured models'} are missing locally; fetch them once with: "
                   f"python -m engine models download {' '.join(to_fetch)}" if len(to_fetch) == len(problems) else "; ".join(problems))


def load_backbones(mode: str, device="auto", config: dict | None = None, cache_dir: str | None = None,
                   settings: SemanticSettings | None = None) -> Backbones:
    """Load (once per process and device) the backbones ``mode`` needs, from local files only.

    Raises BackendUnavailable (one line, with the download command) when something is missing.
    """
    if mode not in MODES:
        raise InputError(f"features: unknown semantic mode {mode!r}; use one of {', '.join(MODES)}")
    ok, why = _packages(mode)
    if not ok:
        raise BackendUnavailable(f"features: {why}")
    settings = settings or SemanticSettings.from_config(config)
    dev = resolve_device(device)
    dtype = default_dtype(dev)
    labels = {}

    def get(kind: str):
        choice = model_store.choose(kind, config)
        path = model_store.resolve(choice, cache_dir)
        labels[kind] = choice.label
        key = (kind, path, str(dev), str(dtype))
        with _load_lock:
            if key not in _loaded:
                if kind == "dino":
                    _loaded[key] = DinoFeatures.from_pretrained(path, dev, dtype)
                else:
                    from .sd import SDFeatures

                    _loaded[key] = SDFeatures.from_pretrained(path, dev, dtype)
            return _loaded[key]

    dino = get("dino")
    dino.image_size = max(dino.patch, round(settings.dino_image_size / dino.patch) * dino.patch)
    sd = None
    if mode == "dino+sd":
        sd = get("sd")
        sd.image_size = max(64, round(settings.sd_image_size / 64) * 64)
        sd.timestep = int(settings.sd_timestep)
        sd.blocks = tuple(sorted(settings.sd_blocks))
    return Backbones(dino, sd, labels)


def release_models() -> None:
    """Drop every loaded backbone (frees GPU memory)."""
    with _load_lock:
        _loaded.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ per-mesh raw features


def _resolve_appearance(appearance: Appearance | None, mesh: Mesh, name: str) -> Appearance | None:
    """Validate colours; a texture given as a path is loaded, and falls back to clay shading when unreadable."""
    if appearance is None:
        return None
    if isinstance(appearance.texture, (str, bytes)) or hasattr(appearance.texture, "__fspath__"):
        try:
            appearance = dataclasses.replace(appearance, texture=load_texture(appearance.texture))
        except InputError as exc:
            msg = f"{name}: {exc}; rendering without the texture"
            warnings.warn(msg, stacklevel=3)
            log.warning(msg)
            appearance = dataclasses.replace(appearance, texture=None, face_uv=None)
    return validate_appearance(appearance, mesh.n_vertices, mesh.n_faces, name)


def mesh_raw_features(mesh: Mesh, backbones: Backbones, mode: str, settings: SemanticSettings, device: torch.device,
                      appearance: Appearance | None = None, cache: FeatureCache | None = None,
                      progress=None, name: str = "mesh") -> dict[str, torch.Tensor]:
    """Per-vertex lifted backbone features of one mesh (before the pair-level PCA / fusion).

    returns : {"dino": (n, Cd), "sd0": (n, C0), ...} float32 torch on ``device``, plus "seen" (n,) bool
    """
    appearance = _resolve_appearance(appearance, mesh, name)
    key = None
    if cache is not None:
        labels = {k: str(v) for k, v in sorted(backbones.labels.items())}
        key = mesh_key(mesh.vertices, mesh.faces, {"mode": mode, "settings": settings.key_dict(mode), "models": labels},
                       appearance.fingerprint() if appearance is not None else b"")
        hit = cache.get(key)
        if hit is not None:
            if progress is not None:
                progress.update(1.0)
            return _from_cache(hit, device)

    v = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=device)
    f = torch.as_tensor(mesh.faces, dtype=torch.int64, device=device)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    center = (lo + hi) / 2
    radius = bounding_radius(mesh.vertices, center=center)
    cams = orbit_cameras(settings.views, settings.elevations, fov=settings.fov, device=device, center=center,
                         fit_radius=radius, up=settings.up)
    tol = 0.02 * radius
    res = int(settings.render_resolution)
    accum: dict[str, tuple] = {}
    chunk = max(1, int(settings.view_chunk))
    n_chunks = (settings.views + chunk - 1) // chunk
    for ci, c0 in enumerate(range(0, settings.views, chunk)):
        sub = cams[slice(c0, c0 + chunk)]
        raster = rasterize(v, f, sub, res, backend=settings.raster_backend)
        images = shade(raster, sub, v, f, appearance, mode=settings.shading)
        maps = {"dino": backbones.dino(images)}
        if mode == "dino+sd":
            for bi, m in enumerate(backbones.sd(images)):
                maps[f"sd{bi}"] = m
        for k, m in maps.items():
            accum[k] = lift_to_vertices(m, v, f, sub, raster, tol, accum.get(k))
        if progress is not None:
            progress.update((ci + 1) / n_chunks)
    out: dict[str, torch.Tensor] = {}
    seen = None
    for k, (total, wsum) in accum.items():
        out[k], seen = finish_lift(total, wsum, mesh.vertices, name)
    out["seen"] = torch.as_tensor(seen, device=device)
    # the stored form (float16, wide blocks as low-rank factors) is used even on a cache miss,
    # so that a first run and a cached re-run give identical features
    stored = _to_cache(out)
    if cache is not None and key is not None:
        cache.put(key, stored)
    return _from_cache(stored, device)


CACHE_RANK = 256  # wide blocks (SD: 640-1280 channels) are stored as rank-256 factors


def _to_cache(feats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for k, t in feats.items():
        a = t.cpu().numpy()
        if a.dtype == bool:
            arrays[k] = a
        elif a.shape[1] > CACHE_RANK:
            for part, v in compress_rows(a, CACHE_RANK).items():
                arrays[f"{k}.{part}"] = v
        else:
            arrays[k] = a.astype(np.float16)
    return arrays


def _from_cache(arrays: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, a in arrays.items():
        if k.endswith(".scores"):
            base = k[: -len(".scores")]
            parts = {p: arrays[f"{base}.{p}"] for p in ("scores", "basis", "mean")}
            out[base] = torch.as_tensor(decompress_rows(parts), device=device)
        elif "." in k:
            continue
        elif a.dtype == bool:
            out[k] = torch.as_tensor(a, device=device)
        else:
            out[k] = torch.as_tensor(a.astype(np.float32), device=device)
    return out


# ------------------------------------------------------------------ pair-level fusion


def fuse_pair(raw_s: dict[str, torch.Tensor], raw_t: dict[str, torch.Tensor], mode: str,
              settings: SemanticSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-PCA the SD blocks over the pair, fuse the modalities, L2-normalise rows."""
    dino_s, dino_t = l2_rows(raw_s["dino"]), l2_rows(raw_t["dino"])
    if mode == "dino":
        return dino_s, dino_t
    sd_s, sd_t = [], []
    bi = 0
    while f"sd{bi}" in raw_s:
        ps, pt = co_pca(raw_s[f"sd{bi}"], raw_t[f"sd{bi}"], settings.sd_pca_dim)
        sd_s.append(l2_rows(ps))
        sd_t.append(l2_rows(pt))
        bi += 1
    fs = fuse([(torch.cat(sd_s, 1), settings.sd_weight), (dino_s, settings.dino_weight)])
    ft = fuse([(torch.cat(sd_t, 1), settings.sd_weight), (dino_t, settings.dino_weight)])
    return F.normalize(fs, dim=1), F.normalize(ft, dim=1)


def vertex_features(source: Mesh, target: Mesh, mode: str, device="auto", progress: Progress | None = None,
                    cache_dir=None, config: dict | None = None, backbones: Backbones | None = None,
                    appearance: tuple[Appearance | None, Appearance | None] = (None, None),
                    hf_cache_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fused semantic features of every vertex of both meshes.

    Parameters
    ----------
    source, target : Mesh, normalised and rigidly pre-aligned
    mode : "dino" or "dino+sd"
    device : "auto", "cpu", "cuda", "mps" or a torch.device
    progress : optional Progress; the caller starts the stage, this reports fractions within it
        (source renders: 0 -> 0.5, target: 0.5 -> 1) and raises Cancelled when cancelled
    cache_dir : folder of the per-mesh cache (None: default ~/.cache/stablewrap/features; False: no cache)
    config : dict; ``config["semantic"]`` entries override :class:`SemanticSettings`,
        ``dino_model`` / ``sd_model`` choose the models
    backbones : injected extractors (tests, custom models); default: load from the model store
    appearance : optional colours of (source, target)

    Returns
    -------
    fs : (ns, d) float32, ft : (nt, d) float32, unit rows

    Raises
    ------
    InputError : bad mode or settings, a mesh invisible from every view
    BackendUnavailable : packages or weights missing (message names the download command)
    """
    if mode not in MODES:
        raise InputError(f"features: unknown semantic mode {mode!r}; use one of {', '.join(MODES)}")
    for m, nm in ((source, "source"), (target, "target")):
        if not isinstance(m, Mesh):
            raise InputError(f"features: {nm} must be an engine.Mesh, got {type(m).__name__}")
    settings = SemanticSettings.from_config(config)
    dev = resolve_device(device)
    if backbones is None:
        backbones = load_backbones(mode, dev, config, hf_cache_dir, settings)
    if mode == "dino+sd" and backbones.sd is None:
        raise BackendUnavailable("features: mode 'dino+sd' needs a Stable Diffusion backbone, none was given")
    cache = None if cache_dir is False else FeatureCache(cache_dir or None)
    raws = []
    for i, (mesh, app, nm) in enumerate(((source, appearance[0], "source"), (target, appearance[1], "target"))):
        sub = SubProgress(progress, 0.5 * i, 0.5) if progress is not None else None
        raws.append(mesh_raw_features(mesh, backbones, mode, settings, dev, app, cache, sub, mesh.name or nm))
    fs, ft = fuse_pair(raws[0], raws[1], mode, settings)
    fs_np = fs.float().cpu().numpy().astype(np.float32)
    ft_np = ft.float().cpu().numpy().astype(np.float32)
    if not (np.isfinite(fs_np).all() and np.isfinite(ft_np).all()):
        raise BackendUnavailable("features: the backbone produced NaN features (fp16 overflow?); retry with --device cpu")
    return fs_np, ft_np
