"""Make Morph: in-between shapes from the source to its fitted shape, as shape keys driven by
one slider on the source."""
from __future__ import annotations

from . import mesh_io
from .mesh_io import MeshDataError
from .task_base import FIT_KEY, MORPH_PREFIX, EditModeGuard, Task, TaskError, check_length, mesh_signature, resolve_object


class MorphTask(Task):
    """N in-between shape keys from the source shape to its fit, driven by one slider."""

    label = "Make Morph"
    cmd = "make_morph"

    def __init__(self, source, steps: int = 5) -> None:
        self.source = resolve_object(source, "source")
        self.steps = int(steps)

    def prepare(self):
        if self.source is None:
            raise TaskError("pick a source mesh")
        try:
            mesh_io.check_mesh_object(self.source, "source")
        except MeshDataError as exc:
            raise TaskError(str(exc)) from None
        if self.steps < 1:
            raise TaskError(f"the number of in-betweens must be at least 1 (got {self.steps})")
        fitted = mesh_io.read_shape_key(self.source, FIT_KEY)
        if fitted is None:
            raise TaskError(f"'{self.source.name}' has no '{FIT_KEY}' shape key: run Match first")
        tris, _, _ = mesh_io.read_triangles(self.source.data)
        self.signature = mesh_signature(self.source)
        times = [i / self.steps for i in range(1, self.steps + 1)]  # key i at t = i/N; the last is the fit
        return self.cmd, {"times": times}, {
            "src_vertices": mesh_io.basis_positions(self.source), "src_faces": tris, "fitted_vertices": fitted}

    def apply(self, data, arrays):
        n = len(self.source.data.vertices)
        frames = check_length("frames", arrays.get("frames"), (self.steps, n, 3))
        if mesh_signature(self.source) != self.signature:
            raise TaskError(f"'{self.source.name}' was changed meanwhile; run Make Morph again")
        with EditModeGuard(self.source):
            remove_morph(self.source)
            keys = []
            for i in range(self.steps):
                keys.append(mesh_io.write_shape_key(self.source, f"{MORPH_PREFIX}{i + 1:02d}", frames[i], 0.0))
            for i, key in enumerate(keys, start=1):
                add_morph_driver(self.source, key, i, self.steps)
            self.source.stablewrap.morph_steps = self.steps
            fit = self.source.data.shape_keys.key_blocks.get(FIT_KEY)
            if fit is not None:
                fit.value = 0.0  # the morph slider drives the shape now
        return f"{self.steps} in-between shape keys on '{self.source.name}', driven by its Morph slider"


def add_morph_driver(obj, key, i: int, n: int):
    """Key ``i`` of ``n`` peaks at morph = i/n and fades linearly to its neighbours (a piecewise-linear blend)."""
    fcurve = key.driver_add("value")
    drv = fcurve.driver
    drv.type = "SCRIPTED"
    while drv.variables:
        drv.variables.remove(drv.variables[0])
    var = drv.variables.new()
    var.name = "m"
    var.type = "SINGLE_PROP"
    var.targets[0].id_type = "OBJECT"
    var.targets[0].id = obj
    var.targets[0].data_path = "stablewrap.morph"
    if i == n:
        drv.expression = f"max(0.0, min(1.0, m * {n} - {n - 1}))"
    else:
        drv.expression = f"max(0.0, 1.0 - abs(m * {n} - {i}))"
    for mod in list(fcurve.modifiers):
        fcurve.modifiers.remove(mod)
    return fcurve


def remove_morph(obj) -> int:
    sk = obj.data.shape_keys
    if sk is None:
        return 0
    names = [k.name for k in sk.key_blocks if k.name.startswith(MORPH_PREFIX)]
    for name in names:
        key = obj.data.shape_keys.key_blocks[name]
        try:
            key.driver_remove("value")
        except TypeError:
            pass
        obj.shape_key_remove(key)
    obj.stablewrap.morph_steps = 0
    return len(names)
