"""Ground-truth body parts for the benchmark sets, derived from the correspondence ground truth.

A reference shape of each set is cut into named parts (head, arms, legs,
tail, torso) from its geodesic extremities: every extremity (a foot, a hand,
the head, the tail tip) owns the vertices geodesically closer to it than a
fraction of its distance to the body centre; the rest is the torso. Left and
right are told apart by the side of the body's lateral axis. Each ground-truth
row (template point ``k`` of the ``.vts`` files) takes the label of the
reference vertex it corresponds to, and every other shape of the set takes the
labels of its ``.vts`` vertices, spread to the remaining vertices by graph
distance. The parts are therefore consistent across shapes up to the accuracy
of the ground truth, which is what "the matched vertex lies in the right part"
needs.

>>> parts = SetParts.load("/path/to/data/faust5k")
>>> labels = parts.vertex_labels("tr_reg_001")   # (n,) int64 into parts.names
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from ..arrays import unique_rows
from ..errors import InputError
from ..mesh import Mesh, PreparedMesh, load_mesh

# reference shape, number of extremities, and the part-radius fraction of each set
SET_SPECS = {
    "faust5k": {"reference": "tr_reg_000", "extremities": 5, "kind": "human"},
    "smal_r": {"reference": "cougar", "extremities": 6, "kind": "quadruped"},
    "tosca_iso": {"reference": "wolf0", "extremities": 6, "kind": "quadruped"},
}


def _geodesic_solver(mesh: Mesh):
    import potpourri3d as pp3d

    return pp3d.MeshHeatMethodDistanceSolver(mesh.vertices, mesh.faces)


def _extremities(mesh: Mesh, count: int, solver) -> tuple[np.ndarray, int]:
    """Geodesic extremities (farthest-point sampling seeded at the shape's far end) and a centre vertex."""
    centroid = (mesh.vertices * mesh.vertex_areas[:, None]).sum(0) / mesh.vertex_areas.sum()
    d_c = solver.compute_distance(int(np.argmin(np.linalg.norm(mesh.vertices - centroid, axis=1))))
    # the body centre: the vertex minimising the largest geodesic distance to the sampled extremities
    picks = [int(np.argmax(d_c))]
    dmin = solver.compute_distance(picks[0])
    fields = [dmin]
    while len(picks) < count:
        nxt = int(np.argmax(dmin))
        picks.append(nxt)
        d = solver.compute_distance(nxt)
        fields.append(d)
        dmin = np.minimum(dmin, d)
    ecc = np.max(np.stack(fields), axis=0)
    centre = int(np.argmin(ecc))
    return np.asarray(picks, np.int64), centre


def reference_labels(mesh: Mesh, kind: str, count: int, radius: float = 0.55) -> tuple[np.ndarray, list[str]]:
    """Label the vertices of a reference shape into named parts.

    Returns
    -------
    labels : (n,) int64 index into ``names``
    names : list of part names (``"torso"`` first)
    """
    solver = _geodesic_solver(mesh)
    ext, centre = _extremities(mesh, count, solver)
    d_centre = solver.compute_distance(centre)
    fields = np.stack([solver.compute_distance(int(e)) for e in ext])  # (count, n)
    owner = np.argmin(fields, axis=0)
    own_d = fields[owner, np.arange(mesh.n_vertices)]
    v = mesh.vertices
    pos = v[ext] - v[centre]
    names_of_ext = _name_extremities(kind, mesh, ext, centre, fields, pos)
    # a quadruped's head sits on a long neck: a shorter radius keeps the shoulders in the torso
    frac = np.array([radius * (0.75 if (kind == "quadruped" and nm == "head") else 1.0) for nm in names_of_ext])
    inside = own_d < (frac * d_centre[ext])[owner]
    names = ["torso"] + sorted(set(names_of_ext))
    labels = np.zeros(mesh.n_vertices, np.int64)
    for i, nm in enumerate(names_of_ext):
        labels[(owner == i) & inside] = names.index(nm)
    return labels, names


def _name_extremities(kind, mesh, ext, centre, fields, pos) -> list[str]:
    count = len(ext)
    if kind == "human":
        # head: the extremity farthest along the up axis (y); feet: the two lowest; hands: the rest
        up = pos[:, 1]
        order = np.argsort(-up)
        names = [""] * count
        names[order[0]] = "head"
        for i in order[-2:]:
            names[i] = "leg_left" if pos[i, 0] > 0 else "leg_right"
        for i in order[1:-2]:
            names[i] = "arm_left" if pos[i, 0] > 0 else "arm_right"
        return names
    # quadruped: the four feet are the extremities whose pairwise distances form two close pairs;
    # simpler and robust for a standing reference: feet are the 4 extremities farthest along the
    # leg direction (the principal axis of the extremity offsets orthogonal to the body axis).
    v = mesh.vertices - mesh.vertices[centre]
    cov = (v * mesh.vertex_areas[:, None]).T @ v
    w, axes = np.linalg.eigh(cov)
    body_axis = axes[:, 2]
    along = pos @ body_axis
    # head and tail are the two extremities most extreme along the body axis, one on each side
    tail_head = [int(np.argmax(along)), int(np.argmin(along))]
    feet = [i for i in range(count) if i not in tail_head][:4]
    # the tail is the thinner end: smaller area within a short geodesic radius of the tip
    areas = []
    for i in tail_head:
        r = 0.15 * np.max(fields[i])
        areas.append(mesh.vertex_areas[fields[i] < r].sum())
    tail, head = (tail_head[0], tail_head[1]) if areas[0] < areas[1] else (tail_head[1], tail_head[0])
    names = [""] * count
    names[tail], names[head] = "tail", "head"
    head_dir = np.sign(along[head]) * body_axis
    up = -np.mean(pos[feet], axis=0)
    up -= (up @ body_axis) * body_axis
    lateral = np.cross(head_dir, up / (np.linalg.norm(up) + 1e-12))
    # front feet: the two geodesically closer to the head than to the tail
    feet.sort(key=lambda i: fields[head][ext[i]] - fields[tail][ext[i]])
    for pair, fb in ((feet[:2], "front"), (feet[2:], "back")):
        pair = sorted(pair, key=lambda i: pos[i] @ lateral)
        names[pair[0]], names[pair[-1]] = f"leg_{fb}_right", f"leg_{fb}_left"
    return names


def _read_vts(path: str) -> np.ndarray:
    from .datasets import read_vts

    return read_vts(path)


def spread_labels(mesh: Mesh, seeds: np.ndarray, seed_labels: np.ndarray) -> np.ndarray:
    """Label every vertex with the label of its graph-nearest seed vertex.

    seeds : (k,) int64 vertex indices; seed_labels : (k,) int64
    Returns (n,) int64.
    """
    _, _, src = dijkstra(mesh.adjacency, directed=False, indices=np.unique(seeds), min_only=True, return_predecessors=True)
    label_of = np.full(mesh.n_vertices, -1, np.int64)
    label_of[seeds] = seed_labels
    out = label_of[src]
    out[src < 0] = 0
    return out


@dataclass
class SetParts:
    """Ground-truth parts of one benchmark set (see the module docstring)."""

    folder: str
    names: list[str]
    row_labels: np.ndarray  # (k,) int64 label of every ground-truth row
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, folder: str, set_name: str | None = None) -> "SetParts":
        folder = os.fspath(folder)
        set_name = set_name or os.path.basename(os.path.normpath(folder))
        if set_name not in SET_SPECS:
            raise InputError(f"{set_name}: no part definition for this set; known sets: {', '.join(SET_SPECS)}")
        spec = SET_SPECS[set_name]
        ref = load_mesh(os.path.join(folder, spec["reference"] + ".off"))
        labels, names = reference_labels(ref.mesh, spec["kind"], spec["extremities"])
        rows = ref.orig_to_clean[_read_vts(os.path.join(folder, "corres", spec["reference"] + ".vts"))]
        obj = cls(folder=folder, names=names, row_labels=labels[rows])
        obj._cache[spec["reference"]] = (ref, labels)
        return obj

    def mesh_and_labels(self, shape: str) -> tuple[PreparedMesh, np.ndarray]:
        """The prepared mesh of ``shape`` and its (n,) int64 part labels (clean vertex order)."""
        if shape not in self._cache:
            pm = load_mesh(os.path.join(self.folder, shape + ".off"))
            rows = pm.orig_to_clean[_read_vts(os.path.join(self.folder, "corres", shape + ".vts"))]
            # a vertex hit by several rows keeps the majority label
            self._cache[shape] = (pm, spread_labels(pm.mesh, *_majority(rows, self.row_labels)))
        return self._cache[shape]

    def vertex_labels(self, shape: str) -> np.ndarray:
        return self.mesh_and_labels(shape)[1]


def _majority(vertices: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = np.stack([vertices, labels], 1)
    pairs, counts = unique_rows(key, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
    return pairs[first, 0], pairs[first, 1]
