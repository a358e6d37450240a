"""``python -m engine``: the command line.

    python -m engine match SOURCE TARGET -o OUT.npz [options]
    python -m engine demo [--out out/]
    python -m engine transfer | part | models | bench ...

``match`` is defined here; the other commands are plugged in from modules that
expose ``add_subparser(subparsers)`` (each registers one command whose handler,
set with ``set_defaults(func=...)``, takes the argparse namespace and returns an
exit code). Those modules are imported guarded: a broken optional module turns
its own command into a one-line error and never breaks ``match``.

Errors: every :class:`engine.errors.StableWrapError` becomes one line on stderr
(``error: ...``) and a non-zero exit code; anything else is reported as an
internal error in one line (set ``STABLEWRAP_DEBUG=1`` for the traceback).
Ctrl-C cancels cleanly with exit code 130. Output files are written atomically,
so a failed or cancelled run never leaves a partial file.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from .errors import Cancelled, InputError, StableWrapError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_CANCELLED = 130
DEBUG_ENV = "STABLEWRAP_DEBUG"

# (command, module): optional commands plugged in through add_subparser(subparsers)
PLUGIN_COMMANDS = (
    ("transfer", "engine.transfer.cli"),
    ("part", "engine.parts.cli"),
    ("models", "engine.features.cli"),
    ("landmarks", "engine.keypoints.cli"),
    ("bench", "engine.bench.cli"),
    ("batch", "engine.batch"),
    ("demo", "engine.demo"),
)

MATCH_EPILOG = """\
input meshes:
  Any mesh file trimesh reads: .obj .ply .off .glb .gltf .stl. Quads and n-gons
  are triangulated; duplicate vertices are welded and degenerate faces dropped.
  Results always use the caller's vertex order and the target file's coordinates.

landmarks file (--landmarks):
  Optional point pairs that must correspond. Plain text, one pair per line:
      source_vertex target_vertex
  0-based vertex indices into the files as given (before any cleaning), separated
  by spaces or a comma; '#' starts a comment; blank lines are ignored. Example:
      # nose, left hand
      412 1033
      2876, 4410
  Or a .npy file holding a (k, 2) integer array of the same pairs.

exclude file (--exclude):
  Source vertices that get no data term (e.g. hair, accessories, a region the
  target lacks): 0-based source vertex indices, separated by spaces, commas or
  newlines, '#' comments allowed. Or a .npy file: an int array of indices or a
  boolean mask with one entry per source vertex.

skin file (--skin):
  Source vertices naming the skin to match, in the exclude file's format: every
  loose piece holding one of them is skin, every other piece (eyes, teeth,
  helpers, props) rides along with it. Without it the skin is found from the
  geometry (the largest surface and the pieces that extend it).

config file (--config):
  A .json or .toml file whose keys override fields of engine.pipeline.MatchConfig
  after the --quality preset is applied, e.g. {"reg_steps": 500, "w_chamfer": 2.0}.
  Unknown keys are an error.

output (OUT.npz):
  src_to_tgt_face int32 (Vs,), src_to_tgt_bary float32 (Vs,3): the target point of
  every source vertex; tgt_to_src_face int32 (Vt,), tgt_to_src_bary float32 (Vt,3);
  fitted_vertices float32 (Vs,3): the source topology on the target shape, in target
  coordinates; confidence float32 (Vs,) in [0,1]; meta: a JSON string (version,
  device, features, per-stage seconds, peak memory).

exit codes:
  0 success; 1 bad input or unavailable backend (one line on stderr); 2 usage error;
  3 internal error (set STABLEWRAP_DEBUG=1 for the traceback); 130 cancelled (Ctrl-C).
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``error: ...``), like every other failure."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see --help)\n")


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


# --------------------------------------------------------------------------- match


