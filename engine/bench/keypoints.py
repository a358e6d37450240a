"""``python -m engine.bench.keypoints MESH...``: keypoint detection time and result per mesh.

Prints one row per mesh: vertices, whether a body was found, landmarks found,
views that showed the body, the orbit axis, seconds for the first detection
(renders + pose model + triangulation, cache bypassed) and for a second call
(read from a fresh cache). The model's one-off load is timed apart, first.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def run(paths: list[str]) -> int:
    from ..errors import StableWrapError
    from ..keypoints.detect import detect_keypoints
    from ..keypoints.pose_model import body_model
    from ..mesh import load_mesh

    t = time.perf_counter()
    model = body_model()
    with model._lock:
        model._load()
    print(f"pose model ({model.name}) load: {time.perf_counter() - t:.2f} s")
    header = f"{'mesh':<28} {'vertices':>8} {'body':>5} {'found':>5} {'views':>5} {'axis':>4} {'first s':>8} {'cached s':>8}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as cache:
        for path in paths:
            try:
                mesh = load_mesh(path).mesh
            except StableWrapError as exc:
                print(f"{os.path.basename(path):<28} error: {exc}")
                continue
            t = time.perf_counter()
            kp = detect_keypoints(mesh.vertices, mesh.faces, model=model, cache_dir=cache)
            first = time.perf_counter() - t
            t = time.perf_counter()
            detect_keypoints(mesh.vertices, mesh.faces, model=model, cache_dir=cache)
            again = time.perf_counter() - t
            print(f"{os.path.basename(path):<28} {mesh.n_vertices:>8} {'yes' if kp.humanoid else 'no':>5} "
                  f"{int(kp.found(0.3).sum()):>5} {kp.views_found:>5} {kp.axis:>4} {first:>8.2f} {again:>8.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.keypoints", description=__doc__.split("\n\n")[1])
    p.add_argument("meshes", nargs="+", metavar="MESH", help="mesh files")
    args = p.parse_args(argv)
    return run(args.meshes)


if __name__ == "__main__":
    sys.exit(main())
