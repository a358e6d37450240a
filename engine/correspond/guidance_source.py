"""The pluggable correspondence term of the registration loss.

A guidance source is what tells the registration where source points should
go. The geometric one (``engine.correspond.vertex_nn``) matches per-vertex
descriptors; the semantic ones (``engine.correspond.semantic_flow``) use
rendered 2D features. The registration loop only talks to this interface.

All meshes handed to a source are in the common normalised frame, with the
source already rigidly aligned to the target.
"""
from __future__ import annotations

import numpy as np
import torch

from ..mesh import Mesh
from ..progress import Progress


class GuidanceSource:
    """Base class. Subclasses implement :meth:`prepare`, :meth:`update` and :meth:`loss`."""

    name = "guidance"

    def prepare(self, source: Mesh, target: Mesh, progress: Progress | None = None) -> None:
        """Compute everything that does not depend on the current deformation (features, caches)."""
        raise NotImplementedError

    def update(self, deformed: np.ndarray, step: int, fraction: float) -> None:
        """Recompute the guidance for the current deformed source.

        deformed : (ns, 3) float64 current source vertices
        step : registration step; fraction : step / total steps (drives shrinking windows)
        """
        raise NotImplementedError

    def loss(self, deformed: torch.Tensor) -> torch.Tensor:
        """Scalar loss for the current deformed source vertices (ns, 3), differentiable."""
        raise NotImplementedError

    def matches(self):
        """Current (source_vertex (k,) int64, target_point (k, 3) float64, weight (k,) float64), or None."""
        return None
