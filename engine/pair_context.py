"""What a match computes about its two meshes, once: the pair context every stage reads.

``MeshContext`` holds one prepared mesh and its derived data, each computed on
first use and kept (in the style of trimesh's cached properties): the main
connected part, its Laplacian eigenbasis, HKS / WKS / part descriptors, a
geodesic solver, a closest-point query and a k-d tree. ``PairContext`` holds
the two, the settings, the device, the progress, the caller's landmarks and
exclusion, and the body keypoints, so that the stages (align, features,
guidance, register, maps) take one argument and never recompute a basis or a
solver.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .arrays import unit_rows
from .config import MatchConfig
from .geometry.main_part import SpectralPart
from .mesh import Mesh
from .progress import Progress


# a mesh this large is worth a notice that it was matched on a decimated working copy (smaller
# ones are too, routinely: meta "working_vertices" says so)
LARGE_MESH_VERTICES = 50_000


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds now; CPU counts every thread of the process."""
    return time.perf_counter(), time.process_time()


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far (MiB, rounded to 0.1); None where the platform
    gives no figure (``engine.memory.peak_rss_bytes``)."""
    from .memory import peak_rss_bytes

    peak = peak_rss_bytes()
    return None if peak is None else round(peak / 2**20, 1)


class MeshContext:
    """One clean, normalised mesh (a prepared mesh's, or its working copy) and its derived data.

    k : eigenpairs of the main part's Laplacian (``MatchConfig.spectral_k``)
    """

    def __init__(self, mesh: Mesh, k: int) -> None:
        self.mesh = mesh
        self.k = int(k)

    @cached_property
    def part(self) -> SpectralPart:
        return SpectralPart(self.mesh)

    @cached_property
    def basis(self):
        from .geometry.spectral import SpectralBasis

        return SpectralBasis(self.part.mesh, k=self.k)

    @cached_property
    def hks(self) -> np.ndarray:
        """(n, 8) unit-row low-order HKS of every vertex (alignment tie-breaks)."""
        from .features.geometric import hks

        return unit_rows(self.part.extend(hks(self.basis, 8)))

    @cached_property
    def wks_main(self) -> np.ndarray:
        """(n_main, 64) WKS on the main part (functional-map descriptors)."""
        from .features.geometric import wks

        return wks(self.basis, 64)

    @cached_property
    def wks(self) -> np.ndarray:
        """(n, 64) unit-row WKS of every vertex (fit scoring)."""
        return unit_rows(self.part.extend(self.wks_main))

    @cached_property
    def part_descriptors(self) -> np.ndarray:
        """(n, d) the part matcher's descriptors of every vertex."""
        from .features.geometric import geometric_descriptors

        return self.part.extend(geometric_descriptors(self.part.mesh, self.basis))

    @cached_property
    def geodesics(self):
        """Geodesic solver of the main part."""
        from .geometry.geodesic import GeodesicSolver

        return GeodesicSolver(self.part.mesh)

    @cached_property
    def full_geodesics(self):
        """Geodesic solver of the whole mesh (heat method on one manifold part, else graph distances)."""
        from .geometry.geodesic import GeodesicSolver

        return GeodesicSolver(self.mesh)

    @cached_property
    def surface(self):
        """Closest-point queries on the whole mesh."""
        from .geometry.closest import SurfaceQuery

        return SurfaceQuery(self.mesh.vertices, self.mesh.faces)

    @cached_property
    def fit_target(self):
        """The mesh as the surface a fitted source settles onto (closest points, normals, boundary)."""
        from .register.surface_fit import TargetSurface

        return TargetSurface(self.surface, self.mesh)

    @cached_property
    def tree(self):
        """k-d tree of the vertices."""
        from scipy.spatial import cKDTree

        return cKDTree(self.mesh.vertices)


@dataclass
class PairContext:
    """Everything one match shares between its stages.

    source, target : MeshContext (clean, normalised meshes: the working copies when the meshes are
        large; every stage up to the registration runs on them)
    full_source, full_target : MeshContext of the whole meshes (the surface fit and the final
        maps run on them; the same objects when no copy was decimated)
    source_copy, target_copy : engine.geometry.working_copy.WorkingCopy
    config : the match settings; device : where the registration runs ("cpu", "cuda")
    feature_device : where 2D features run (may be "mps")
    progress : the match's Progress (stages, cancellation)
    landmarks : (k, 2) int clean (source vertex, target vertex) pairs or None
    exclude : (ns,) bool clean source vertices without data term, or None
    keypoints : engine.correspond.keypoint_pairs.PairKeypoints
    orientation, orientation_doubt : the caller's statement ("auto" / "as-is") and, when the meshes
        do not fit it, why (a notice)
    notices : one-line messages for the caller (fallbacks taken)
    fallbacks : one line per numerical fallback (another solver or distance than the usual one)
    timings : seconds per stage; cpu_timings : CPU seconds per stage (every thread);
    stage_peak_mb : the process's peak resident memory at the end of each stage (MiB)
    """

    source: MeshContext
    target: MeshContext
    full_source: MeshContext
    full_target: MeshContext
    source_copy: object
    target_copy: object
    config: MatchConfig
    device: str
    feature_device: str
    progress: Progress
    landmarks: np.ndarray | None = None
    exclude: np.ndarray | None = None
    keypoints: object = None
    full_exclude: np.ndarray | None = None  # the exclusion on the whole source
    target_vertices_all: np.ndarray | None = None  # (nt, 3) the clean target, every part (maps back to all)
    target_body_faces: np.ndarray | None = None  # full_target's faces -> clean target faces (None: all kept)
    target_parts: dict | None = None  # parts of the target and what was left out
    notices: list = field(default_factory=list)
    fallbacks: list = field(default_factory=list)  # slower or other methods taken (meta["fallbacks"])
    timings: dict = field(default_factory=dict)
    cpu_timings: dict = field(default_factory=dict)
    stage_peak_mb: dict = field(default_factory=dict)
    orientation: str = "auto"  # "auto" (searched) or "as-is" (stated: engine.correspond.stated_orientation)
    orientation_doubt: str | None = None  # why the stated orientation looks wrong (a notice), or None

    @property
    def S(self):
        return self.source.mesh

    @property
    def T(self):
        return self.target.mesh

    @property
    def keypoints_used(self) -> bool:
        return self.keypoints is not None and self.keypoints.used

    def lap(self, stage: str, since: tuple[float, float]) -> None:
        """Add the wall and CPU time since ``since`` (a clock()) to ``stage``; note the peak memory so far."""
        wall, cpu = clock()
        self.timings[stage] = self.timings.get(stage, 0.0) + wall - since[0]
        self.cpu_timings[stage] = self.cpu_timings.get(stage, 0.0) + cpu - since[1]
        self.stage_peak_mb[stage] = peak_rss_mb()


def _working_copies(source: Mesh, full_target: MeshContext, cfg: MatchConfig, prog: Progress) -> tuple:
    """The two meshes' working copies (engine.geometry.working_copy). The target's is made in a
    thread: a large one decimates in a child process, and meanwhile this thread makes the
    source's and the whole target's closest-point structures, which the fit needs later anyway
    (seconds at 300k vertices, hidden behind the child's start and work)."""
    from concurrent.futures import ThreadPoolExecutor

    from .geometry.working_copy import CHILD_DECIMATION_FACES, WorkingCopy

    target = full_target.mesh
    with ThreadPoolExecutor(1, thread_name_prefix="stablewrap-decimate") as pool:
        target_job = pool.submit(WorkingCopy, target, cfg.working_vertices, prog.token)
        source_copy = WorkingCopy(source, cfg.working_vertices, prog.token)
        prog.update(0.7)
        if target.n_faces >= CHILD_DECIMATION_FACES and target.n_vertices > cfg.working_vertices:
            # made now and kept (cached properties): the fit's target, or the rigid maps' query
            _ = full_target.fit_target if cfg.surface_fit else full_target.surface
        return source_copy, target_job.result()


def build_pair_context(src, tgt, k: int, cfg: MatchConfig, dev_t, prog: Progress, landmarks, exclude) -> PairContext:
    """The pair context on working copies of the meshes (decimated when larger than
    ``cfg.working_vertices``) and of the target's body (small or detached parts left out,
    engine.geometry.body_parts); landmarks and the exclusion carried onto them.

    src, tgt : engine.mesh.PreparedMesh; k : eigenpairs per basis; dev_t : torch.device of the match;
    landmarks : (k, 2) int clean pairs or None; exclude : (ns,) bool clean source mask or None
    """
    from .arrays import compact
    from .geometry.body_parts import body_parts
    from .device import solver_device
    from .geometry.working_copy import WorkingCopy

    body = body_parts(tgt.mesh)
    target_mesh, body_faces = tgt.mesh, None
    if body.left_out:  # the match wraps the body; the left-out parts still get the map back
        body_faces = np.nonzero(body.faces)[0]
        v, f, remap = compact(tgt.mesh.vertices, tgt.mesh.faces[body_faces])
        target_mesh = Mesh(v, f, tgt.mesh.name)
        if landmarks is not None:  # landmarks on a left-out part go to the nearest body vertex
            from scipy.spatial import cKDTree

            lt = remap[landmarks[:, 1]]
            off = lt < 0
            lt[off] = cKDTree(target_mesh.vertices).query(tgt.mesh.vertices[landmarks[off, 1]])[1]
            landmarks = np.stack([landmarks[:, 0], lt], axis=1)
    prog.update(0.5)
    full = [MeshContext(src.mesh, k), MeshContext(target_mesh, k)]
    copies = _working_copies(src.mesh, full[1], cfg, prog)
    prog.update(0.9)
    work = [MeshContext(c.mesh, k) if c.decimated else None for c in copies]
    if landmarks is not None:
        landmarks = np.stack([copies[0].to_working(landmarks[:, 0]), copies[1].to_working(landmarks[:, 1])], axis=1)
    ctx = PairContext(work[0] or full[0], work[1] or full[1], full[0], full[1], copies[0], copies[1], cfg,
                      solver_device(dev_t), str(dev_t), prog, landmarks=landmarks,
                      exclude=None if exclude is None else copies[0].mask_to_working(exclude), full_exclude=exclude,
                      target_vertices_all=tgt.mesh.vertices, target_body_faces=body_faces,
                      target_parts={"parts": body.parts, "left_out": body.left_out,
                                    "left_out_area_pct": round(100 * body.left_out_area, 2)})
    if body.notice("target"):
        ctx.notices.append(body.notice("target"))
    for role, c in zip(("source", "target"), copies):
        if c.decimated and c.full.n_vertices >= LARGE_MESH_VERTICES:
            ctx.notices.append(f"{role}: {c.full.n_vertices} vertices, matched on a {c.mesh.n_vertices}-vertex working copy "
                               "and fitted at full resolution (config working_vertices)")
    return ctx
