"""Transfers a batch row runs after its match: the columns that ask for them and the files they write.

Columns (all optional; an empty cell runs nothing):

- ``uv``: ``yes`` -> ``NAME.uv.obj``, the target with the source's UVs (``transfer uv``);
- ``texture``: the source's texture image -> ``NAME.texture.png``, baked into the target's own
  UV layout (``transfer texture``: both meshes need UVs);
- ``weights``: an ``.npz`` of per-vertex arrays on the source -> ``NAME.weights.npz`` on the
  target: a 2-d array is skin weights (vertices x bones, rows summing to 1; they still do on
  the target), a 1-d array one vertex group's weights or any per-vertex value (interpolated);
- ``morph``: a frame count N >= 2 -> ``NAME.morph.npz``, N shapes from the source to its fit
  (``transfer morph``).

Each is written atomically beside the match's ``NAME.npz``; the batch writes the match file last,
so a row whose transfer failed leaves no output that a rerun would take as done.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path

from .errors import InputError

TRANSFER_COLUMNS = ("uv", "texture", "weights", "morph")
SUFFIXES = {"uv": ".uv.obj", "texture": ".texture.png", "weights": ".weights.npz", "morph": ".morph.npz"}
YES, NO = ("yes", "true", "1", "on"), ("no", "false", "0", "off")


def parse_transfers(rec: dict, where: str, file) -> tuple[dict, list[str]]:
    """The transfers a CSV row asks for and the input files they read.

    rec : the row's cells by column; where : "pairs.csv:LINE" for messages; file : callable
    (column) -> the checked path of the file that cell names (an InputError when missing)
    Returns ({column: value}, [input files]).
    """
    out, inputs = {}, []
    uv = rec.get("uv", "").lower()
    if uv in YES:
        out["uv"] = True
    elif uv not in NO + ("",):
        raise InputError(f"{where}: uv must be yes or no, got {rec['uv']!r}")
    for col in ("texture", "weights"):
        if rec.get(col):
            out[col] = file(col)
            inputs.append(out[col])
    if rec.get("weights") and not out["weights"].lower().endswith(".npz"):
        raise InputError(f"{where}: weights must be an .npz of per-vertex arrays, got {rec['weights']!r}")
    if rec.get("morph"):
        try:
            n = int(rec["morph"])
        except ValueError:
            n = 0
        if n < 2:
            raise InputError(f"{where}: morph must be a frame count of 2 or more, got {rec['morph']!r}")
        out["morph"] = n
    return out, inputs


def outputs(out_dir: Path, name: str, transfers: dict) -> list[Path]:
    """Every file a row writes: the transfers' then the match's (written last)."""
    return [out_dir / f"{name}{SUFFIXES[c]}" for c in TRANSFER_COLUMNS if c in transfers] + [out_dir / f"{name}.npz"]


def run_transfers(source: str, target: str, match_file: str, out_dir: Path, name: str, transfers: dict) -> None:
    """Run a row's transfers through the match in ``match_file`` (engine.transfer.cli's commands,
    their printed lines swallowed). An InputError names the transfer."""
    from .transfer import cli as T

    base = dict(source=source, target=target, match=match_file)
    jobs = []
    if "uv" in transfers:
        jobs.append(("uv", T.cmd_uv, dict(reverse=False)))
    if "texture" in transfers:
        jobs.append(("texture", T.cmd_texture, dict(texture=transfers["texture"], size=None, padding=16, wrap="repeat",
                                                    quiet=True)))
    if "weights" in transfers:
        jobs.append(("weights", T.cmd_attributes, dict(values=transfers["weights"], mode="barycentric",
                                                       weights=_two_d_arrays(transfers["weights"]), renormalize=False,
                                                       labels=[], face_labels=[], fill_below=None, reverse=False)))
    if "morph" in transfers:
        jobs.append(("morph", T.cmd_morph, dict(n=transfers["morph"], method="jacobian")))
    for col, cmd, extra in jobs:
        args = argparse.Namespace(output=os.fspath(out_dir / f"{name}{SUFFIXES[col]}"), **base, **extra)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                cmd(args)
        except InputError as exc:
            raise InputError(f"{col} transfer: {exc}") from None


def _two_d_arrays(path: str) -> list[str]:
    """Names of the 2-d arrays of an .npz (the skin-weight tables)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return [k for k in z.files if z[k].ndim == 2]
    except Exception as exc:
        raise InputError(f"weights transfer: {os.path.basename(path)}: cannot read ({exc.__class__.__name__}); "
                         "expected an .npz of per-vertex arrays") from None
