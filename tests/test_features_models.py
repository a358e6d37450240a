"""Backbones and the model store: real loading code on fake local model folders, no network."""
import os

import numpy as np
import pytest
import torch

from engine.errors import BackendUnavailable, InputError
from engine.features import model_store
from engine.features.dino import DinoFeatures, resolve_device
from engine.features.sd import SDFeatures


@pytest.fixture(scope="module")
def fake_models(tmp_path_factory):
    from engine.features.testing import save_tiny_dino, save_tiny_sd

    root = tmp_path_factory.mktemp("models")
    dino = save_tiny_dino(str(root / "dino"))
    sd = save_tiny_sd(str(root / "sd"))
    return {"dino": dino, "sd": sd, "root": root}


def _fake_hf_cache(cache: str, repo_id: str, src_dir: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """Lay out ``src_dir`` as a snapshot of ``repo_id`` in a Hugging Face hub cache folder."""
    import shutil

    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as fh:
        fh.write(commit)
    shutil.copytree(src_dir, os.path.join(repo, "snapshots", commit))


def test_dino_features_shape_norm_and_batching(fake_models):
    d = DinoFeatures.from_pretrained(fake_models["dino"], "cpu", image_size=56, batch_size=2)
    assert d.dtype == torch.float32  # fp32 on CPU (fp16 is the GPU default)
    imgs = torch.rand(3, 3, 40, 50)
    out = d(imgs)
    assert out.shape == (3, d.dim, 4, 4)
    assert torch.allclose(out.norm(dim=1), torch.ones(3, 4, 4), atol=1e-5)
    # batching does not change the result
    d1 = DinoFeatures(d.model, image_size=56, batch_size=3)
    assert torch.allclose(d1(imgs), out, atol=1e-5)
    with pytest.raises(InputError, match="images"):
        d(torch.rand(3, 40, 50))


def test_sd_features_blocks_and_early_stop(fake_models):
    s = SDFeatures.from_pretrained(fake_models["sd"], "cpu", image_size=64, timestep=50)
    ran = []
    h = s.unet.up_blocks[3].register_forward_hook(lambda *a: ran.append(1))
    try:
        out = s(torch.rand(2, 3, 64, 64))
    finally:
        h.remove()
    assert [tuple(o.shape[2:]) for o in out] == [(2, 2), (4, 4), (8, 8)]  # 1/32, 1/16, 1/8
    assert not ran  # the pass stops after the last block needed
    again = s(torch.rand(2, 3, 64, 64) * 0 + 0.5)
    assert torch.allclose(s(torch.full((2, 3, 64, 64), 0.5))[0], again[0])  # fixed noise seed: deterministic
    with pytest.raises(InputError, match="blocks"):
        SDFeatures(s.unet, s.vae, s.prompt_embeds, s.alphas_cumprod, blocks=(7,))
    with pytest.raises(InputError, match="timestep"):
        SDFeatures(s.unet, s.vae, s.prompt_embeds, s.alphas_cumprod, timestep=5000)


def test_not_a_model_folder_is_backend_unavailable(tmp_path, fake_models):
    with pytest.raises(BackendUnavailable, match="not a Stable Diffusion folder"):
        SDFeatures.from_pretrained(str(tmp_path), "cpu")
    with pytest.raises(BackendUnavailable, match="DINOv2"):
        DinoFeatures.from_pretrained(str(tmp_path), "cpu")
    with pytest.raises(BackendUnavailable, match="not DINOv2"):
        DinoFeatures.from_pretrained(os.path.join(fake_models["sd"], "text_encoder"), "cpu")


def test_model_store_resolves_from_the_hf_cache_offline(tmp_path, fake_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STABLEWRAP_DINO_MODEL", raising=False)
    cache = str(tmp_path / "hub")
    choice = model_store.choose("dino")
    assert choice.spec.repo_id == "facebook/dinov2-base"
    with pytest.raises(BackendUnavailable, match="python -m engine models download dinov2-base"):
        model_store.resolve(choice, cache)
    _fake_hf_cache(cache, "facebook/dinov2-base", fake_models["dino"])
    path = model_store.resolve(choice, cache)
    assert path.endswith("0123456789abcdef0123456789abcdef01234567")
    assert DinoFeatures.from_pretrained(path, "cpu").dim == 32
    status = {s.key: s for s in model_store.list_models(cache)}
    assert status["dinov2-base"].present and status["dinov2-base"].size_bytes > 0
    assert not status["sd-1.5"].present and "download sd-1.5" in status["sd-1.5"].detail
    # a snapshot without the weights is reported as partial
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(BackendUnavailable, match="partly downloaded"):
        model_store.resolve(choice, cache)


def test_model_choice_overrides(tmp_path, fake_models, monkeypatch):
    monkeypatch.setenv("STABLEWRAP_SD_MODEL", fake_models["sd"])
    c = model_store.choose("sd")
    assert c.local_dir == os.path.abspath(fake_models["sd"]) and model_store.resolve(c) == c.local_dir
    assert model_store.choose("dino", {"dino_model": "dinov2-small"}).spec.repo_id == "facebook/dinov2-small"
    assert model_store.choose("dino", {"dino_model": "someone/dinov2-finetune"}).spec.repo_id == "someone/dinov2-finetune"
    with pytest.raises(InputError, match="sd model"):
        model_store.choose("dino", {"dino_model": "sd-1.5"})
    with pytest.raises(InputError, match="neither"):
        model_store.choose("dino", {"dino_model": str(tmp_path / "nope")})


def test_download_refuses_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendUnavailable, match="HF_HUB_OFFLINE"):
        model_store.download("dinov2-small")
    with pytest.raises(InputError, match="unknown model"):
        model_store.download("gpt-7")


def test_models_cli_list_and_download(tmp_path, fake_models, monkeypatch, capsys):
    import argparse

    from engine.features import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "hub")
    _fake_hf_cache(cache, "facebook/dinov2-small", fake_models["dino"])
    parser = argparse.ArgumentParser()
    cli.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "list", "--cache-dir", cache])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    line = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert "present" in line["dinov2-small"] and "missing" in line["dinov2-base"]
    assert "python -m engine models download dinov2-base" in line["dinov2-base"]
    args = parser.parse_args(["models", "download", "dino", "--cache-dir", cache])
    assert args.func(args) == 1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    args = parser.parse_args(["models"])
    assert args.func(args) == 2


