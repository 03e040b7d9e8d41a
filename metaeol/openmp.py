"""Keep the model's thread the only one with an OpenMP thread pool.

Each thread that starts a parallel region (torch's CPU ops) gets its own OpenMP pool of worker
threads, kept for the thread's lifetime. When a process holds more pool threads than it has
cores, libgomp (torch's OpenMP on Linux) cuts its spin-wait from 300,000 turns to 100, so every
parallel op wakes its workers through the kernel. A process that encoded on its main thread and
then serves from a worker thread ran ``encode`` there 25-40% slower (SmolLM2, 2 cores); freeing
the main thread's pool when serving starts removes that. ``metaeol serve`` itself loads the model
without a parallel op, so its main thread has no pool to free.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

_RUNTIMES = ("libgomp", "libomp", "libiomp5")  # GNU, LLVM, Intel
_PAUSE_SOFT = 1  # omp_pause_soft (OpenMP 5.0)


def loaded_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes loaded in this process (Linux; empty elsewhere)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    paths = {line.split(maxsplit=5)[-1].strip() for line in maps.read_text().splitlines() if "/" in line}
    return sorted(p for p in paths if Path(p).name.startswith(_RUNTIMES))


def release_thread_pool() -> bool:
    """Free the calling thread's OpenMP worker threads (``omp_pause_resource_all``); a later
    parallel op on this thread builds a new pool. True if a runtime released it."""
    released = False
    for path in loaded_runtimes():
        pause = getattr(ctypes.CDLL(path), "omp_pause_resource_all", None)
        if pause is not None:
            pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
            released |= pause(_PAUSE_SOFT) == 0
    return released
