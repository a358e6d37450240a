"""Benchmark: texture bake of a large texture onto a ~50k-triangle target.

    python -m engine.bench.transfer_texture [--size 2048] [--faces 50000]

Source: a seamed cylinder (about 10k triangles) with a procedural texture that
is a known function of the surface point (angle, height). Target: the same
cylinder remeshed differently (rotated seam, other resolution) with its own
UVs. The map comes from closest points (not timed). Prints the bake time and
the colour error against the analytic texture at the texels' 3-D points.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ..geometry.closest import SurfaceQuery
from ..transfer import synthetic
from ..transfer.texture import bake_texture, rasterize_uv


def _pattern(theta: np.ndarray, z: np.ndarray, length: float) -> np.ndarray:
    """Smooth RGB function of the cylinder point (angle theta, height z), values in [0, 255]."""
    r = 127.5 + 127.5 * np.sin(3 * theta)
    g = 127.5 + 127.5 * np.cos(2 * np.pi * z / length)
    b = 127.5 + 127.5 * np.sin(theta + 2 * np.pi * z / length)
    return np.stack([r, g, b], axis=-1)


def make_case(size: int = 2048, target_faces: int = 50000, seed: int = 0):
    length = 4.0
    sv, sf, suv = synthetic.cylinder(96, 52, length=length)
    # source texture: texel (row, col) -> (u, v) -> (theta, z)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    u = (cols + 0.5) / size
    v = 1.0 - (rows + 0.5) / size
    tex = np.clip(np.rint(_pattern(2 * np.pi * u, v * length, length)), 0, 255).astype(np.uint8)
    n_around = int(np.sqrt(target_faces / 2 * np.pi * 2 / length * 1.0))
    n_along = max(1, int(round(target_faces / (2 * n_around))))
    tv, tf, tuv = synthetic.cylinder(n_around, n_along, length=length, angle_offset=0.37)
    tuv = 0.04 + 0.92 * tuv  # leave a border so that the padding step has work to do
    face, bary, _, _ = SurfaceQuery(sv, sf).closest(tv)
    return dict(sv=sv, sf=sf, suv=suv, tex=tex, tv=tv, tf=tf, tuv=tuv, face=face, bary=bary, length=length)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.bench.transfer_texture", description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="texture size (source and output), default 2048")
    ap.add_argument("--faces", type=int, default=50000, help="target triangle count, default 50000")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--refine", action="store_true", help="pass the target and fitted vertices (split large target triangles)")
    args = ap.parse_args(argv)
    case = make_case(args.size, args.faces)
    print(f"source: {len(case['sv'])} vertices, {len(case['sf'])} triangles, texture {args.size}x{args.size}; target: {len(case['tf'])} triangles")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        extra = dict(tgt_vertices=case["tv"], fitted_vertices=case["sv"], src_vertices=case["sv"]) if args.refine else {}
        out = bake_texture(case["sf"], case["suv"], case["tex"], case["tf"], case["tuv"], case["face"], case["bary"],
                           size=(args.size, args.size), padding=16, **extra)
        times.append(time.perf_counter() - t0)
    # accuracy: every covered texel's 3-D point on the target -> analytic colour
    tface, tbary = rasterize_uv(case["tuv"], (args.size, args.size))
    cov = tface >= 0
    pts = np.einsum("nk,nkc->nc", tbary[cov].astype(np.float64), case["tv"][case["tf"][tface[cov]]])
    theta = np.arctan2(pts[:, 1], pts[:, 0])
    expect = _pattern(theta, pts[:, 2], case["length"])
    err = np.abs(out[cov].astype(np.float64) - expect)
    print(f"bake time: {min(times):.2f} s (best of {len(times)}); covered texels {cov.mean() * 100:.1f} %")
    print(f"colour error vs analytic texture: mean {err.mean():.2f}, 99th percentile {np.percentile(err, 99):.2f} (of 255)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
