"""``GET /health``: liveness of the model's worker, answered without queueing behind batches."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from metaeol.serve.batcher import Batcher


class Health:
    """Is the worker alive and making progress?

    In order: a dead worker, or a batch running for more than ``stall_s``, is unhealthy; the
    outcome of a batch that ended less than ``max_age_s`` ago decides; a running or waiting
    batch means progress; only an idle server runs a probe encode, one at a time, shared by
    every concurrent check (so a check never waits behind queued work, nor adds to it).
    """

    def __init__(self, batcher: Batcher, probe: Callable[[], Awaitable[str | None]], *, max_age_s: float,
                 stall_s: float):
        self.batcher = batcher
        self.probe = probe
        self.max_age_s = max_age_s
        self.stall_s = stall_s
        self._probing: asyncio.Future | None = None

    async def problem(self) -> str | None:
        """None when healthy, else why not (no internal detail: the route is unauthenticated)."""
        batcher = self.batcher
        if not batcher.alive:
            return "the batching worker is not running"
        running = batcher.running_for()
        if running is not None and running > self.stall_s:
            return f"no batch has finished for {running:.0f} s (a batch has run longer than {self.stall_s:g} s)"
        last = batcher.last_batch
        if last is not None and time.monotonic() - last.ended < self.max_age_s:
            return None if last.ok else "the last batch failed (the server log has the error)"
        if running is not None or batcher.queued_inputs:
            return None
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self.probe())
        return await asyncio.shield(self._probing)