def test_semantic_path_with_models_loaded_from_folders(fake_models, tmp_path):
    """vertex_features through load_backbones (the real loading code) on fake model folders."""
    import trimesh

    from engine.features.semantic import load_backbones, release_models, vertex_features
    from engine.mesh import prepare_mesh

    cfg = {"dino_model": fake_models["dino"], "sd_model": fake_models["sd"],
           "semantic": {"views": 2, "render_resolution": 32, "dino_image_size": 56, "sd_image_size": 64, "sd_pca_dim": 4}}
    bb = load_backbones("dino+sd", "cpu", cfg)
    assert bb.labels["dino"] == os.path.abspath(fake_models["dino"])
    assert load_backbones("dino+sd", "cpu", cfg).dino is bb.dino  # loaded once per process
    m = trimesh.creation.icosphere(subdivisions=1)
    mesh = prepare_mesh(m.vertices, m.faces, "ico").mesh
    fs, ft = vertex_features(mesh, mesh, "dino+sd", "cpu", cache_dir=tmp_path, config=cfg)
    assert fs.shape == (mesh.n_vertices, 32 + 12)
    np.testing.assert_allclose(fs, ft, atol=1e-6)  # same mesh -> same features (the target comes from the cache)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    release_models()


def test_resolve_device_messages():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA is not available"):
            resolve_device("cuda")
