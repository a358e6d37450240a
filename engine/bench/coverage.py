"""``python -m engine.bench.coverage``: how well the fitted template covers real characters.

The MakeHuman body template (``--template``) onto each target, matched with the default settings
and, in the same run, with the fit's cover and web pulls off (the fit before them: vertices pulled
onto the target alone). Per pair and variant: the share of the target's outer surface farther than
1 % of its diagonal from the fitted template (``uncov%``), the share of the fitted template's surface
that far off the target (``off%``), flipped and folded triangles, the keypoint error of the
verdict (median and worst keypoint, / sqrt(target area)), the verdict and the seconds.

Without ``--targets`` it runs the characters the fit's weights were chosen on (X Bot, ogre:
docs/decisions.md); ``--targets`` names others (held-out characters from outside the shared data).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

DEV_TARGETS = ("realworld/xbot.obj", "realworld/ogre.obj")
BASELINE = {"surface_fit_cover": 0.0, "surface_fit_web": 0.0}


def _row(name: str, variant: str, corr, seconds: float) -> str:
    fit = corr.meta.get("surface_fit") or {}
    verdict = corr.meta.get("verdict") or {}
    kp = verdict.get("keypoint_error")
    kp_max = verdict.get("keypoint_error_max")
    kp_txt = "-" if kp is None else f"{kp:.3f}/{kp_max:.3f}"
    return (f"{name:<22} {variant:<9} {fit.get('target_uncovered_pct', float('nan')):>7.2f} "
            f"{fit.get('fit_off_target_pct', float('nan')):>6.2f} {fit.get('flipped_pct', float('nan')):>6.3f} "
            f"{fit.get('folds_pct', float('nan')):>6.3f} {kp_txt:>11} {verdict.get('verdict', '-'):>7} {seconds:>6.1f}")


def main(argv: list[str] | None = None) -> int:
    from ..bench.datasets import default_data_dir
    from ..errors import StableWrapError
    from ..pipeline import match

    ap = argparse.ArgumentParser(prog="python -m engine.bench.coverage", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="benchmark data folder (default: ../shared/data)")
    ap.add_argument("--template", default="realworld/mh_body.obj", help="source mesh (relative to --data or a path)")
    ap.add_argument("--targets", nargs="*", default=None, help="target meshes (default: the dev characters)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the fit without its cover and web pulls")
    args = ap.parse_args(argv)
    data = args.data or str(default_data_dir())

    def path(p: str) -> str:
        return p if os.path.isabs(p) or os.path.exists(p) else os.path.join(data, p)

    template = path(args.template)
    targets = [path(t) for t in (args.targets or DEV_TARGETS)]
    missing = [t for t in [template, *targets] if not os.path.exists(t)]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    variants = [("default", None)] + ([] if args.no_baseline else [("no cover", BASELINE)])
    print(f"template {os.path.basename(template)}; uncov% / off%: target surface uncovered by the fit / fit surface "
          "off the target, beyond 1 % of the diagonal; kp err: median / worst keypoint, / sqrt(area)")
    header = f"{'target':<22} {'variant':<9} {'uncov%':>7} {'off%':>6} {'flip%':>6} {'fold%':>6} {'kp err':>11} {'verdict':>7} {'s':>6}"
    print(header)
    print("-" * len(header))
    for target in targets:
        for variant, config in variants:
            t = time.perf_counter()
            try:
                corr = match(template, target, config=config)
            except StableWrapError as exc:
                print(f"{os.path.basename(target):<22} {variant:<9} error: {exc}")
                continue
            print(_row(os.path.basename(target), variant, corr, time.perf_counter() - t), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
