"""engine.match with semantic features, on tiny randomly initialised models of the real architectures
loaded through the real model-loading code from a local model folder (no downloads)."""
import numpy as np
import pytest

import engine
from engine.errors import BackendUnavailable

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dino_dir(tmp_path_factory):
    from engine.features.testing import save_tiny_dino

    return save_tiny_dino(str(tmp_path_factory.mktemp("dino") / "tiny-dinov2"))


def test_match_with_dino_features_runs_end_to_end_on_a_tiny_model(small_pair, tiny_dino_dir, tmp_path):
    cfg = {
        "dino_model": tiny_dino_dir,
        "semantic": {"views": 4, "render_resolution": 64, "dino_image_size": 56, "raster_backend": "torch"},
        "reg_steps": 20,
    }
    r = engine.match((small_pair.source_vertices, small_pair.source_faces), (small_pair.target_vertices, small_pair.target_faces),
                     features="dino", quality="fast", device="cpu", config=cfg)
    assert r.meta["features"] == "dino"
    ns = len(small_pair.source_vertices)
    assert r.fitted_vertices.shape == (ns, 3) and np.isfinite(r.fitted_vertices).all()
    assert np.all((r.confidence >= 0) & (r.confidence <= 1))


def test_dino_without_weights_is_a_clear_error_and_auto_falls_back(small_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = {"dino_model": str(tmp_path / "no-such-model-folder")}
    with pytest.raises(BackendUnavailable) as exc:
        engine.match((small_pair.source_vertices, small_pair.source_faces), (small_pair.target_vertices, small_pair.target_faces),
                     features="dino", quality="fast", device="cpu", config=missing)
    assert "\n" not in str(exc.value)
    r = engine.match((small_pair.source_vertices, small_pair.source_faces), (small_pair.target_vertices, small_pair.target_faces),
                     method="full", features="auto", quality="fast", device="cpu", config={**missing, "reg_steps": 10})
    assert r.meta["features"] == "geometric"
    assert any("geometric" in n for n in r.meta["notices"])


def test_paper_mode_rendered_flow_guidance_runs_through_match(small_pair, tiny_dino_dir):
    cfg = {
        "dino_model": tiny_dino_dir,
        "semantic": {"views": 4, "render_resolution": 64, "dino_image_size": 56, "raster_backend": "torch"},
        "guidance": "flow", "flow_views": 4, "flow_resolution": 32, "reg_steps": 12, "reg_update_every": 6,
    }
    r = engine.match((small_pair.source_vertices, small_pair.source_faces), (small_pair.target_vertices, small_pair.target_faces),
                     features="dino", quality="fast", device="cpu", config=cfg)
    assert np.isfinite(r.fitted_vertices).all() and r.meta["features"] == "dino"


def test_unknown_guidance_kind_is_a_one_line_config_error(small_pair):
    with pytest.raises(engine.InputError, match="setting 'guidance' has the invalid value 'telepathy'; use one of vertex, flow"):
        engine.match((small_pair.source_vertices, small_pair.source_faces), (small_pair.target_vertices, small_pair.target_faces),
                     config={"guidance": "telepathy"})
