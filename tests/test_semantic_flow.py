"""Rendered semantic flow: per-view nearest neighbours, cycle check, rendered-flow loss and its gradient."""
import numpy as np
import pytest
import torch

from engine.correspond.semantic_flow import RenderedFlowGuidance, semantic_flow_view
from engine.errors import InputError
from engine.mesh import Mesh, prepare_mesh

SHIFT = np.array([0.06, 0.04, 0.0])


def _fourier(points, dim=96, sigma=0.15, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, dim // 2)) / sigma
    p = points @ w
    z = np.concatenate([np.cos(p), np.sin(p)], axis=1)
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def pair():
    """A lumpy sphere and the same surface shifted; features say which point is which."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=3)
    v = m.vertices * (1 + 0.15 * np.sin(3 * m.vertices[:, :1]) * np.cos(2 * m.vertices[:, 1:2]))
    src = prepare_mesh(v, m.faces, "src").mesh
    tgt = Mesh(src.vertices + SHIFT, src.faces, "tgt")
    fs = _fourier(src.vertices)
    ft = _fourier(tgt.vertices - SHIFT)  # the same canonical coordinates
    return src, tgt, fs, ft


def _guidance(pair, **kw):
    src, tgt, fs, ft = pair
    g = RenderedFlowGuidance(features=(fs, ft), device="cpu", views=4, resolution=48, **kw)
    g.prepare(src, tgt)
    return g


def test_flow_recovers_a_known_translation(pair):
    src, tgt, _, _ = pair
    g = _guidance(pair)
    sv, tp, w = g.matches()
    assert len(sv) > 500 and np.all(w >= 0)
    err = np.linalg.norm(tp - (src.vertices[sv] + SHIFT), axis=1)
    assert np.median(err) < 0.04  # about one pixel and a vertex spacing
    # the loss is lower at the true deformation than at the start, and ~0 after an update there
    x0 = torch.tensor(src.vertices)
    assert float(g.loss(x0 + torch.tensor(SHIFT))) < 0.3 * float(g.loss(x0))
    g.update(src.vertices + SHIFT, step=100, fraction=0.5)
    assert float(g.loss(x0 + torch.tensor(SHIFT))) < 0.01


def test_reduced_matching_dimension_still_finds_the_translation(pair):
    src, _, _, _ = pair
    g = _guidance(pair, match_dim=24)
    assert g.fs.shape[1] == 24
    sv, tp, _ = g.matches()
    assert np.median(np.linalg.norm(tp - (src.vertices[sv] + SHIFT), axis=1)) < 0.05


def test_loss_gradient_moves_the_source_towards_the_target(pair):
    src, _, _, _ = pair
    g = _guidance(pair)
    x0 = torch.tensor(src.vertices, dtype=torch.float64)
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([t], lr=0.015)
    for _ in range(40):
        opt.zero_grad()
        loss = g.loss(x0 + t)
        loss.backward()
        opt.step()
    assert np.linalg.norm(t.detach().numpy() - SHIFT) < 0.02


def test_loss_gradient_matches_finite_differences(pair):
    src, _, _, _ = pair
    g = _guidance(pair)
    # a generic point (at the update point the pixels sit exactly on L1 kinks in some views)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor(src.vertices + 0.37 * SHIFT) + 0.01 * torch.randn(src.n_vertices, 3, dtype=torch.float64, generator=gen)
    x = x0.clone().requires_grad_(True)
    loss = g.loss(x)
    loss.backward()
    d = torch.randn(x.shape, dtype=torch.float64, generator=gen) * 1e-4
    with torch.no_grad():
        fd = (g.loss(x + d) - g.loss(x - d)) / 2
    assert abs(float((x.grad * d).sum()) - float(fd)) < 0.05 * abs(float(fd)) + 1e-7


def test_match_filter_is_applied(pair):
    seen = {}

    def only_even(source, target, sv, tp, tf):
        seen["n"] = len(sv)
        assert tp.shape == (len(sv), 3) and tf.shape == (len(sv),)
        return sv % 2 == 0

    g = _guidance(pair, match_filter=only_even)
    sv, _, _ = g.matches()
    assert seen["n"] > len(sv) > 0 and np.all(sv % 2 == 0)


def test_cycle_check_drops_ambiguous_matches():
    h, w, d = 6, 6, 36
    eye = torch.eye(d).reshape(h, w, d)
    mask = torch.ones(h, w, dtype=torch.bool)
    p, q, sim = semantic_flow_view(eye, mask, eye, mask, cycle_radius=0)
    assert torch.equal(p, q) and len(p) == 36 and torch.allclose(sim, torch.ones(36))
    # two far-apart source pixels with the same feature: only one can survive the cycle
    dup = eye.clone()
    dup[5, 5] = dup[0, 0]
    p, q, _ = semantic_flow_view(dup, mask, eye, mask, cycle_radius=0)
    assert len(p) == 35 and int((q == 0).sum()) == 1
    # with a radius covering the distance the pair would pass again
    p, q, _ = semantic_flow_view(dup, mask, eye, mask, cycle_radius=10)
    assert len(p) == 36
    # masks restrict both sides
    m2 = mask.clone()
    m2[:, :3] = False
    p, q, _ = semantic_flow_view(eye, m2, eye, mask, cycle_radius=0)
    assert len(p) == 18 and torch.all(p % w >= 3)


def test_bad_use_gives_clear_errors(pair):
    src, tgt, fs, ft = pair
    g = RenderedFlowGuidance(features=(fs[:-1], ft), device="cpu", views=2, resolution=16)
    with pytest.raises(InputError, match="features must be"):
        g.prepare(src, tgt)
    g = RenderedFlowGuidance(features=(fs, ft), device="cpu", views=2, resolution=16)
    with pytest.raises(InputError, match="prepare"):
        g.update(src.vertices, 0, 0.0)
    g.prepare(src, tgt)
    with pytest.raises(InputError, match="finite"):
        g.update(src.vertices * np.nan, 0, 0.0)
    with pytest.raises(InputError, match="resolution"):
        RenderedFlowGuidance(features=(fs, ft), resolution=2)


def test_semantic_flow_with_tiny_backbones_end_to_end(pair):
    from engine.features.testing import tiny_backbones

    src, tgt, _, _ = pair
    g = RenderedFlowGuidance(mode="dino", device="cpu", views=2, resolution=32,
                             feature_kwargs={"backbones": tiny_backbones("dino"), "cache_dir": False,
                                             "config": {"semantic": {"views": 2, "render_resolution": 32}}})
    g.prepare(src, tgt)
    x = torch.tensor(src.vertices, requires_grad=True)
    loss = g.loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert g.matches() is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flow_on_cuda_matches_cpu(pair):
    src, _, _, _ = pair
    cpu = _guidance(pair)
    src_, tgt, fs, ft = pair
    gpu = RenderedFlowGuidance(features=(fs, ft), device="cuda", views=4, resolution=48)
    gpu.prepare(src_, tgt)
    a, b = cpu.matches(), gpu.matches()
    assert abs(len(a[0]) - len(b[0])) <= 0.02 * len(a[0])
    x = torch.tensor(src.vertices + SHIFT * 0.5)
    assert abs(float(cpu.loss(x)) - float(gpu.loss(x.cuda()))) < 0.02 * float(cpu.loss(x)) + 1e-6


def test_unavailable_device_is_reported(pair):
    from engine.errors import BackendUnavailable

    src, tgt, fs, ft = pair
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        RenderedFlowGuidance(features=(fs, ft), device="cuda").prepare(src, tgt)


def test_bicyclic_filter_keeps_consistent_and_drops_inconsistent_matches(pair):
    from engine.correspond.semantic_flow import BicyclicFlowFilter

    src, tgt, fs, ft = pair
    g = _guidance(pair)
    sv, tp, _ = g.matches()
    tf = g.flow.target_tri.numpy()
    keep = BicyclicFlowFilter(fs, ft, tau=0.05)(src, tgt, sv, tp, tf)
    assert keep.mean() > 0.9
    # features that say nothing consistent: the round trips wander off
    rng = np.random.default_rng(0)
    noisy = BicyclicFlowFilter(fs, rng.normal(size=ft.shape).astype(np.float32), tau=0.05)(src, tgt, sv, tp, tf)
    assert noisy.mean() < 0.2
    # as the guidance's match filter
    g2 = _guidance(pair, match_filter=BicyclicFlowFilter(fs, ft, tau=0.05))
    assert 0.9 * len(sv) < len(g2.matches()[0]) <= len(sv)
