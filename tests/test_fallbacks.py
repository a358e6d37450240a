"""Fallbacks that change how a match computes are recorded in its meta, one line each: the
Poisson solve on scipy's LU instead of cholespy, graph distances instead of the heat method."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import engine
from engine.geometry.geodesic import GeodesicSolver
from engine.geometry.poisson import PoissonSolver
from engine.mesh import Mesh
from engine.samples import make_pair


@pytest.fixture(scope="module")
def pair():
    p = make_pair(source_subdivisions=2, target_vertices=600)
    return (p.source_vertices, p.source_faces), (p.target_vertices, p.target_faces)


def _broken(name: str, attribute: str, monkeypatch):
    """A stand-in module whose ``attribute`` raises when called (a broken native build)."""
    def fail(*args, **kwargs):
        raise RuntimeError(f"{name} is broken here")

    stand_in = types.ModuleType(name)
    setattr(stand_in, attribute, fail)
    monkeypatch.setitem(sys.modules, name, stand_in)


def test_a_match_without_its_usual_solvers_says_which_and_why(pair, monkeypatch):
    plain = engine.match(*pair, quality="fast")
    assert plain.meta["fallbacks"] == []
    _broken("cholespy", "CholeskySolverD", monkeypatch)
    sys.modules["cholespy"].MatrixType = types.SimpleNamespace(COO=0)
    _broken("potpourri3d", "MeshHeatMethodDistanceSolver", monkeypatch)
    got = engine.match(*pair, quality="fast")
    fallbacks = got.meta["fallbacks"]
    assert any(f.startswith("poisson solve: scipy sparse LU") and "cholespy is broken here" in f for f in fallbacks)
    assert any("geodesics: graph distances" in f and "potpourri3d is broken here" in f for f in fallbacks)
    assert all("\n" not in f for f in fallbacks)
    # and the match still gives its whole result
    assert got.fitted_vertices.shape == plain.fitted_vertices.shape


def test_the_solvers_say_what_they_run_on(monkeypatch):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    assert PoissonSolver(v, f).backend == "cholespy" and PoissonSolver(v, f).fallback_reason is None
    two = Mesh(np.concatenate([v, v + 5]), np.concatenate([f, f + 4]))
    geo = GeodesicSolver(two)
    assert geo.method == "dijkstra" and "one manifold component" in geo.fallback_reason
    assert GeodesicSolver(Mesh(v, f)).fallback_reason is None
