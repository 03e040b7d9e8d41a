"""Continuous batching: the work of concurrent requests merged into short shared passes.

A request is a list of inputs (one text each). On the worker thread (the model never runs on
the event loop) each request is first expanded into units of work with a token cost each (the
server's units are prompt rows, one per template and input: :meth:`MetaEOL.prompt_rows
<metaeol.encoder.MetaEOL.prompt_rows>`; without an ``expand`` function the units are the inputs
themselves). A batch first takes whole the requests that can finish in it, fewest units first,
within ``FINISH_SHARE`` of its token budget (so a one-sentence request that arrives behind a large
one is answered with the next batch instead of spilling into a later one when batches are tight);
the rest of the batch is built round-robin over the waiting requests, one unit per request per
round, until it holds its token budget, counted as the engine counts a pass: units x the costliest
unit (its tokens, when ``packed``: the engine's passes then compute no padding); so every waiting
request gets units into every batch and a huge request cannot starve small ones. Each request gives the costliest of its units that the batch's width already pays for
(else its cheapest): a batch then holds units of similar cost, with little padding (results do
not depend on which units share a batch). A request is answered
when its last unit is computed.

The budget is what the model computes in about ``target_batch_s`` seconds, from the measured
rate of the batches so far, capped by ``max_batch_tokens`` (the server passes four engine
passes) and rounded down to whole engine passes of ``pass_tokens`` when it holds one or more
(a pass costs a fixed time however few its tokens; the first batch takes ``first_batch_tokens``). A
request that arrives while a large one is being computed therefore joins the next batch, about
a second later, instead of waiting for the large request to finish. A batch starts
as soon as its budget is full or its oldest request has waited ``max_wait_s``. If a batch fails,
each of its requests is retried alone, and only the requests that fail again get the error.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


FINISH_SHARE = 0.75
"""The part of a batch's token budget that requests which can finish in it may take whole; the
rest is shared round-robin, so a stream of small requests cannot starve a large one."""


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
    """What one batch (one ``run`` call) did (for metrics)."""

    inputs: float  # inputs' worth of work: each unit counts as its share of its input
    units: int
    tokens: int
    requests: int
    seconds: float
    failed_requests: int


@dataclass
class Work:
    """What a request becomes on the worker thread: units computed by the batcher's ``run``,
    each with its token cost, and ``finish``, which turns the units' results (in unit order)
    into the request's answer (one row per input)."""

    units: list[Any]
    costs: list[int]
    finish: Callable[[np.ndarray], np.ndarray] | None = None


class _Job:
    """One request: its inputs, its work once expanded, its units not yet in a batch, and its future."""

    __slots__ = ("texts", "tokens", "work", "pending", "pending_costs", "future", "arrived", "done", "results",
                 "finished")

    def __init__(self, texts: Sequence[str], tokens: Sequence[int]):
        self.texts = list(texts)
        self.tokens = list(tokens)
        self.work: Work | None = None  # set on the worker thread (see Batcher._expand)
        self.pending: list[int] = []  # units not yet in a batch, cheapest first ...
        self.pending_costs: list[int] = []  # ... and their costs
        self.future: Future = Future()
        self.arrived = time.monotonic()
        self.done = 0  # units computed
        self.results: np.ndarray | None = None
        self.finished = False

    def expanded(self, work: Work) -> None:
        self.work = work
        self.pending = sorted(range(len(work.costs)), key=work.costs.__getitem__)
        self.pending_costs = [work.costs[i] for i in self.pending]

    def best_fit(self, width: int) -> int:
        """The position in ``pending`` of the costliest unit that costs at most ``width`` (it
        adds no padding to a batch that wide), else of the cheapest unit."""
        return max(bisect.bisect_right(self.pending_costs, width) - 1, 0)

    def take(self, position: int) -> tuple[int, int]:
        """Remove a pending unit: its index and cost."""
        return self.pending.pop(position), self.pending_costs.pop(position)

    @property
    def units(self) -> int:
        return len(self.work.units) if self.work is not None else len(self.texts)

    @property
    def has_pending(self) -> bool:
        return self.work is None or bool(self.pending)

    @property
    def unscheduled_tokens(self) -> int:
        return sum(self.tokens) if self.work is None else sum(self.pending_costs)

    @property
    def unscheduled_inputs(self) -> int:
        pending = self.units if self.work is None else len(self.pending)
        return math.ceil(len(self.texts) * pending / self.units)


