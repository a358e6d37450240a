"""Semantic vertex features end to end on CPU with tiny random backbones; fusion, co-PCA, lifting, cache."""
import numpy as np
import pytest
import torch

from engine.errors import BackendUnavailable, InputError
from engine.features.cache import FeatureCache
from engine.features.fusion import co_pca, fuse
from engine.features.lift import finish_lift, lift_to_vertices
from engine.features.semantic import Backbones, SemanticSettings, available, vertex_features
from engine.mesh import prepare_mesh
from engine.render import orbit_cameras, rasterize
from engine.render.shading import Appearance

SMALL = {"semantic": {"views": 4, "render_resolution": 48, "sd_pca_dim": 8}}


@pytest.fixture(scope="module")
def tiny():
    from engine.features.testing import tiny_backbones

    return tiny_backbones("dino+sd")


def _mesh(kind="sphere", name="m"):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=2) if kind == "sphere" else trimesh.creation.capsule(height=1.0, radius=0.4, count=[8, 8])
    return prepare_mesh(m.vertices, m.faces, name).mesh


def test_vertex_features_dino_and_sd_shapes_norms_and_cache(tiny, tmp_path):
    src, tgt = _mesh("sphere", "src"), _mesh("capsule", "tgt")
    calls = {"n": 0}

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, images):
            calls["n"] += 1
            assert images.shape[1] == 3 and 0 <= float(images.min()) and float(images.max()) <= 1
            return self.inner(images)

    bb = Backbones(Counting(tiny.dino), tiny.sd, tiny.labels)
    fs, ft = vertex_features(src, tgt, "dino+sd", "cpu", cache_dir=tmp_path, config=SMALL, backbones=bb)
    d_dino = tiny.dino.dim
    assert fs.dtype == np.float32 and fs.shape[0] == src.n_vertices and ft.shape[0] == tgt.n_vertices
    assert fs.shape[1] == ft.shape[1] == d_dino + 3 * 8
    np.testing.assert_allclose(np.linalg.norm(fs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ft, axis=1), 1.0, atol=1e-5)
    # sqrt weights: each modality block carries its weight's share of the squared norm
    np.testing.assert_allclose((fs[:, :24] ** 2).sum(1), 0.5, atol=1e-4)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    n_before = calls["n"]
    fs2, ft2 = vertex_features(src, tgt, "dino+sd", "cpu", cache_dir=tmp_path, config=SMALL, backbones=bb)
    assert calls["n"] == n_before  # served from the cache
    np.testing.assert_array_equal(fs2, fs)  # a cached re-run gives exactly the first run's features
    # other settings -> other key
    cfg = {"semantic": dict(SMALL["semantic"], views=3)}
    vertex_features(src, tgt, "dino+sd", "cpu", cache_dir=tmp_path, config=cfg, backbones=bb)
    assert calls["n"] > n_before and len(list(tmp_path.glob("*.npz"))) == 4


def test_dino_mode_and_colour_change_features(tiny):
    src, tgt = _mesh("sphere"), _mesh("capsule")
    fs, ft = vertex_features(src, tgt, "dino", "cpu", cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino))
    assert fs.shape == (src.n_vertices, tiny.dino.dim)
    red = np.zeros((src.n_vertices, 3), np.float32)
    red[:, 0] = 1
    fs_red, _ = vertex_features(src, tgt, "dino", "cpu", cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino),
                                appearance=(Appearance(vertex_colors=red), None))
    assert np.abs(fs_red - fs).max() > 1e-3


def test_unreadable_texture_falls_back_to_clay(tiny, tmp_path):
    src, tgt = _mesh("sphere"), _mesh("capsule")
    bad = tmp_path / "tex.png"
    bad.write_bytes(b"\x89PNG broken")
    app = Appearance(face_uv=np.zeros((src.n_faces, 3, 2), np.float32), texture=str(bad))
    with pytest.warns(UserWarning, match="cannot read texture"):
        fs, _ = vertex_features(src, tgt, "dino", "cpu", cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino),
                                appearance=(app, None))
    ref, _ = vertex_features(src, tgt, "dino", "cpu", cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino))
    np.testing.assert_allclose(fs, ref, atol=1e-5)


