"""The engine's thread pools: torch's, OpenMP's and the BLAS libraries'.

On a machine that is busy (an artist's desktop with Blender open, a benchmark beside other
jobs) spinning OpenMP workers and oversubscribed BLAS pools multiply the time of every small
operation. ``engine`` sets ``OMP_WAIT_POLICY=PASSIVE`` when it is imported before torch
(idle OpenMP workers sleep instead of spinning), and :func:`set_threads` caps torch's and the
BLAS pools to leave cores to other programs (``--threads N`` on the command line, the
worker's setting in Blender).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from .errors import InputError

_limits = None  # the threadpoolctl limiter kept alive while it applies


def set_threads(n: int | None) -> int:
    """Use at most ``n`` threads for torch and BLAS (None: leave the libraries' defaults).
    Returns the number in use."""
    global _limits
    import torch

    if n is None:
        return torch.get_num_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"threads: expected a positive whole number, got {n!r}")
    n = min(n, os.cpu_count() or n)
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        _limits = threadpool_limits(limits=n)
    except ImportError:  # BLAS keeps its pools; torch's cap still applies
        _limits = None
    return n


@contextmanager
def single_torch_thread(enabled: bool = True):
    """Run the block with torch on one intra-op thread, then restore the count.

    For loops of many small tensor operations (a registration on a working-size mesh: each op
    tens of microseconds): handing such work to a second thread costs as much as it saves
    when the machine is quiet and several times more when it is busy. The count is the calling
    thread's (OpenMP keeps it per thread), so raced registrations in Python threads each set
    and restore their own; blocks nest. ``enabled=False`` leaves the count alone.
    """
    if not enabled:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
