"""engine.optim.Adam: the plain optimiser the loops use instead of torch.optim.Adam."""
from __future__ import annotations

import subprocess
import sys

import torch

from engine.optim import Adam


def test_plain_adam_follows_torch_adam_step_for_step():
    torch.manual_seed(0)
    target = torch.randn(7, 3, dtype=torch.float64)
    a = torch.zeros(7, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(7, 3, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(2, dtype=torch.float64, requires_grad=True)  # a parameter without gradient is left alone
    mine, ref = Adam([a, c], lr=0.05), torch.optim.Adam([b], lr=0.05)
    for _ in range(50):
        for p, opt in ((a, mine), (b, ref)):
            opt.zero_grad(set_to_none=True)
            (((p - target) ** 2).sum() + (p ** 4).sum()).backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(c) == 0


def test_the_registration_does_not_import_dynamo():
    code = ("import sys, numpy as np, trimesh\n"
            "from engine.mesh import Mesh\n"
            "from engine.register.njf import RegistrationConfig, register\n"
            "s = trimesh.creation.icosphere(subdivisions=2)\n"
            "r = register(Mesh(s.vertices, s.faces), Mesh(s.vertices * 1.1, s.faces), None, RegistrationConfig(steps=3))\n"
            "assert np.isfinite(r.vertices).all()\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_set_threads_caps_torch_and_rejects_bad_values():
    import pytest

    from engine.errors import InputError
    from engine.threads import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(None) == 1  # None leaves the setting as it is
        for bad in (0, -2, 1.5, "2", True):
            with pytest.raises(InputError, match="threads"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_importing_engine_first_makes_idle_openmp_workers_sleep():
    out = subprocess.run([sys.executable, "-c", "import os, engine; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         capture_output=True, text=True, timeout=120, env={k: v for k, v in __import__("os").environ.items()
                                                                             if k != "OMP_WAIT_POLICY"})
    assert out.stdout.strip() == "PASSIVE"


def test_single_thread_nests_and_restores_the_count():
    from engine.threads import single_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        from threadpoolctl import threadpool_info

        blas_before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        with single_thread():
            assert torch.get_num_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
            with single_thread():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == blas_before
        try:
            with single_thread():
                raise KeyError("stop")
        except KeyError:
            pass
        assert torch.get_num_threads() == 2  # restored on the way out of an error (a cancel) too
        with single_thread(enabled=False):
            assert torch.get_num_threads() == 2
        with single_thread(blas=False):  # a helper thread's: its torch count only, the BLAS limit is the process's
            assert torch.get_num_threads() == 1
            assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == blas_before
    finally:
        torch.set_num_threads(before)