class Batcher:
    """Queue of embedding requests served by one worker thread calling ``run(units)``.

    ``run`` must return one row per unit, independent of which units share a call; ``expand``
    (run on the worker thread) turns a request's texts into its :class:`Work` (default: the
    texts are the units, costing the token counts given to :meth:`submit`).
    """

    def __init__(self, run: Callable[[list[Any]], np.ndarray], *, max_batch_tokens: int, max_wait_s: float,
                 max_queue: int, target_batch_s: float | None = None, first_batch_tokens: int = 64,
                 pass_tokens: int | None = None, expand: Callable[[list[str]], Work] | None = None,
                 on_batch: Callable[[BatchReport], None] | None = None):
        if max_batch_tokens < 1 or max_queue < 1 or max_wait_s < 0 or first_batch_tokens < 1:
            raise ValueError("max_batch_tokens, max_queue and first_batch_tokens must be >= 1 and max_wait_s >= 0")
        if pass_tokens is not None and pass_tokens < 1:
            raise ValueError("pass_tokens must be >= 1 (or None: budgets are not rounded to passes)")
        if target_batch_s is not None and target_batch_s <= 0:
            raise ValueError("target_batch_s must be > 0 (or None: every batch takes max_batch_tokens)")
        self._run_units = run
        self._expand_texts = expand
        self.max_batch_tokens = max_batch_tokens
        self.target_batch_s = target_batch_s
        self.first_batch_tokens = first_batch_tokens
        self.pass_tokens = pass_tokens
        self.packed = False  # whether ``run`` computes no padding (the engine's packed passes)
        self._token_rate: float | None = None  # input tokens per second, smoothed
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []  # jobs with unscheduled inputs, oldest first
        self._open = 0  # accepted jobs not finished
        self._queued_tokens = 0
        self._closing = False
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
        """Inputs whose work is not all in a batch yet (a request's inputs count in proportion)."""
        with self._cond:
            return sum(job.unscheduled_inputs for job in self._waiting)

    @property
    def batch_budget(self) -> int:
        """Input tokens the next batch may hold (see the module docstring)."""
        if self.target_batch_s is None:
            return self.max_batch_tokens
        if self._token_rate is None:
            return min(self.first_batch_tokens, self.max_batch_tokens)
        budget = max(1, min(self.max_batch_tokens, int(self._token_rate * self.target_batch_s)))
        if self.pass_tokens is None or budget < self.pass_tokens:
            return budget
        return budget // self.pass_tokens * self.pass_tokens  # a part-filled pass costs a whole pass's fixed time

    def _retry_after(self) -> int:
        if not self._token_rate:
            return 1
        return max(1, min(60, math.ceil(self._queued_tokens / self._token_rate)))

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
            self.run_batch()

    def run_batch(self) -> bool:
        """Expand the new requests, build one batch and compute it (the worker thread's step,
        also what ``bench/batcher_sim.py`` drives on a simulated clock); False if nothing was waiting."""
        with self._cond:
            new = [job for job in self._waiting if job.work is None]
        self._expand(new)
        with self._cond:
            batch = self._take()
        if batch:
            self._execute(batch)
        return bool(batch)

    def _expand(self, jobs: list[_Job]) -> None:
        """Each new job's work (outside the lock: tokenizing is not instant); a job whose
        expansion fails gets the error."""
        for job in jobs:
            try:
                work = (self._expand_texts(job.texts) if self._expand_texts is not None
                        else Work(list(job.texts), list(job.tokens)))
                if len(work.units) != len(work.costs) or not work.units:
                    raise RuntimeError(f"expand gave {len(work.units)} units and {len(work.costs)} costs")
            except Exception as err:  # noqa: BLE001 - this request cannot be computed
                self._fail(job, err)
                continue
            with self._cond:
                if job in self._waiting:
                    self._queued_tokens += sum(work.costs) - sum(job.tokens)
                job.expanded(work)

    def _cost(self, units: int, costliest: int, tokens: int) -> int:
        """A batch's cost as the engine counts its passes: its tokens when they are packed, else
        units x the costliest unit."""
        return tokens if self.packed else units * costliest

    def _take_finishing(self, budget: int) -> tuple[list[tuple[_Job, int]], int, int]:
        """All pending units of the jobs that can finish in this batch, fewest units first, while
        the batch's padded cost stays within the budget and their tokens within ``FINISH_SHARE``
        of it: the batch, its tokens and its costliest unit."""
        batch: list[tuple[_Job, int]] = []
        used, costliest = 0, 0
        for job in sorted((job for job in self._waiting if job.work is not None and job.pending),
                          key=lambda job: len(job.pending)):
            tokens, width = sum(job.pending_costs), max(costliest, job.pending_costs[-1])
            if (self._cost(len(batch) + len(job.pending), width, used + tokens) > budget
                    or used + tokens > FINISH_SHARE * budget):
                continue
            batch += [(job, index) for index in job.pending]
            job.pending, job.pending_costs = [], []
            used, costliest = used + tokens, width
        return batch, used, costliest

    def _take(self) -> list[tuple[_Job, int]]:
        """The jobs that can finish in this batch first (:meth:`_take_finishing`), then
        round-robin over the waiting jobs, one unit each per round, while the batch's padded cost
        (units x the costliest unit) is within the budget; each job gives the costliest of its
        units that the batch's width already pays for (else its cheapest), so a batch holds units
        of similar cost. A job that got no unit because the budget ran out comes first in
        the next batch."""
        for job in [job for job in self._waiting if job.future.cancelled()]:  # their clients gave up
            self._unqueue(job)
            self._finish(job)
        budget = self.batch_budget
        batch, used, costliest = self._take_finishing(budget)
        added = True
        while added:
            added = False
            for job in self._waiting:
                if job.work is None or not job.pending:
                    continue
                position = job.best_fit(costliest)
                cost = job.pending_costs[position]
                if batch and self._cost(len(batch) + 1, max(costliest, cost), used + cost) > budget:
                    continue
                index, cost = job.take(position)
                batch.append((job, index))
                used += cost
                costliest = max(costliest, cost)
                added = True
        # rotate: jobs this batch left out (the budget ran out before their turn) start the next one
        served = {id(job) for job, _ in batch}
        left = [job for job in self._waiting if job.has_pending]
        self._waiting = [job for job in left if id(job) not in served] + [job for job in left if id(job) in served]
        self._queued_tokens -= used
        return batch

    def _execute(self, batch: list[tuple[_Job, int]]) -> None:
        started = time.perf_counter()
        self._running_since = time.monotonic()
        failed = 0
        try:
            self._deliver(batch, self._run_units([job.work.units[i] for job, i in batch]))
        except Exception:  # noqa: BLE001 - isolate the request(s) that break the batch
            failed = self._isolate(batch)
        seconds = time.perf_counter() - started
        with self._cond:
            self._running_since = None
            ok = failed < len({id(job) for job, _ in batch})
            self.last_batch = LastBatch(time.monotonic(), ok)
            if ok:
                token_rate = sum(job.work.costs[i] for job, i in batch) / max(seconds, 1e-6)
                self._token_rate = token_rate if self._token_rate is None else 0.7 * self._token_rate + 0.3 * token_rate
        if self._on_batch is not None:
            self._on_batch(BatchReport(inputs=sum(len(job.texts) / job.units for job, _ in batch), units=len(batch),
                                       tokens=sum(job.work.costs[i] for job, i in batch),
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
                self._deliver(part, self._run_units([job.work.units[i] for job, i in part]))
            except Exception as err:  # noqa: BLE001 - this request is the bad one
                failed += 1
                self._fail(part[0][0], err)
        return failed

    def _deliver(self, batch: list[tuple[_Job, int]], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if len(vectors) != len(batch):
            raise RuntimeError(f"run returned {len(vectors)} rows for {len(batch)} units")
        for row, (job, i) in zip(vectors, batch):
            if job.finished:
                continue
            if job.results is None:
                job.results = np.empty((job.units,) + row.shape, dtype=row.dtype)
            job.results[i] = row
            job.done += 1
            if job.done == job.units:
                self._answer(job)

    def _answer(self, job: _Job) -> None:
        """Resolve a job whose units are all computed with its finished results."""
        try:
            result = job.results if job.work.finish is None else job.work.finish(job.results)
        except Exception as err:  # noqa: BLE001 - this request's results cannot be finished
            self._fail(job, err)
            return
        self._resolve(job, lambda f: f.set_result(result))

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
            self._queued_tokens -= job.unscheduled_tokens
            job.pending, job.pending_costs = [], []

    def _finish(self, job: _Job) -> None:
        """Count a job as answered (call with the lock held)."""
        if not job.finished:
            job.finished = True
            self._open -= 1
