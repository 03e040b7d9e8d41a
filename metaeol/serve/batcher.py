"""Continuous batching: merge the inputs of concurrent requests into short shared ``encode`` calls.

Requests are split into inputs (one text each). A single worker thread (the model never
runs on the event loop) builds each batch round-robin over the waiting requests, one
input per request per round, until the batch holds its token budget; so every waiting
request gets inputs into every batch and a huge request cannot starve small ones. A
request's inputs are scheduled shortest first: consecutive batches then hold inputs of
similar length, whose prompts the engine packs into passes with little padding (vectors do
not depend on which inputs share a batch).

The budget is what the model encodes in about ``target_batch_s`` seconds, from the measured
rate of the batches so far (capped by ``max_batch_tokens``; the first batch takes
``first_batch_tokens``). Batches are therefore short whatever the device: a request that
arrives while a large one is being encoded joins the next batch, a fraction of a second
later, instead of waiting for the large request to finish. A batch starts as soon as its
budget is full or its oldest input has waited ``max_wait_s``. If a batch fails, each of its
requests is retried alone, and only the requests that fail again get the error.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Closing(Exception):
    """The batcher is shutting down and accepts no new requests."""


@dataclass(frozen=True)
class LastBatch:
    """When the last ``encode`` call ended, and whether any of its requests got vectors."""

    ended: float  # time.monotonic()
    ok: bool


@dataclass
class BatchReport:
    """What one ``encode`` call did (for metrics)."""

    inputs: int
    tokens: int
    requests: int
    seconds: float
    failed_requests: int


class _Job:
    """One request: its inputs, how far they are scheduled and computed, and its future."""

    __slots__ = ("texts", "tokens", "order", "future", "arrived", "next", "done", "results", "finished")

    def __init__(self, texts: Sequence[str], tokens: Sequence[int]):
        self.texts = list(texts)
        self.tokens = list(tokens)
        self.order = sorted(range(len(self.tokens)), key=self.tokens.__getitem__)  # the order inputs are scheduled in
        self.future: Future = Future()
        self.arrived = time.monotonic()
        self.next = 0  # inputs put in a batch so far (order[:next])
        self.done = 0  # inputs computed
        self.results: np.ndarray | None = None
        self.finished = False

    @property
    def unscheduled_tokens(self) -> int:
        return sum(self.tokens[i] for i in self.order[self.next:])


class Batcher:
    """Queue of embedding requests served by one worker thread calling ``encode(texts)``.

    ``encode`` must return one row per text, independent of which texts share a call.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], *, max_batch_tokens: int, max_wait_s: float,
                 max_queue: int, target_batch_s: float | None = None, first_batch_tokens: int = 64,
                 on_batch: Callable[[BatchReport], None] | None = None):
        if max_batch_tokens < 1 or max_queue < 1 or max_wait_s < 0 or first_batch_tokens < 1:
            raise ValueError("max_batch_tokens, max_queue and first_batch_tokens must be >= 1 and max_wait_s >= 0")
        if target_batch_s is not None and target_batch_s <= 0:
            raise ValueError("target_batch_s must be > 0 (or None: every batch takes max_batch_tokens)")
        self._encode = encode
        self.max_batch_tokens = max_batch_tokens
        self.target_batch_s = target_batch_s
        self.first_batch_tokens = first_batch_tokens
        self._token_rate: float | None = None  # input tokens per second, smoothed
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []  # jobs with unscheduled inputs, oldest first
        self._open = 0  # accepted jobs not finished
        self._queued_inputs = 0
        self._queued_tokens = 0
        self._closing = False
        self._rate: float | None = None  # inputs per second, smoothed
        self.last_batch: LastBatch | None = None
        self._running_since: float | None = None  # time.monotonic() the running batch started
        self._thread = threading.Thread(target=self._run, name="metaeol-batcher", daemon=True)

    # -- client side (any thread) ---------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: Sequence[str], tokens: Sequence[int]) -> Future:
        """Queue one request; its future resolves to an array with one row per text."""
        if len(texts) != len(tokens) or not texts:
            raise ValueError("submit needs one token count per text, and at least one text")
        job = _Job(texts, tokens)
        with self._cond:
            if self._closing:
                raise Closing("the server is shutting down")
            if self._open >= self.max_queue:
                raise QueueFull(self._retry_after())
            self._open += 1
            self._waiting.append(job)
            self._queued_inputs += len(job.texts)
            self._queued_tokens += sum(job.tokens)
            self._cond.notify()
        return job.future

    def close(self) -> None:
        """Refuse new requests; the worker finishes every accepted one, then exits."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def running_for(self) -> float | None:
        """Seconds the running batch has taken so far; None when no batch runs."""
        since = self._running_since
        return None if since is None else time.monotonic() - since

    @property
    def open_requests(self) -> int:
        """Requests accepted and not yet answered (queued or being encoded)."""
        return self._open

    @property
    def queued_inputs(self) -> int:
        """Inputs waiting for a batch."""
        return self._queued_inputs

    @property
    def batch_budget(self) -> int:
        """Input tokens the next batch may hold (see the module docstring)."""
        if self.target_batch_s is None:
            return self.max_batch_tokens
        if self._token_rate is None:
            return min(self.first_batch_tokens, self.max_batch_tokens)
        return max(1, min(self.max_batch_tokens, int(self._token_rate * self.target_batch_s)))

    def _retry_after(self) -> int:
        if not self._rate:
            return 1
        return max(1, min(60, math.ceil(self._queued_inputs / self._rate)))

    # -- worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if not self._waiting:
                    return
                deadline = min(job.arrived for job in self._waiting) + self.max_wait_s
                while self._queued_tokens < self.batch_budget and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._take()
            if batch:
                self._execute(batch)

    def _take(self) -> list[tuple[_Job, int]]:
        """Round-robin over the waiting jobs, one input each per round, within the budget; a
        job that got no input because the budget ran out comes first in the next batch."""
        for job in [job for job in self._waiting if job.future.cancelled()]:  # their clients gave up
            self._unqueue(job)
            self._finish(job)
        batch: list[tuple[_Job, int]] = []
        used, budget = 0, self.batch_budget
        added = True
        while added and used < budget:
            added = False
            for job in self._waiting:
                if job.next == len(job.texts):
                    continue
                index = job.order[job.next]
                cost = job.tokens[index]
                if batch and used + cost > budget:
                    continue
                batch.append((job, index))
                job.next += 1
                used += cost
                added = True
        # rotate: jobs this batch left out (the budget ran out before their turn) start the next one
        served = {id(job) for job, _ in batch}
        left = [job for job in self._waiting if job.next < len(job.texts)]
        self._waiting = [job for job in left if id(job) not in served] + [job for job in left if id(job) in served]
        self._queued_inputs -= len(batch)
        self._queued_tokens -= used
        return batch

    def _execute(self, batch: list[tuple[_Job, int]]) -> None:
        started = time.perf_counter()
        self._running_since = time.monotonic()
        texts = [job.texts[i] for job, i in batch]
        failed = 0
        try:
            self._deliver(batch, self._encode(texts))
        except Exception:  # noqa: BLE001 - isolate the request(s) that break the batch
            failed = self._isolate(batch)
        seconds = time.perf_counter() - started
        with self._cond:
            self._running_since = None
            ok = failed < len({id(job) for job, _ in batch})
            self.last_batch = LastBatch(time.monotonic(), ok)
            if ok:
                rate = len(batch) / max(seconds, 1e-6)
                self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
                token_rate = sum(job.tokens[i] for job, i in batch) / max(seconds, 1e-6)
                self._token_rate = token_rate if self._token_rate is None else 0.7 * self._token_rate + 0.3 * token_rate
        if self._on_batch is not None:
            self._on_batch(BatchReport(inputs=len(batch), tokens=sum(job.tokens[i] for job, i in batch),
                                       requests=len({id(job) for job, _ in batch}), seconds=seconds,
                                       failed_requests=failed))

    def _isolate(self, batch: list[tuple[_Job, int]]) -> int:
        """Retry each request of a failed batch alone; fail only those that fail again."""
        members: dict[int, list[tuple[_Job, int]]] = {}
        for job, i in batch:
            members.setdefault(id(job), []).append((job, i))
        failed = 0
        for part in members.values():
            try:
                self._deliver(part, self._encode([job.texts[i] for job, i in part]))
            except Exception as err:  # noqa: BLE001 - this request is the bad one
                failed += 1
                self._fail(part[0][0], err)
        return failed

    def _deliver(self, batch: list[tuple[_Job, int]], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if len(vectors) != len(batch):
            raise RuntimeError(f"encode returned {len(vectors)} rows for {len(batch)} texts")
        for row, (job, i) in zip(vectors, batch):
            if job.finished:
                continue
            if job.results is None:
                job.results = np.empty((len(job.texts),) + row.shape, dtype=row.dtype)
            job.results[i] = row
            job.done += 1
            if job.done == len(job.texts):
                self._resolve(job, lambda f, r=job.results: f.set_result(r))

    def _fail(self, job: _Job, err: BaseException) -> None:
        with self._cond:
            self._unqueue(job)
        self._resolve(job, lambda f: f.set_exception(err))

    def _resolve(self, job: _Job, setter: Callable[[Future], None]) -> None:
        with self._cond:
            self._finish(job)
        try:
            setter(job.future)
        except InvalidStateError:  # cancelled by its client meanwhile
            pass

    def _unqueue(self, job: _Job) -> None:
        """Drop the job's unscheduled inputs from the queue (call with the lock held)."""
        if job in self._waiting:
            self._waiting.remove(job)
            self._queued_inputs -= len(job.texts) - job.next
            self._queued_tokens -= job.unscheduled_tokens
            job.next = len(job.texts)

    def _finish(self, job: _Job) -> None:
        """Count a job as answered (call with the lock held)."""
        if not job.finished:
            job.finished = True
            self._open -= 1
