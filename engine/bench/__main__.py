"""``python -m engine.bench --set faust5k --pairs 30 --features geometric``"""
import sys

from .cli import main

if __name__ == "__main__":  # spawned match workers import this module too: run only as a script
    sys.exit(main())