def test_invisible_mesh_and_bad_arguments(tiny):
    src = _mesh("sphere")
    with pytest.raises(InputError, match="mode"):
        vertex_features(src, src, "clip", "cpu", cache_dir=False, backbones=Backbones(tiny.dino))
    with pytest.raises(BackendUnavailable, match="Stable Diffusion"):
        vertex_features(src, src, "dino+sd", "cpu", cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino))
    # cameras looking away: the up axis 'x' with the mesh far off-centre cannot happen through the API,
    # so lift directly from views that see nothing
    v = torch.tensor(src.vertices, dtype=torch.float32)
    f = torch.tensor(src.faces)
    cams = orbit_cameras(2, fit_radius=1.0, center=(50.0, 0.0, 0.0))
    r = rasterize(v, f, cams, 16)
    total, wsum = lift_to_vertices(torch.zeros(2, 4, 4, 4), v, f, cams, r, tol=0.02)
    with pytest.raises(InputError, match="not visible"):
        finish_lift(total, wsum, src.vertices, "src")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="CUDA"):
            vertex_features(src, src, "dino", "cuda", cache_dir=False, backbones=Backbones(tiny.dino))


def test_lifting_recovers_a_linear_feature_field():
    """Feature maps that encode the 3D point seen at each pixel lift back to the vertex positions."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=3)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    f = torch.tensor(m.faces)
    cams = orbit_cameras(6, elevations=(30.0, -30.0), fit_radius=1.0)
    r = rasterize(v, f, cams, 96)
    maps = r.interpolate(v, f).permute(0, 3, 1, 2)  # (K, 3, H, W): position per pixel
    total, wsum = lift_to_vertices(maps, v, f, cams, r, tol=0.02)
    feats, seen = finish_lift(total, wsum, m.vertices)
    assert seen.mean() > 0.95
    err = (feats - v).norm(dim=1)[torch.as_tensor(seen)]
    assert float(err.median()) < 0.02 and float(err.max()) < 0.1


def test_co_pca_and_fuse():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(20, 20, generator=g))[0]
    a = (torch.randn(100, 3, generator=g) * torch.tensor([5.0, 2.0, 0.5])) @ basis[:3]
    b = (torch.randn(80, 3, generator=g) * torch.tensor([5.0, 2.0, 0.5])) @ basis[:3] + 0.01 * torch.randn(80, 20, generator=g)
    pa, pb = co_pca(a, b, 3)
    assert pa.shape == (100, 3) and pb.shape == (80, 3)
    # the projection keeps (almost) all the variance, and pairwise distances with it
    x = torch.cat([a, b])
    y = torch.cat([pa, pb])
    assert torch.allclose(torch.cdist(x, x), torch.cdist(y, y), atol=0.1)
    var = y.var(0)
    assert var[0] > var[1] > var[2]
    # the same basis for both sets: projecting a row of b alone gives the same coordinates
    pa2, pb2 = co_pca(a, b, 3)
    assert torch.equal(pb, pb2)
    f = fuse([(torch.randn(5, 4, generator=g), 1.0), (torch.randn(5, 7, generator=g), 3.0)])
    assert f.shape == (5, 11)
    assert torch.allclose((f[:, :4] ** 2).sum(1), torch.full((5,), 0.25)) and torch.allclose(f.norm(dim=1), torch.ones(5))
    with pytest.raises(InputError):
        fuse([(torch.ones(2, 2), 0.0)])


def test_wide_blocks_are_cached_as_low_rank_factors(monkeypatch, tmp_path):
    from engine.features import semantic
    from engine.features.cache import compress_rows, decompress_rows

    rng = np.random.default_rng(0)
    low = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 40)) + 3.0  # rank 5 + offset
    parts = compress_rows(low, 8)
    assert parts["scores"].shape == (300, 8) and parts["scores"].dtype == np.float16
    np.testing.assert_allclose(decompress_rows(parts), low, atol=0.05 * np.abs(low).max())
    monkeypatch.setattr(semantic, "CACHE_RANK", 8)
    feats = {"sd0": torch.tensor(low, dtype=torch.float32), "dino": torch.ones(300, 4), "seen": torch.ones(300, dtype=torch.bool)}
    stored = semantic._to_cache(feats)
    assert set(stored) == {"sd0.scores", "sd0.basis", "sd0.mean", "dino", "seen"}
    c = FeatureCache(tmp_path)
    c.put("k", stored)
    back = semantic._from_cache(c.get("k"), "cpu")
    assert set(back) == {"sd0", "dino", "seen"} and back["seen"].dtype == torch.bool
    assert torch.allclose(back["sd0"], feats["sd0"], atol=0.05 * float(feats["sd0"].abs().max()))


def test_cache_survives_corruption_and_is_atomic(tmp_path):
    c = FeatureCache(tmp_path)
    assert c.put("k", {"a": np.arange(3)})
    (tmp_path / "k.npz").write_bytes(b"garbage")
    assert c.get("k") is None
    assert c.put("k", {"a": np.arange(3)})
    np.testing.assert_array_equal(c.get("k")["a"], np.arange(3))
    assert not list(tmp_path.glob(".tmp-*"))


def test_available_reports_missing_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("STABLEWRAP_DINO_MODEL", raising=False)
    ok, why = available("dino", cache_dir=str(tmp_path))
    assert not ok and "python -m engine models download dinov2-base" in why
    monkeypatch.delenv("STABLEWRAP_SD_MODEL", raising=False)
    ok, why = available("dino+sd", cache_dir=str(tmp_path))
    assert not ok and "python -m engine models download dinov2-base sd-1.5" in why
    ok, why = available("sd-turbo")
    assert not ok and "unknown" in why
    from engine.features.testing import save_tiny_dino

    save_tiny_dino(str(tmp_path / "dino"))
    ok, why = available("dino", config={"dino_model": str(tmp_path / "dino")})
    assert ok, why


def test_settings_validation():
    assert SemanticSettings.from_config({"semantic": {"views": 3, "unknown": 1}}).views == 3
    with pytest.raises(InputError):
        SemanticSettings.from_config({"semantic": {"views": 0}})
    assert SemanticSettings.from_config({"views": 0}).views == 8  # only the "semantic" section counts


def test_progress_is_reported_and_cancellation_stops_the_work(tiny):
    from engine.errors import Cancelled
    from engine.progress import Progress

    src, tgt = _mesh("sphere"), _mesh("capsule")
    seen = []
    p = Progress(lambda stage, f: seen.append((stage, f)), stages=[("features", 1.0)])
    p.stage("features")
    vertex_features(src, tgt, "dino", "cpu", progress=p, cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino))
    fr = [f for _, f in seen]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0) and len(fr) >= 3
    p2 = Progress(lambda stage, f: f < 0.3, stages=[("features", 1.0)])  # returning False cancels
    p2.stage("features")
    with pytest.raises(Cancelled):
        vertex_features(src, tgt, "dino", "cpu", progress=p2, cache_dir=False, config=SMALL, backbones=Backbones(tiny.dino))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_semantic_path_on_cuda_in_fp16_matches_cpu():
    """The GPU path (fp16 backbones, CUDA rasteriser) gives the same features as the CPU path."""
    from engine.features.testing import tiny_backbones

    src, tgt = _mesh("sphere"), _mesh("capsule")
    cpu = vertex_features(src, tgt, "dino+sd", "cpu", cache_dir=False, config=SMALL, backbones=tiny_backbones())
    gpu = vertex_features(src, tgt, "dino+sd", "cuda", cache_dir=False, config=SMALL,
                          backbones=tiny_backbones(device="cuda", dtype=torch.float16))
    for a, b in zip(cpu, gpu):
        assert np.isfinite(b).all()
        assert np.median((a * b).sum(1)) > 0.95  # cosine between the CPU and GPU features
