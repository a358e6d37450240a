"""The engine's CUDA paths against its CPU ones (skipped without a CUDA device: they run on the
GPU machine, scripts/gpu_check.sh): the Poisson solve and its gradient, a registration, whole
matches geometric and semantic (tiny models of the real architectures)."""
import numpy as np
import pytest
import torch
import trimesh

from engine.geometry.poisson import PoissonSolver
from engine.mesh import Mesh, prepare_mesh
from engine.register.njf import RegistrationConfig, register

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _body(sub=3):
    m = trimesh.creation.icosphere(sub)
    return prepare_mesh(np.asarray(m.vertices) * [1.0, 1.6, 0.7], m.faces, "blob").mesh


def test_poisson_solve_on_cuda_matches_the_cpu_and_its_gradient_is_exact():
    mesh = _body(3)
    cpu = PoissonSolver(mesh.vertices, mesh.faces, device=torch.device("cpu"))
    gpu = PoissonSolver(mesh.vertices, mesh.faces, device=torch.device("cuda"))
    gen = torch.Generator().manual_seed(0)
    J = cpu.source_jacobians + 0.05 * torch.randn(cpu.source_jacobians.shape, generator=gen, dtype=torch.float64)
    t = torch.randn(cpu.n_components, 3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        x_cpu = cpu.solve(J, t)
        x_gpu = gpu.solve(J.cuda(), t.cuda())
    assert x_gpu.device.type == "cuda"
    torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1e-9, rtol=1e-9)
    small = trimesh.creation.icosphere(subdivisions=0)
    solver = PoissonSolver(np.asarray(small.vertices) * [1.0, 0.8, 0.6], small.faces, device=torch.device("cuda"))
    Js = (solver.source_jacobians + 0.1 * torch.randn(solver.source_jacobians.shape, generator=gen, dtype=torch.float64)
          .to("cuda")).requires_grad_(True)
    ts = torch.zeros(solver.n_components, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda j, tt: solver.solve(j, tt), (Js, ts), eps=1e-6, atol=1e-6)


def test_a_registration_on_cuda_follows_the_cpu_one():
    src = _body(3)
    tgt = Mesh(src.vertices * np.array([1.25, 0.85, 1.0]), src.faces)
    cfg = RegistrationConfig(steps=60, lr=0.02)
    a = register(src, tgt, None, cfg, device="cpu").vertices
    b = register(src, tgt, None, cfg, device="cuda").vertices
    # the same float64 arithmetic in another order: the runs stay within a hair of each other
    scale = float(np.ptp(a, axis=0).max())
    assert np.abs(a - b).max() < 1e-4 * scale


def test_a_geometric_match_on_cuda_lands_where_the_cpu_one_does(small_pair):
    import engine

    pair = ((small_pair.source_vertices, small_pair.source_faces), (small_pair.target_vertices, small_pair.target_faces))
    cpu = engine.match(*pair, features="geometric", quality="fast", device="cpu", keypoints="off")
    gpu = engine.match(*pair, features="geometric", quality="fast", device="cuda", keypoints="off")
    assert gpu.meta["device"].startswith("cuda")
    tv, tf = small_pair.target_vertices, small_pair.target_faces
    d = np.linalg.norm(cpu.src_points_on_target(tv, tf) - gpu.src_points_on_target(tv, tf), axis=1)
    assert np.median(d) < 1e-3 * float(np.ptp(tv, axis=0).max())


def test_a_semantic_match_on_cuda_runs_the_tiny_models_end_to_end(small_pair, tmp_path):
    import engine
    from engine.features.testing import save_tiny_dino, save_tiny_sd

    cfg = {"dino_model": save_tiny_dino(str(tmp_path / "dino")), "sd_model": save_tiny_sd(str(tmp_path / "sd")),
           "semantic": {"views": 4, "render_resolution": 64, "dino_image_size": 56, "sd_image_size": 64}}
    r = engine.match((small_pair.source_vertices, small_pair.source_faces),
                     (small_pair.target_vertices, small_pair.target_faces),
                     features="dino+sd", quality="fast", device="cuda", config=cfg, keypoints="off")
    assert r.meta["features"] == "dino+sd" and r.meta["device"].startswith("cuda")
    assert np.isfinite(r.fitted_vertices).all() and r.fitted_vertices.shape == small_pair.source_vertices.shape
