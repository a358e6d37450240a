"""Shared fixtures: small procedural meshes (no downloads) and the gpu auto-skip."""
from __future__ import annotations

import os

import numpy as np
import pytest

# keep the 2-core CI box responsive: one BLAS / torch thread per test process
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped when torch sees no CUDA device."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def write_obj(path, vertices, faces) -> str:
    """Write a plain OBJ (polygons may be lists of any length); returns the path as str."""
    with open(path, "w", encoding="utf-8") as fh:
        for v in np.asarray(vertices, np.float64):
            fh.write(f"v {v[0]!r} {v[1]!r} {v[2]!r}\n")
        for f in faces:
            fh.write("f " + " ".join(str(int(i) + 1) for i in f) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def small_pair():
    """A ~640 / ~700-vertex creature pair with ground truth (engine.samples), target re-posed and rotated."""
    from engine.samples import make_pair

    return make_pair(source_subdivisions=3, target_vertices=700)


@pytest.fixture(scope="session")
def small_pair_files(tmp_path_factory, small_pair):
    """(source.obj, target.obj) of :func:`small_pair`."""
    d = tmp_path_factory.mktemp("pair")
    src = write_obj(d / "source.obj", small_pair.source_vertices, small_pair.source_faces)
    tgt = write_obj(d / "target.obj", small_pair.target_vertices, small_pair.target_faces)
    return src, tgt
