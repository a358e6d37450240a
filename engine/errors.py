"""Exceptions the engine raises on purpose.

Every message is one line that names the problem (file, mesh, parameter) and is
meant to be shown to a user as it is. Anything else escaping the engine is a bug.
"""


class StableWrapError(Exception):
    """Base class: a one-line, user-facing message."""


class InputError(StableWrapError, ValueError):
    """Bad input: unreadable file, empty mesh, NaN coordinates, wrong shapes..."""


class Cancelled(StableWrapError):
    """The caller (or a progress callback) cancelled the operation."""


class BackendUnavailable(StableWrapError):
    """An optional backend (CUDA, nvdiffrast, a feature model) is not installed or usable."""
