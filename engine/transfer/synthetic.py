"""Procedural meshes with known UVs for tests and benchmarks of the transfers.

All functions return numpy arrays: ``vertices`` (n, 3) float64, ``faces``
(m, 3) int64 and, where there are UVs, ``corner_uv`` (m, 3, 2) float64.
"""
from __future__ import annotations

import numpy as np


def cylinder(n_around: int = 24, n_along: int = 8, radius: float = 1.0, length: float = 4.0, angle_offset: float = 0.0):
    """Open cylinder along z with one UV seam (u = angle / 2 pi, v = z / length).

    The vertices on the seam are shared (welded) while their corners carry
    u = 0 on one side and u = 1 on the other.
    """
    i = np.arange(n_around)
    j = np.arange(n_along + 1)
    th = angle_offset + 2 * np.pi * i / n_around
    ii, jj = np.meshgrid(i, j, indexing="ij")
    verts = np.stack([radius * np.cos(th[ii]), radius * np.sin(th[ii]), length * jj / n_along], axis=-1).reshape(-1, 3)

    def vid(a, b):
        return (a % n_around) * (n_along + 1) + b

    faces, uvs = [], []
    for a in range(n_around):
        for b in range(n_along):
            quad = [(a, b), (a + 1, b), (a + 1, b + 1), (a, b + 1)]
            for tri in ((0, 1, 2), (0, 2, 3)):
                faces.append([vid(*quad[t]) for t in tri])
                uvs.append([[quad[t][0] / n_around, quad[t][1] / n_along] for t in tri])
    return verts, np.asarray(faces, np.int64), np.asarray(uvs, np.float64)


def bent_cylinder(vertices: np.ndarray, length: float, bend_angle: float) -> np.ndarray:
    """Bend a cylinder along z (0..length) into an arc of ``bend_angle`` radians in the x-z plane,
    keeping the length of its axis (an isometry of the axis)."""
    v = np.asarray(vertices, np.float64)
    if abs(bend_angle) < 1e-12:
        return v.copy()
    R = length / bend_angle  # arc radius of the axis
    phi = v[:, 2] / R
    r = R - v[:, 0]
    return np.stack([R - r * np.cos(phi), v[:, 1], r * np.sin(phi)], axis=1)


def grid(nx: int = 8, ny: int = 8, size: float = 1.0, jitter: float = 0.0, seed: int = 0):
    """A flat square (z = 0) triangulated as a grid, interior vertices optionally jittered."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, size, nx + 1), np.linspace(0, size, ny + 1), indexing="ij")
    v = np.stack([x, y, np.zeros_like(x)], axis=-1).reshape(-1, 3)
    if jitter:
        interior = (v[:, 0] > 0) & (v[:, 0] < size) & (v[:, 1] > 0) & (v[:, 1] < size)
        v[interior, :2] += rng.uniform(-jitter, jitter, (int(interior.sum()), 2)) * size / max(nx, ny)
    f = []
    for a in range(nx):
        for b in range(ny):
            p00, p10, p11, p01 = a * (ny + 1) + b, (a + 1) * (ny + 1) + b, (a + 1) * (ny + 1) + b + 1, a * (ny + 1) + b + 1
            f += [[p00, p10, p11], [p00, p11, p01]]
    return v, np.asarray(f, np.int64)


def uv_cube(n: int = 4, mirror_face: int | None = 5, shift: float = 0.0):
    """A closed cube [-1, 1]^3, each side an n x n grid and its own UV island.

    The six islands sit in a 3 x 2 atlas; side ``mirror_face`` is laid out
    mirrored (a common trick). ``shift`` moves the grid lines of every side by
    that fraction of a cell (a different triangulation of the same cube).
    """
    verts: list = []
    index: dict = {}
    faces, uvs = [], []
    t = np.clip(np.linspace(-1, 1, n + 1) + (shift * 2.0 / n) * (np.arange(n + 1) % n != 0), -1, 1)
    sides = [  # (axis of the normal, sign, in-plane axes u, v)
        (0, 1, 1, 2), (0, -1, 2, 1), (1, 1, 2, 0), (1, -1, 0, 2), (2, 1, 0, 1), (2, -1, 1, 0)
    ]
    for s, (ax, sign, au, av) in enumerate(sides):
        col, row = s % 3, s // 3
        for a in range(n):
            for b in range(n):
                cell = [(a, b), (a + 1, b), (a + 1, b + 1), (a, b + 1)]
                ids, cuv = [], []
                for (ia, ib) in cell:
                    p = np.zeros(3)
                    p[ax] = sign
                    p[au] = t[ia]
                    p[av] = t[ib]
                    key = tuple(np.round(p, 9))
                    if key not in index:
                        index[key] = len(verts)
                        verts.append(p)
                    ids.append(index[key])
                    uu, vv = (t[ia] + 1) / 2, (t[ib] + 1) / 2
                    if s == mirror_face:
                        uu = 1 - uu
                    cuv.append([(col + 0.05 + 0.9 * uu) / 3, (row + 0.05 + 0.9 * vv) / 2])
                for tri in ((0, 1, 2), (0, 2, 3)):
                    faces.append([ids[k] for k in tri])
                    uvs.append([cuv[k] for k in tri])
    v = np.asarray(verts)
    f = np.asarray(faces, np.int64)
    # orient outwards
    c = v[f].mean(axis=1)
    nrm = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    flip = (nrm * c).sum(axis=1) < 0
    f[flip] = f[flip][:, [0, 2, 1]]
    uv = np.asarray(uvs)
    uv[flip] = uv[flip][:, [0, 2, 1]]
    return v, f, uv


def identity_map(faces: np.ndarray, n_vertices: int):
    """The map of a mesh onto itself: every vertex as a corner of one of its triangles.

    Returns face (n,) int64 and bary (n, 3) float64 (one-hot).
    """
    f = np.asarray(faces, np.int64)
    face = np.zeros(n_vertices, np.int64)
    bary = np.zeros((n_vertices, 3))
    face[f.ravel()] = np.repeat(np.arange(len(f)), 3)  # the last triangle listed wins
    bary[np.arange(n_vertices), np.argmax(f[face] == np.arange(n_vertices)[:, None], axis=1)] = 1.0
    return face, bary
