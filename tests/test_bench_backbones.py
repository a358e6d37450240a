"""engine.bench.backbones: the semantic backbones timed through the engine's own extractors
(here tiny models of the real architectures on the CPU; the real sizes run on a GPU machine)."""
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from engine.bench import backbones  # noqa: E402


def _tiny_dino(device, dtype, image_size):
    from engine.features.dino import DinoFeatures
    from engine.features.testing import tiny_dino_model

    return DinoFeatures(tiny_dino_model().to(device, dtype), image_size=image_size)


def _tiny_sd(device, dtype, image_size):
    from engine.features.sd import SDFeatures
    from engine.features.testing import tiny_sd_parts

    unet, vae, sched = tiny_sd_parts()
    return SDFeatures(unet.to(device, dtype), vae.to(device, dtype), torch.zeros(1, 8, 16), sched.alphas_cumprod,
                      image_size=image_size)


def test_a_backbone_is_timed_per_view_with_its_flops_and_a_matchs_feature_stage():
    rows = [backbones.time_backbone(_tiny_dino, "cpu", views=3, render_resolution=64, image_size=56, repeats=2, name="dino"),
            backbones.time_backbone(_tiny_sd, "cpu", views=2, render_resolution=64, image_size=64, repeats=1, name="sd")]
    for r in rows:
        assert r.device == "cpu" and r.gflop_per_view > 0 and r.seconds_per_view > 0
        assert r.match_stage_seconds == pytest.approx(2 * r.views * r.seconds_per_view)
        assert r.tflops == pytest.approx(r.gflop_per_view / r.seconds_per_view / 1e3)
    # FLOPs follow the input size: DINOv2 at 112 px has 4x the patches of 56 px
    big = backbones.time_backbone(_tiny_dino, "cpu", views=1, render_resolution=64, image_size=112, repeats=1)
    assert big.gflop_per_view > 3.5 * rows[0].gflop_per_view
    table = backbones.markdown(rows)
    assert table.count("| cpu |") == 2 and "(6 views)" in table and "(4 views)" in table


def test_the_real_architectures_have_their_published_sizes():
    """Built on the meta device (no memory): DINOv2 ViT-B/14 86M parameters, SD 1.5's UNet 860M."""
    with torch.device("meta"):
        dino = backbones.real_dino(torch.device("meta"), torch.float32, 448)
        sd = backbones.real_sd(torch.device("meta"), torch.float32, 512)
    n_dino = sum(p.numel() for p in dino.model.parameters())
    n_unet = sum(p.numel() for p in sd.unet.parameters())
    assert 85e6 < n_dino < 88e6, n_dino
    assert 855e6 < n_unet < 865e6, n_unet


@pytest.mark.parametrize("args, message", [
    (["--backbones", "clip"], "unknown backbone clip"),
    (["--backbones", ""], "unknown backbone"),
    (["--views", "0"], "at least 1"),
    pytest.param(["--devices", "cuda"], "no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert backbones.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
