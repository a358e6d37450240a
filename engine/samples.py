"""Procedural sample meshes with known ground-truth correspondence (no downloads).

A "creature" is a map from the unit sphere to R^3: a stretched body with a
head, a tail, four legs, one horn on the left side only (so the shape has no
mirror symmetry) grown out of the sphere as radial bumps. Two meshes of it are
built from different tessellations of the sphere:

- the source from a subdivided icosahedron,
- the target from a convex hull of jittered Fibonacci points (different vertex
  count and connectivity), then re-posed (legs bent, tail raised, head turned,
  body twisted, limbs rescaled), rotated, scaled and moved.

Since every vertex of both meshes comes from a known sphere point, the true
target point of every source vertex is known exactly (up to the target's
piecewise-linear interpolation): :attr:`SamplePair.gt_src_to_tgt`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation


@dataclass
class SamplePair:
    """A source / target pair with ground truth.

    Attributes
    ----------
    source_vertices : (ns, 3) float64
    source_faces : (ms, 3) int64
    target_vertices : (nt, 3) float64
    target_faces : (mt, 3) int64
    gt_src_to_tgt : (ns, 3) float64  true point on the target of every source vertex
    """

    source_vertices: np.ndarray
    source_faces: np.ndarray
    target_vertices: np.ndarray
    target_faces: np.ndarray
    gt_src_to_tgt: np.ndarray


# limbs: (name, direction on the sphere, bump height, angular width)
_LIMBS = (
    ("head", (1.0, 0.0, 0.35), 0.50, 0.45),
    ("tail", (-1.0, 0.0, 0.25), 0.75, 0.28),
    ("leg_fl", (0.55, 0.5, -1.0), 0.75, 0.30),
    ("leg_fr", (0.55, -0.5, -1.0), 0.75, 0.30),
    ("leg_bl", (-0.5, 0.55, -1.0), 0.70, 0.32),
    ("leg_br", (-0.5, -0.55, -1.0), 0.70, 0.32),
    ("horn", (0.45, 0.55, 0.8), 0.50, 0.24),
)


# the target's limb lengths relative to the source (head, tail, four legs, horn)
TARGET_LIMB_SCALE = np.array([1.0, 0.8, 1.15, 1.15, 1.1, 1.1, 1.2])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _limb_weights(q: np.ndarray) -> np.ndarray:
    """(n, L) smooth membership of sphere points q (n, 3) in each limb bump."""
    w = []
    for _, d, _, width in _LIMBS:
        ang = np.arccos(np.clip(q @ _unit(d), -1.0, 1.0))
        w.append(np.exp(-((ang / width) ** 2)))
    return np.stack(w, axis=1)


def creature(q: np.ndarray, limb_scale: np.ndarray | None = None) -> np.ndarray:
    """Rest-pose creature surface point (n, 3) float64 for unit-sphere points q (n, 3).

    ``limb_scale`` (L,) multiplies each limb's length (1 = rest).
    """
    q = _unit(q)
    w = _limb_weights(q)
    heights = np.array([h for _, _, h, _ in _LIMBS])
    if limb_scale is not None:
        heights = heights * np.asarray(limb_scale, np.float64)
    r = 1.0 + w @ heights
    body = np.array([1.6, 0.8, 0.7])  # elongated, flattened body
    return (q * r[:, None]) * body


def _rotate_about(p: np.ndarray, center: np.ndarray, axis, angle_deg: float) -> np.ndarray:
    R = Rotation.from_rotvec(np.deg2rad(angle_deg) * _unit(axis)).as_matrix()
    return (p - center) @ R.T + center


def repose(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Re-pose rest points p (n, 3) of sphere points q (n, 3): bend limbs (linear blend), twist the body."""
    w = _limb_weights(_unit(q))
    out = p.copy()
    body = np.array([1.6, 0.8, 0.7])
    # (limb index, joint axis, angle in degrees): legs swing, tail rises, head turns, horn tilts
    poses = ((0, (0, 0, 1), 28.0), (1, (0, 1, 0), -40.0), (2, (0, 1, 0), -30.0), (3, (0, 1, 0), 22.0),
             (4, (0, 1, 0), 18.0), (5, (0, 1, 0), -25.0), (6, (1, 0, 0), -20.0))
    for li, axis, angle in poses:
        root = _unit(_LIMBS[li][1]) * body  # where the limb leaves the body
        wi = np.clip(1.6 * w[:, li], 0.0, 1.0)[:, None]
        out = (1.0 - wi) * out + wi * _rotate_about(out, root, axis, angle)
    # body twist about the long axis (angle grows along x) and a gentle bend of the spine
    t = np.deg2rad(12.0) * out[:, 0]
    c, s = np.cos(t), np.sin(t)
    y, z = out[:, 1].copy(), out[:, 2].copy()
    out[:, 1], out[:, 2] = c * y - s * z, s * y + c * z
    out[:, 2] += 0.12 * out[:, 0] ** 2
    return out


