"""The stand-in matcher of tests/test_batch.py, in a module of its own so that the spawned batch
children import only numpy, scipy and the engine's mesh reader (not pytest or trimesh)."""
from __future__ import annotations

import os
import time

import numpy as np

from engine.correspondence import Correspondence


def fake_match(source, target, **options):
    """Nearest target vertex for every source vertex; crashes / hangs on request (by file name)."""
    from engine.mesh import load_mesh_file

    name = os.path.basename(source)
    if name.startswith("crash"):
        os._exit(9)
    if name.startswith("hang"):
        time.sleep(60)
    vs, fs, _ = load_mesh_file(source)
    vt, ft, _ = load_mesh_file(target)
    fs, ft = np.asarray(fs), np.asarray(ft)
    from scipy.spatial import cKDTree

    nearest = cKDTree(vt).query(vs)[1]
    face_of = np.zeros(len(vt), np.int64)
    face_of[ft[:, 0]] = np.arange(len(ft))
    face_of[ft[:, 1]] = np.arange(len(ft))
    face_of[ft[:, 2]] = np.arange(len(ft))
    f = face_of[nearest]
    bary = (ft[f] == nearest[:, None]).astype(np.float32)
    back = cKDTree(vs).query(vt)[1]
    return Correspondence(f.astype(np.int32), bary, np.zeros(len(vt), np.int32), np.tile(np.float32([1, 0, 0]), (len(vt), 1)),
                          vt[nearest].astype(np.float32), np.ones(len(vs), np.float32),
                          {"fit_score": 0.5, "verdict": {"verdict": "good"}, "back": int(back[0])})
