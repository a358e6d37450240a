"""``python -m engine``: see :mod:`engine.cli`."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules are still loading
    print("error: cancelled", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
