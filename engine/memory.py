"""Will a match fit in memory? Checked before the work starts, so that a mesh too large for the
machine stops with one line naming the size that would fit, not a swap storm or a killed process.

The estimate is linear in the vertex counts (the stages up to the registration run on working
copies of bounded size; the full meshes carry the surface fit and the maps). Its coefficients
are peak resident memory measured with ``python -m engine.bench --scale`` (README, "Meshes at
their real size"), rounded up.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .errors import InputError

# a match process at the working size: Python, torch, the working copies and their solvers,
# the pose model and its renders (measured 0.66-0.70 GB at 5k -> 5k with the keypoints
# detected, 0.37-0.39 GB with them cached; rounded up)
BASE_BYTES = 800 * 2**20
# per full-resolution vertex: the target's clean copy, search tree and surface-fit arrays
# (measured 1.9 KB from 5k -> 5k to 5k -> 320k); the source's: the surface fit's sparse factors
# and per-vertex frames (measured 4.1 KB from 5k -> 5k to 80k -> 5k); both rounded up
TARGET_BYTES_PER_VERTEX = 3 * 1024
SOURCE_BYTES_PER_VERTEX = 6 * 1024


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory since it started its program; None where the
    platform gives no way to read it (meta then leaves the figure out).

    Linux: the address space's high-water mark (``VmHWM``): ``ru_maxrss`` survives ``exec`` and
    so reports the parent's size in a process started by fork + exec (a spawned benchmark
    worker, the engine worker under Blender). Windows: the peak working set
    (``GetProcessMemoryInfo``). Elsewhere (macOS, BSD) ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "win32":
        return _windows_peak_working_set()
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def _windows_peak_working_set() -> int | None:
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
                    ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                    ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                    ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                    ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]

    try:
        counters = Counters()
        counters.cb = ctypes.sizeof(Counters)
        process = ctypes.windll.kernel32.GetCurrentProcess()
        if not ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
            return None
        return int(counters.PeakWorkingSetSize)
    except (AttributeError, OSError):
        return None


def _windows_available_bytes() -> int | None:
    import ctypes

    class Status(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    try:
        status = Status()
        status.dwLength = ctypes.sizeof(Status)
        if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return None
        return int(status.ullAvailPhys)
    except (AttributeError, OSError):
        return None


def available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, capped by a cgroup limit
    (Linux), the available physical memory (Windows); None where neither can be read (macOS:
    the check is then skipped)."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        return _windows_available_bytes() if sys.platform == "win32" else None
    try:  # cgroup v2 (containers, CI runners)
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
        if limit != "max":
            free = min(free, int(limit) - used) if free is not None else int(limit) - used
    except (OSError, ValueError):
        pass
    return free


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory a match of meshes this size needs, in bytes."""

    n_source: int
    n_target: int

    @property
    def bytes(self) -> int:
        return BASE_BYTES + SOURCE_BYTES_PER_VERTEX * self.n_source + TARGET_BYTES_PER_VERTEX * self.n_target

    def largest_fitting(self, free: int, role: str) -> int:
        """Vertices ``role`` ("source" / "target") could have, the other mesh as it is, within ``free`` bytes."""
        if role == "source":
            room = free - BASE_BYTES - TARGET_BYTES_PER_VERTEX * self.n_target
            return max(0, room // SOURCE_BYTES_PER_VERTEX)
        room = free - BASE_BYTES - SOURCE_BYTES_PER_VERTEX * self.n_source
        return max(0, room // TARGET_BYTES_PER_VERTEX)


def _gb(b: float) -> str:
    return f"{b / 2**30:.1f} GB"


def check_match_memory(n_source: int, n_target: int, free: int | None = None) -> MemoryEstimate:
    """Raise InputError (one line) when a match of meshes this size would not fit in ``free``
    bytes (default: what the machine has now); returns the estimate."""
    est = MemoryEstimate(int(n_source), int(n_target))
    free = available_bytes() if free is None else free
    if free is None or est.bytes <= free:
        return est
    role = "target" if TARGET_BYTES_PER_VERTEX * n_target >= SOURCE_BYTES_PER_VERTEX * n_source else "source"
    n = n_target if role == "target" else n_source
    fit = est.largest_fitting(free, role)
    advice = f"decimate the {role} to about {fit:,} vertices or close other programs" if fit >= 1000 else "close other programs"
    raise InputError(f"{role}: {n:,} vertices: the match needs about {_gb(est.bytes)} and {_gb(free)} is free; "
                     f"{advice} (config memory_check=false skips this check)")

