"""``python -m engine.bench.keypoint_backends``: the two keypoint back ends side by side.

Per mesh and back end (the mediapipe package's solutions, the model runner through LiteRT):
whether a body was found, the landmarks found, the views that showed it, whether left and right
are right, the first detection's seconds (renders + models + triangulation, cache bypassed), and
how far the runner's landmarks lie from the reference's (median and largest, in units of the
mesh's bounding-box diagonal). Then, per match pair, ``engine.match`` with keypoints on under
each back end: verdict, keypoint error (median, sqrt(target area)), seconds, and how far apart
the two fitted templates lie (mean, of the target's diagonal). Both back ends run in this one
process, one after the other, with the same model load order.

Left and right are judged without ground truth: a body's own left (its left landmarks minus
their right twins), up (shoulders over hips) and front (nose ahead of the shoulders) make a
right-handed frame, left x up = front; a body whose sides were swapped makes a left-handed one.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

DEFAULT_MESHES = ("realworld/mh_body.obj", "realworld/mh_base_full.obj", "realworld/xbot.obj", "realworld/ogre.obj",
                  "faust5k/tr_reg_030.off", "faust5k/tr_reg_041.off", "faust5k/tr_reg_046.off")
DEFAULT_PAIRS = ("realworld/mh_body.obj:realworld/xbot.obj", "realworld/mh_body.obj:realworld/ogre.obj",
                 "realworld/mh_body.obj:faust5k/tr_reg_000.off", "realworld/mh_base_full.obj:realworld/xbot.obj")
BACKENDS = ("mediapipe", "litert")


def sides(kp) -> str:
    """"right", "swapped" or "?" (too few landmarks) from the body's own frame (module docstring)."""
    def pt(name):
        p = kp.point(name)
        return None if p is None else np.asarray(p, np.float64)

    pairs = [(pt(f"left_{n}"), pt(f"right_{n}")) for n in ("shoulder", "hip", "knee", "ankle", "eye", "ear")]
    lr = [a - b for a, b in pairs if a is not None and b is not None]
    parts = [pt(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "nose")]
    if len(lr) < 2 or any(p is None for p in parts):
        return "?"
    ls, rs, lh, rh, nose = parts
    left, up = np.mean(lr, axis=0), (ls + rs - lh - rh) / 2
    front = nose - (ls + rs) / 2
    return "right" if float(np.dot(np.cross(left, up), front)) > 0 else "swapped"


def _with_backend(backend: str):
    os.environ["STABLEWRAP_KEYPOINT_BACKEND"] = backend


def warm_up() -> None:
    """Load both back ends' models (in the models' process) before anything is timed."""
    from ..keypoints.pose_model import body_model

    loads = []
    for backend in BACKENDS:
        _with_backend(backend)
        t = time.perf_counter()
        body_model().detect(np.zeros((1, 64, 64, 3), np.uint8))
        loads.append(f"{backend} {time.perf_counter() - t:.2f} s")
    print("model load: " + ", ".join(loads))


def detection_rows(paths: list[str]) -> None:
    from ..keypoints.detect import detect_keypoints
    from ..keypoints.pose_model import body_model
    from ..mesh import load_mesh

    header = (f"{'mesh':<20} {'back end':<10} {'body':>4} {'found':>5} {'views':>5} {'sides':>7} {'first s':>7} "
              f"{'vs ref med':>10} {'vs ref max':>10}")
    print(header)
    print("-" * len(header))
    for path in paths:
        mesh = load_mesh(path).mesh
        diag = float(np.linalg.norm(mesh.vertices.max(0) - mesh.vertices.min(0)))
        ref = None
        for backend in BACKENDS:
            _with_backend(backend)
            model = body_model()
            with tempfile.TemporaryDirectory() as cache:
                t = time.perf_counter()
                kp = detect_keypoints(mesh.vertices, mesh.faces, model=model, cache_dir=cache)
                first = time.perf_counter() - t
            med = worst = ""
            if ref is None:
                ref = kp
            else:
                both = ref.found(0.3) & kp.found(0.3)
                if both.any():
                    d = np.linalg.norm(ref.points[both] - kp.points[both], axis=1) / diag
                    med, worst = f"{np.median(d):.4f}", f"{d.max():.4f}"
            print(f"{os.path.basename(path):<20} {backend:<10} {'yes' if kp.humanoid else 'no':>4} "
                  f"{int(kp.found(0.3).sum()):>5} {kp.views_found:>5} {sides(kp):>7} {first:>7.2f} {med:>10} {worst:>10}",
                  flush=True)


def match_rows(pairs: list[tuple[str, str]]) -> None:
    import engine

    from ..mesh import load_mesh

    header = f"{'source -> target':<34} {'back end':<10} {'verdict':<8} {'kp error':>8} {'seconds':>7} {'fit apart':>9}"
    print(header)
    print("-" * len(header))
    for src, tgt in pairs:
        s, t = load_mesh(src).mesh, load_mesh(tgt).mesh
        diag = float(np.linalg.norm(t.vertices.max(0) - t.vertices.min(0)))
        ref = None
        for backend in BACKENDS:
            _with_backend(backend)
            with tempfile.TemporaryDirectory() as cache:
                os.environ["STABLEWRAP_CACHE"] = cache
                start = time.perf_counter()
                corr = engine.match((s.vertices, s.faces), (t.vertices, t.faces), keypoints="on")
                secs = time.perf_counter() - start
            verdict = corr.meta.get("verdict") or {}
            apart = ""
            if ref is None:
                ref = corr.fitted_vertices
            else:
                apart = f"{np.linalg.norm(ref - corr.fitted_vertices, axis=1).mean() / diag:.4f}"
            label = f"{os.path.basename(src)} -> {os.path.basename(tgt)}"
            print(f"{label:<34} {backend:<10} {verdict.get('verdict', '-'):<8} {verdict.get('keypoint_error', float('nan')):>8.3f} "
                  f"{secs:>7.1f} {apart:>9}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from .datasets import default_data_dir
    from ..keypoints.litert_models import litert_status
    from ..keypoints.pose_model import mediapipe_status

    p = argparse.ArgumentParser(prog="python -m engine.bench.keypoint_backends", description=__doc__.split("\n\n")[1])
    p.add_argument("--data", default=None, help=f"benchmark data folder (default: {default_data_dir()})")
    p.add_argument("--meshes", nargs="*", default=None, help="mesh files, relative to --data (default: held-out characters)")
    p.add_argument("--pairs", nargs="*", default=None, metavar="SRC:TGT", help="match pairs, relative to --data")
    args = p.parse_args(argv)
    for ok, why in (mediapipe_status(), litert_status()):
        if not ok:
            print(f"error: both back ends are needed: {why}", file=sys.stderr)
            return 1
    data = args.data or str(default_data_dir())
    meshes = [os.path.join(data, m) for m in (DEFAULT_MESHES if args.meshes is None else args.meshes)]
    pairs = [tuple(os.path.join(data, x) for x in pr.split(":", 1)) for pr in (DEFAULT_PAIRS if args.pairs is None else args.pairs)]
    keep = dict(os.environ)
    try:
        warm_up()
        if meshes:
            detection_rows(meshes)
        if pairs:
            print()
            match_rows(pairs)
    finally:
        os.environ.clear()
        os.environ.update(keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
