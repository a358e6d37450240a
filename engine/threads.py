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


# meshes up to this many faces (working copies) get the single-thread stages: their operations
# are too small to split (measured at 6k faces: a registration step 25 ms on one thread, 57 ms
# on two beside another job)
SINGLE_THREAD_FACES = 40_000


@contextmanager
def single_thread(enabled: bool = True, blas: bool = True):
    """Run the block with torch on one intra-op thread and the BLAS / OpenMP pools on one thread,
    then restore them.

    For the stages that work on working-size meshes (a few thousand vertices: eigen solves,
    feature nearest neighbours, the registration's small tensor operations): handing such work
    to a second thread saves little when the machine is quiet and costs several times more
    when it is busy (measured on 2 cores beside two busy processes: the alignment's eigen
    solve 0.7 s -> 10 s with the pools, the registration 3.2 s -> 5.1 s). The torch count is
    the calling thread's (OpenMP keeps it per thread), so raced registrations in Python
    threads each set and restore their own; blocks nest. The BLAS limit is the process's: a
    helper thread passes ``blas=False`` and runs inside a block of the thread that joins it
    (restored from two threads, the limits would depend on which restores last).
    ``enabled=False`` changes nothing.
    """
    if not enabled:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        # OpenMP's limit is the calling thread's (the k-d trees' queries of the registration)
        limiter = threadpool_limits(limits=1, user_api=None if blas else "openmp")
    except ImportError:  # BLAS keeps its pools
        pass
    try:
        yield
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        torch.set_num_threads(saved)