def check_output_path(path: str) -> str:
    """Fail fast (before any long work) when ``path`` cannot be written.

    Returns the absolute path. Raises :class:`InputError` when the path is a
    folder, its folder does not exist, or the folder is not writable.
    """
    if not path:
        raise InputError("-o/--output: no output file given")
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        raise InputError(f"{path}: is a folder; give an output .npz file name")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise InputError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder {folder} is not writable")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise InputError(f"{path}: existing output file is not writable")
    return full


def _check_input_file(path: str, what: str) -> None:
    if path is None:
        return
    if not os.path.exists(path):
        raise InputError(f"{path}: {what} not found")
    if os.path.isdir(path):
        raise InputError(f"{path}: {what} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: {what} is not readable (permission denied)")


class _ProgressBar:
    """A rich progress bar on stderr; the engine's ``progress(stage, fraction)`` callback."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = None

    def __enter__(self) -> "_ProgressBar":
        self._progress.start()
        self._task = self._progress.add_task("starting", total=1.0)
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, stage: str, fraction: float) -> None:
        self._progress.update(self._task, description=stage, completed=float(fraction))


def cmd_match(args: argparse.Namespace) -> int:
    """Handler of ``match``: validate paths, run :func:`engine.match`, save atomically."""
    out = check_output_path(args.output)
    _check_input_file(args.source, "source mesh")
    _check_input_file(args.target, "target mesh")
    _check_input_file(args.landmarks, "landmarks file")
    _check_input_file(args.exclude, "exclude file")
    _check_input_file(args.skin, "skin file")
    _check_input_file(args.config, "config file")

    from .pipeline import match
    from .progress import CancelToken
    from .threads import set_threads

    set_threads(args.threads)

    token = CancelToken()
    options = dict(
        method=args.method, features=args.features, quality=args.quality, device=args.device,
        landmarks=args.landmarks, exclude=args.exclude, config=args.config, keypoints=args.keypoints,
        orientation=args.orientation, skin=args.skin, cancel=token,
    )
    show = sys.stderr.isatty() and not args.quiet
    t0 = time.perf_counter()
    if show:
        with _ProgressBar() as bar:
            result = match(args.source, args.target, progress=bar, **options)
    else:
        result = match(args.source, args.target, **options)
    result.save(out)
    # notices (a fallback taken) and the verdict go to stderr on a terminal or not: a pipeline
    # log should say that a match fell back to geometry or looks wrong
    for notice in result.meta.get("notices", []):
        print(f"note: {notice}", file=sys.stderr)
    verdict = result.meta.get("verdict") or {}
    if verdict:
        print(f"verdict: {verdict.get('verdict')} ({verdict.get('reason')})", file=sys.stderr)
    fit = result.meta.get("surface_fit") or {}
    if "target_uncovered_pct" in fit:
        print(f"coverage: {fit['target_uncovered_pct']:.1f} % of the target not covered by the fit, "
              f"{fit['fit_off_target_pct']:.1f} % of the fit off the target", file=sys.stderr)
    if show:
        n = len(result.fitted_vertices)
        print(f"wrote {args.output} ({n} source vertices, {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return EXIT_OK


def _add_match(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "match",
        help="dense correspondence from SOURCE to TARGET, written to an .npz",
        description="Dense correspondence from SOURCE to TARGET and the source fitted onto the target.",
        epilog=MATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="source mesh file (usually the clean template)")
    p.add_argument("target", metavar="TARGET", help="target mesh file (scan, sculpt, other character)")
    p.add_argument("-o", "--output", metavar="OUT.npz", required=True, help="output .npz (written atomically)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="compute device (default: auto)")
    p.add_argument("--features", choices=("auto", "geometric", "dino", "dino+sd"), default="auto",
                   help="correspondence features; auto uses the semantic models when installed, else geometric")
    p.add_argument("--quality", choices=("fast", "balanced", "best"), default="balanced", help="speed / accuracy preset")
    p.add_argument("--method", choices=("full", "rigid"), default="full",
                   help="full registration, or rigid alignment + closest point (the baseline)")
    p.add_argument("--landmarks", metavar="FILE", default=None, help="source/target vertex pairs (format below)")
    p.add_argument("--exclude", metavar="FILE", default=None, help="source vertices without data term (format below)")
    p.add_argument("--skin", metavar="FILE", default=None,
                   help="source vertices whose pieces are the skin to match (format below; default: found)")
    p.add_argument("--config", metavar="FILE", default=None, help="JSON/TOML overriding MatchConfig fields")
    p.add_argument("--keypoints", choices=("auto", "on", "off"), default="auto",
                   help="body keypoints (MediaPipe pose on renders) orient and guide humanoid pairs; "
                        "auto: when both meshes show a body (default)")
    p.add_argument("--orientation", choices=("auto", "as-is"), default="auto",
                   help="auto: search the orientation (default); as-is: both meshes stand upright and face the same "
                        "way (two characters in one scene): only small turns, left and right from that")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="at most N threads for torch and BLAS (leave cores to other programs; default: all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=cmd_match)
    return p


# --------------------------------------------------------------------------- plumbing


def _add_unavailable(subparsers, name: str, module: str, exc: BaseException) -> None:
    """A stand-in command that explains why the real one could not be loaded."""
    why = f"{exc.__class__.__name__}: {_one_line(exc)}"
    p = subparsers.add_parser(name, help=f"(unavailable: {why})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def unavailable(_args) -> int:
        raise StableWrapError(f"the '{name}' command is unavailable ({module} failed to load: {why})")

    p.set_defaults(func=unavailable)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="python -m engine",
        description="StableWrap engine: dense shape correspondence (template wrapping) between two meshes.",
    )
    parser.add_argument("--version", action="version", version=f"stablewrap-engine {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_match(subparsers)
    for name, module in PLUGIN_COMMANDS:
        try:
            importlib.import_module(module).add_subparser(subparsers)
        except Exception as exc:  # a broken optional module must not break `match`
            if name in subparsers.choices:  # registered, then failed: keep what is there
                continue
            _add_unavailable(subparsers, name, module, exc)
    return parser


def _cancelled() -> int:
    """Report a cancel (Ctrl-C) and return its exit code, 130.

    CPython marks a Ctrl-C that lands inside code run from a string (``exec`` or
    ``eval``: dataclasses, namedtuple and others build methods that way) as
    unhandled, even when it is caught, and ``python -m`` then kills itself with
    SIGINT at exit instead of returning our code. Running a string that completes
    clears that mark.
    """
    exec("pass")
    print("error: cancelled", file=sys.stderr)
    return EXIT_CANCELLED


def _collect() -> None:
    """Free what a failed or stopped match left in reference cycles (an exception's traceback
    holds the stages' frames; a future holding a thread's exception points back at them) before
    the interpreter exits: native solvers still alive then make their bindings print leak
    warnings on exit."""
    import gc

    gc.collect()


def _run(func, args) -> int:
    code = _run_guarded(func, args)
    if code != EXIT_OK:
        _collect()  # here, after the except blocks: the exception and its traceback are released
    return code


def _run_guarded(func, args) -> int:
    try:
        code = func(args)
        return EXIT_OK if code is None else int(code)
    except (Cancelled, KeyboardInterrupt):
        return _cancelled()
    except StableWrapError as exc:
        if _debug():
            traceback.print_exc()
        print(f"error: {_one_line(exc) or exc.__class__.__name__}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("error: out of memory (try --quality fast, or smaller meshes)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if _debug():
            traceback.print_exc()
            print(f"error: internal error: {exc.__class__.__name__}: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"error: internal error ({exc.__class__.__name__}: {_one_line(exc)}); "
                  f"set {DEBUG_ENV}=1 for the traceback", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m engine`` and the ``stablewrap`` script; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return _cancelled()
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(func, args)


if __name__ == "__main__":
    sys.exit(main())
