"""Writing files atomically: a temporary file in the target folder, renamed into place.

A failed or cancelled write leaves no partial file; the result gets the
permissions a plain ``open(path, "w")`` would give.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager


def default_file_mode() -> int:
    """0o666 minus the process umask (``mkstemp`` itself creates 0o600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    final = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(final)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".sw-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
