"""Filtering candidate matches: cycle consistency and bicyclic consistency (3D-SC)."""
from __future__ import annotations

import numpy as np


def cycle_consistent(s2t: np.ndarray, t2s: np.ndarray, source_points: np.ndarray, tau: float) -> np.ndarray:
    """(ns,) bool: source vertex s survives if t2s[s2t[s]] lands within ``tau`` of s.

    s2t : (ns,) int source -> target vertex; t2s : (nt,) int target -> source vertex
    source_points : (ns, 3) positions used to measure the round trip (rest or deformed source)
    """
    back = t2s[s2t]
    return np.linalg.norm(source_points[back] - source_points, axis=1) <= tau


def bicyclic_consistent(s2t: np.ndarray, t2s: np.ndarray, source_points: np.ndarray, target_points: np.ndarray,
                        tau_s: float, tau_t: float) -> np.ndarray:
    """(ns,) bool: both round trips (source->target->source and target->source->target at the image) close.

    A match s -> t = s2t[s] is kept when t2s[t] is within ``tau_s`` of s on the source and
    s2t[t2s[t]] is within ``tau_t`` of t on the target (3D-SC's bicyclic filter; distances are
    Euclidean on the surfaces, which agrees with geodesic distance at these small radii).
    """
    t = s2t
    ok_s = np.linalg.norm(source_points[t2s[t]] - source_points, axis=1) <= tau_s
    ok_t = np.linalg.norm(target_points[s2t[t2s[t]]] - target_points[t], axis=1) <= tau_t
    return ok_s & ok_t
