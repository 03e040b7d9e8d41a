"""One intra-op thread for tests of tiny models: a second thread only adds contention on a shared CPU."""

from typing import Iterator

import torch


def single_thread() -> Iterator[None]:
    """Generator body for a fixture: torch runs on one thread, then the previous count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
