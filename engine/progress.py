"""Progress reporting and cancellation shared by every long-running engine call.

``progress(stage: str, fraction: float)`` callbacks receive the name of the
current stage and the overall fraction done in [0, 1]. A callback may return
``False`` (or set the token) to cancel.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

from .errors import Cancelled

ProgressCallback = Callable[[str, float], Optional[bool]]


class CancelToken:
    """A flag that the caller (or another thread) sets to stop the work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def event(self) -> threading.Event:
        """The flag itself (set on cancel): for waits that watch it, e.g. engine.isolated's ``stop``."""
        return self._event

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("operation cancelled")


class SubProgress:
    """Maps fractions [0, 1] of a sub-task onto [start, start + width] of the caller's current stage
    (``progress``: anything with ``update(fraction)``, or None for no reporting)."""

    def __init__(self, progress, start: float, width: float):
        self.progress, self.start, self.width = progress, start, width

    def update(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress.update(self.start + self.width * min(1.0, max(0.0, fraction)))


class Progress:
    """Maps per-stage progress onto one overall fraction.

    ``stages`` is a sequence of ``(name, weight)``; ``stage(name)`` starts a
    stage, ``update(f)`` reports progress inside it. Both check cancellation.
    """

    def __init__(
        self,
        callback: Optional[ProgressCallback] = None,
        token: Optional[CancelToken] = None,
        stages: Sequence[tuple[str, float]] = (),
    ) -> None:
        self.callback = callback
        self.token = token or CancelToken()
        total = float(sum(w for _, w in stages)) or 1.0
        self._offsets: dict[str, tuple[float, float]] = {}
        acc = 0.0
        for name, w in stages:
            self._offsets[name] = (acc / total, w / total)
            acc += w
        self._current = ""

    def stage(self, name: str) -> None:
        self._current = name
        self.update(0.0)

    def update(self, fraction: float) -> None:
        self.token.raise_if_cancelled()
        if self.callback is None:
            return
        start, width = self._offsets.get(self._current, (0.0, 0.0))
        overall = min(1.0, max(0.0, start + width * min(1.0, max(0.0, fraction))))
        # never backwards: a stage run again (a retried fit) holds the bar where it was
        overall = self._last = max(getattr(self, "_last", 0.0), overall)
        if self.callback(self._current, overall) is False:
            self.token.cancel()
        self.token.raise_if_cancelled()
