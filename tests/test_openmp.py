"""metaeol.openmp: freeing a thread's OpenMP workers (the server's loading thread lets them go)."""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch

from metaeol.openmp import loaded_runtimes, release_thread_pool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _settles_at(count: int, timeout_s: float = 5.0) -> bool:
    """Whether this process's thread count reaches ``count`` (exiting threads take a moment)."""
    deadline = time.monotonic() + timeout_s
    while _threads() != count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_release_frees_the_calling_threads_openmp_workers():
    assert loaded_runtimes()  # torch's own OpenMP runtime
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        x = torch.ones(2048, 2048)
        (x + x).sum()  # a parallel op: this thread's pool now has 2 workers
        with_pool = _threads()
        assert release_thread_pool()
        assert _settles_at(with_pool - 2)
        assert float((x + x).sum()) == 2 * 2048 * 2048  # a new pool serves the next parallel op
        assert _settles_at(with_pool)
    finally:
        torch.set_num_threads(before)