def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices (n, 3) float64, faces (m, 3) int64 (outward)."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(s.vertices, np.float64), np.asarray(s.faces, np.int64)


def hull_sphere(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere triangulated as the convex hull of n jittered Fibonacci points (outward faces)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n) + 0.5
    phi = np.arccos(1.0 - 2.0 * i / n)
    theta = np.pi * (1.0 + 5.0**0.5) * i
    q = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)
    q = _unit(q + rng.normal(scale=0.25 / np.sqrt(n), size=q.shape))
    q = q @ Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix().T  # no shared poles with the icosphere
    faces = ConvexHull(q).simplices.astype(np.int64)
    v = q[faces]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    flip = np.einsum("ij,ij->i", normal, v.mean(axis=1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    return q, faces


def make_pair(source_subdivisions: int = 4, target_vertices: int = 3000, rotation_deg: float = 70.0,
              scale: float = 1.7, seed: int = 0) -> SamplePair:
    """The demo pair (defaults: 2562 source vertices, 3000 target vertices).

    The target is the re-posed creature with longer legs and a shorter tail,
    rotated by ``rotation_deg`` about a tilted axis, scaled by ``scale`` and moved.
    """
    from .geometry.closest import SurfaceQuery

    qs, fs = icosphere(source_subdivisions)
    qt, ft = hull_sphere(target_vertices, seed=seed)
    vs = creature(qs)
    vt_pose = repose(qt, creature(qt, TARGET_LIMB_SCALE))
    R = Rotation.from_rotvec(np.deg2rad(rotation_deg) * _unit([0.3, 1.0, 0.4])).as_matrix()
    shift = np.array([0.4, -1.2, 2.0])
    vt = scale * vt_pose @ R.T + shift
    # ground truth: each source vertex's sphere point, located on the target's sphere tessellation
    face, bary, _, _ = SurfaceQuery(qt, ft).closest(qs)
    gt = np.einsum("nk,nkc->nc", bary, vt[ft[face]])
    return SamplePair(vs, fs, vt, ft, gt)


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Plain OBJ (vertices + triangles), written atomically."""
    from .fileio import atomic_path

    with atomic_path(path, ".obj") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("# StableWrap sample mesh\n")
        np.savetxt(fh, vertices, fmt="v %.6f %.6f %.6f")
        np.savetxt(fh, np.asarray(faces, np.int64) + 1, fmt="f %d %d %d")


# ----------------------------------------------------------------------------- a humanoid from primitives

# joints of a 1.75 m figure standing at the origin, Y up, facing +Z (its left side towards +X)
_JOINTS = {
    "head": (0.0, 1.62, 0.0), "neck": (0.0, 1.47, 0.0), "chest": (0.0, 1.28, 0.0), "pelvis": (0.0, 0.98, 0.0),
    "l_shoulder": (0.19, 1.42, 0.0), "l_elbow": (0.21, 1.14, 0.0), "l_wrist": (0.23, 0.88, 0.02),
    "l_hip": (0.10, 0.92, 0.0), "l_knee": (0.11, 0.50, 0.02), "l_ankle": (0.11, 0.08, 0.0),
}


def _segment(a, b, radius: float, count=(8, 12)):
    """A capsule from point a to point b (trimesh), radius in metres."""
    import trimesh

    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    length = float(np.linalg.norm(d))
    cap = trimesh.creation.capsule(height=length, radius=radius, count=list(count))
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, d / length)
    angle = float(np.arccos(np.clip(d @ z / length, -1, 1)))
    m = trimesh.transformations.rotation_matrix(angle, axis if np.linalg.norm(axis) > 1e-9 else [1, 0, 0])
    m[:3, 3] = (a + b) / 2  # trimesh builds the capsule centred on the origin
    cap.apply_transform(m)
    return cap


def humanoid(left_arm_raise_deg: float = 0.0, right_knee_bend_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A clay figure built from capsules and spheres (head with a nose, torso, arms, legs, feet
    pointing forward), in separate, overlapping parts like many game characters.

    left_arm_raise_deg : lift the figure's left arm sideways (0 = hanging, 90 = horizontal)
    right_knee_bend_deg : bend the right leg forward at the hip and back at the knee
    returns vertices (n, 3) float64 in metres (Y up, facing +Z, left towards +X), faces (m, 3) int64
    """
    import trimesh

    j = {k: np.array(v) for k, v in _JOINTS.items()}
    for side, sx in (("r", -1.0), ("l", 1.0)):
        for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
            p = j["l_" + name].copy()
            p[0] *= sx
            j[f"{side}_{name}"] = p
    if left_arm_raise_deg:
        rot = trimesh.transformations.rotation_matrix(np.radians(left_arm_raise_deg), [0, 0, 1], j["l_shoulder"])
        for name in ("l_elbow", "l_wrist"):
            j[name] = trimesh.transform_points(j[name][None], rot)[0]
    if right_knee_bend_deg:
        hip = trimesh.transformations.rotation_matrix(-np.radians(right_knee_bend_deg), [1, 0, 0], j["r_hip"])
        for name in ("r_knee", "r_ankle"):
            j[name] = trimesh.transform_points(j[name][None], hip)[0]
        knee = trimesh.transformations.rotation_matrix(np.radians(2 * right_knee_bend_deg), [1, 0, 0], j["r_knee"])
        j["r_ankle"] = trimesh.transform_points(j["r_ankle"][None], knee)[0]
    parts = []
    head = trimesh.creation.icosphere(subdivisions=3, radius=0.11)
    head.apply_scale([0.85, 1.0, 0.95])
    head.apply_translation(j["head"])
    parts.append(head)
    nose = trimesh.creation.icosphere(subdivisions=2, radius=0.025)
    nose.apply_translation(j["head"] + [0.0, -0.01, 0.1])
    parts.append(nose)
    torso = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    torso.apply_scale([0.17, 0.28, 0.11])
    torso.apply_translation(j["chest"] - [0.0, 0.05, 0.0])
    parts.append(torso)
    pelvis = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    pelvis.apply_scale([0.18, 0.12, 0.12])
    pelvis.apply_translation(j["pelvis"])
    parts.append(pelvis)
    parts.append(_segment(j["neck"] - [0, 0.08, 0], j["neck"] + [0, 0.06, 0], 0.05))
    for s in ("l", "r"):
        parts.append(_segment(j[f"{s}_shoulder"], j[f"{s}_elbow"], 0.045))
        parts.append(_segment(j[f"{s}_elbow"], j[f"{s}_wrist"], 0.038))
        hand_dir = (j[f"{s}_wrist"] - j[f"{s}_elbow"]) / np.linalg.norm(j[f"{s}_wrist"] - j[f"{s}_elbow"])
        parts.append(_segment(j[f"{s}_wrist"], j[f"{s}_wrist"] + 0.12 * hand_dir, 0.03))
        parts.append(_segment(j[f"{s}_hip"], j[f"{s}_knee"], 0.07))
        parts.append(_segment(j[f"{s}_knee"], j[f"{s}_ankle"], 0.055))
        parts.append(_segment(j[f"{s}_ankle"] - [0, 0.03, 0.04], j[f"{s}_ankle"] + [0, -0.05, 0.17], 0.04))
    mesh = trimesh.util.concatenate(parts)
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
