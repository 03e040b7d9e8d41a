"""The dynamic batcher alone, with a recording encode function (no model, milliseconds)."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi")

from metaeol.serve.batcher import Batcher, Closing, QueueFull, Work  # noqa: E402


def vector_of(text: str) -> np.ndarray:
    """A deterministic per-text vector, so a misrouted row is visible."""
    return np.array([len(text), sum(map(ord, text)) % 997], dtype=np.float32)


class Recorder:
    """encode(): remembers every call; fails on texts containing 'poison'; can be held at a gate."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(10)
        self.calls.append(list(texts))
        if any("poison" in t for t in texts):
            raise ValueError("poisoned input")
        return np.stack([vector_of(t) for t in texts])


@pytest.fixture
def recorder():
    return Recorder()


def hold_worker(batcher: Batcher, recorder: Recorder) -> None:
    """Make the worker take a warm-up request and block in encode until ``recorder.gate`` opens."""
    recorder.gate.clear()
    batcher.submit(["warm-up"], [1])
    for _ in range(500):
        if batcher.queued_inputs == 0:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the worker never took the warm-up request")


@contextlib.contextmanager
def running(batcher: Batcher) -> Iterator[Batcher]:
    """The batcher started; closed and joined on the way out, whatever happened inside."""
    batcher.start()
    try:
        yield batcher
    finally:
        batcher.close()
        batcher.join(5)


def make(recorder, **kwargs) -> Batcher:
    options = dict(max_batch_tokens=1000, max_wait_s=0.05, max_queue=64)
    options.update(kwargs)
    batcher = Batcher(recorder, **options)
    batcher.start()
    return batcher


def test_concurrent_requests_share_one_call_and_get_their_own_rows(recorder):
    batcher = make(recorder, max_wait_s=0.3)
    requests = [[f"request {r} text {i}" for i in range(r + 1)] for r in range(5)]
    futures = [batcher.submit(texts, [3] * len(texts)) for texts in requests]
    for texts, future in zip(requests, futures):
        np.testing.assert_array_equal(future.result(5), np.stack([vector_of(t) for t in texts]))
    assert len(recorder.calls) == 1 and len(recorder.calls[0]) == 15
    batcher.close()
    batcher.join(5)
    assert not batcher.alive


def test_a_huge_request_does_not_starve_a_small_one(recorder):
    batcher = make(recorder, max_batch_tokens=10, max_wait_s=0)
    hold_worker(batcher, recorder)  # both requests then wait together
    huge = batcher.submit([f"huge {i}" for i in range(40)], [1] * 40)
    small = batcher.submit(["small"], [1])
    recorder.gate.set()
    small.result(5)
    huge.result(5)
    second_call = recorder.calls[1]  # the first call took the warm-up alone
    assert second_call[0] == "small" and len(second_call) == 10  # the small one can finish: it goes first
    assert [len(c) for c in recorder.calls] == [1, 10, 10, 10, 10, 1]  # 41 inputs, 10 tokens a batch


def test_a_request_that_can_finish_in_a_batch_takes_all_its_units_there(recorder):
    """Round-robin alone would give the 6-text request 5 of the 10 places beside the huge one and
    answer it a batch later; a request that fits takes its units whole, first."""
    batcher = make(recorder, max_batch_tokens=10, max_wait_s=0)
    hold_worker(batcher, recorder)
    huge = batcher.submit([f"huge {i}" for i in range(40)], [1] * 40)
    small = batcher.submit([f"small {i}" for i in range(6)], [1] * 6)
    recorder.gate.set()
    small.result(5)
    huge.result(5)
    assert [t for t in recorder.calls[1] if t.startswith("small")] == [f"small {i}" for i in range(6)]
    assert len(recorder.calls[1]) == 10


def test_requests_that_finish_first_leave_the_large_one_a_share_of_every_batch(recorder):
    batcher = make(recorder, max_batch_tokens=8, max_wait_s=0)
    hold_worker(batcher, recorder)
    huge = batcher.submit([f"huge {i}" for i in range(20)], [1] * 20)
    smalls = [batcher.submit([f"small {i}"], [1]) for i in range(12)]
    recorder.gate.set()
    for future in smalls:
        future.result(5)
    huge.result(5)
    first = recorder.calls[1]
    assert sum(t.startswith("small") for t in first) == 7  # 6 whole (FINISH_SHARE of 8 tokens), 1 round-robin
    assert any(t.startswith("huge") for t in first)


def test_a_failing_request_fails_alone(recorder):
    batcher = make(recorder, max_wait_s=0)
    hold_worker(batcher, recorder)
    good = batcher.submit(["fine", "also fine"], [1, 1])
    bad = batcher.submit(["poison pill"], [1])
    other = batcher.submit(["fine too"], [1])
    recorder.gate.set()
    np.testing.assert_array_equal(good.result(5), np.stack([vector_of("fine"), vector_of("also fine")]))
    np.testing.assert_array_equal(other.result(5), vector_of("fine too")[None])
    with pytest.raises(ValueError, match="poisoned"):
        bad.result(5)
    assert sorted(recorder.calls[1]) == ["also fine", "fine", "fine too", "poison pill"]  # the shared call that failed
    assert sorted(map(tuple, recorder.calls[2:])) == [("fine", "also fine"), ("fine too",), ("poison pill",)]
    assert batcher.open_requests == 0 and batcher.queued_inputs == 0


def test_full_queue_refuses_and_close_drains(recorder):
    batcher = make(recorder, max_queue=2, max_wait_s=0)
    hold_worker(batcher, recorder)
    second = batcher.submit(["two"], [1])
    with pytest.raises(QueueFull) as full:
        batcher.submit(["three"], [1])
    assert full.value.retry_after >= 1
    batcher.close()
    with pytest.raises(Closing):
        batcher.submit(["four"], [1])
    recorder.gate.set()
    batcher.join(5)
    assert second.result(0).shape == (1, 2) and len(recorder.calls) == 2
    assert not batcher.alive


def test_bad_arguments():
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_batch_tokens=0, max_wait_s=0, max_queue=1)
    batcher = Batcher(Recorder(), max_batch_tokens=10, max_wait_s=0, max_queue=1)
    with pytest.raises(ValueError, match="one token count per text"):
        batcher.submit(["a", "b"], [1])


class Timed:
    """encode(): 10 ms per text (a model with a fixed rate); remembers when each call ended."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        threading.Event().wait(0.01 * len(texts))
        self.calls.append(list(texts))
        return np.stack([vector_of(t) for t in texts])


def test_batches_are_sized_to_the_target_time():
    """At 10 ms per 1-token text and a 50 ms target, batches settle at about 5 texts, whatever the cap."""
    timed = Timed()
    batcher = Batcher(timed, max_batch_tokens=1000, max_wait_s=0.0, max_queue=8, target_batch_s=0.05,
                      first_batch_tokens=2)
    with running(batcher):
        batcher.submit([f"t{i}" for i in range(60)], [1] * 60).result(10)
        assert len(timed.calls[0]) == 2  # the first batch, before any rate is known
        assert all(3 <= len(call) <= 8 for call in timed.calls[3:-1]), [len(c) for c in timed.calls]
        assert 3 <= batcher.batch_budget <= 8


def test_budgets_of_a_pass_or_more_are_whole_passes():
    """The budget is rounded down to whole engine passes (a part-filled pass costs a whole pass's
    fixed time); a budget under one pass is kept."""
    batcher = Batcher(Timed(), max_batch_tokens=2048, max_wait_s=0.0, max_queue=8, target_batch_s=1.0,
                      pass_tokens=512)
    for rate, budget in ((700.0, 512), (1500.0, 1024), (5000.0, 2048), (300.0, 300)):
        batcher._token_rate = rate
        assert batcher.batch_budget == budget
    with pytest.raises(ValueError, match="pass_tokens"):
        Batcher(Timed(), max_batch_tokens=10, max_wait_s=0.0, max_queue=1, pass_tokens=0)


def test_a_small_request_is_answered_before_an_earlier_large_one_finishes():
    """Continuous batching: a 1-text request that arrives while a 200-text request is being
    encoded joins the next short batch instead of waiting for the large request."""
    timed = Timed()
    batcher = Batcher(timed, max_batch_tokens=4096, max_wait_s=0.0, max_queue=8, target_batch_s=0.05,
                      first_batch_tokens=4)
    with running(batcher):
        large = batcher.submit([f"big {i}" for i in range(200)], [1] * 200)  # about 2 s of encoding
        threading.Event().wait(0.2)
        small = batcher.submit(["small"], [1])
        np.testing.assert_array_equal(small.result(1.0)[0], vector_of("small"))  # well within the large one's 2 s
        assert not large.done()
        assert len(large.result(10)) == 200


def test_without_a_target_every_batch_takes_the_cap():
    timed = Timed()
    batcher = Batcher(timed, max_batch_tokens=30, max_wait_s=0.0, max_queue=8, target_batch_s=None)
    with running(batcher):
        batcher.submit([f"t{i}" for i in range(60)], [1] * 60).result(10)
        assert [len(call) for call in timed.calls] == [30, 30]


def test_a_job_left_out_by_a_small_budget_comes_first_next_time():
    """When the budget holds one input, batches alternate between the waiting requests instead of
    serving the oldest one to the end (a small request behind a large one is not starved)."""
    timed = Timed()
    batcher = Batcher(timed, max_batch_tokens=1, max_wait_s=0.0, max_queue=8, target_batch_s=None)
    timed_gate = threading.Event()
    original = timed.__call__
    batcher._run_units = lambda texts: (timed_gate.wait(5), original(texts))[1]
    with running(batcher):
        large = batcher.submit([f"big {i}" for i in range(6)], [1] * 6)
        threading.Event().wait(0.05)  # the worker holds big 0 at the gate
        small = batcher.submit(["small"], [1])
        timed_gate.set()
        small.result(5)
        large.result(5)
        order = [call[0] for call in timed.calls]
        assert order.index("small") <= 2, order


def test_a_request_is_scheduled_shortest_input_first_and_answered_in_input_order(recorder):
    batcher = make(recorder, max_batch_tokens=10)
    hold_worker(batcher, recorder)
    texts = ["ccccccc", "a", "eeeee", "bb", "dddd"]
    future = batcher.submit(texts, [7, 1, 5, 2, 4])
    recorder.gate.set()
    np.testing.assert_array_equal(future.result(10), np.stack([vector_of(t) for t in texts]))
    batches = recorder.calls[1:]
    assert batches == [["a", "bb"], ["dddd", "eeeee"], ["ccccccc"]]  # padded cost: units x the costliest <= 10
    batcher.close()
    batcher.join(5)


def test_packed_batches_are_counted_in_tokens():
    """When the engine packs rows, a batch holds its budget in tokens (the same texts in padded
    counting need three batches)."""
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=10, max_wait_s=0.0, max_queue=8)
    batcher.packed = True
    texts = ["ccccccc", "a", "bb"]
    future = batcher.submit(texts, [7, 1, 2])
    assert batcher.run_batch() is True and future.done()
    assert recorder.calls == [["a", "bb", "ccccccc"]]  # 10 tokens, 21 padded


class Rows:
    """A three-row-per-text expansion (as the server's prompt rows): run() computes units,
    finish() averages each text's three rows; texts containing 'broken' cannot be expanded."""

    def __init__(self):
        self.calls: list[list[tuple[str, int]]] = []

    def expand(self, texts: list[str]) -> Work:
        if any("broken" in t for t in texts):
            raise ValueError("cannot tokenize")
        units = [(t, k) for t in texts for k in range(3)]
        return Work(units, [len(t) + k for t, k in units], lambda rows: rows.reshape(len(texts), 3, -1).mean(1))

    def run(self, units: list[tuple[str, int]]) -> np.ndarray:
        threading.Event().wait(0.002 * len(units))
        self.calls.append(list(units))
        return np.stack([vector_of(t) + k for t, k in units])


def test_requests_are_computed_as_units_that_share_passes_within_a_padded_budget():
    rows = Rows()
    batcher = Batcher(rows.run, expand=rows.expand, max_batch_tokens=40, max_wait_s=0.05, max_queue=8)
    with running(batcher):
        texts = [["aaaa", "bb"], ["c"], ["dddddd", "e", "ff"]]
        futures = [batcher.submit(t, [1] * len(t)) for t in texts]
        for t, future in zip(texts, futures):
            np.testing.assert_allclose(future.result(5), np.stack([vector_of(x) + 1 for x in t]))  # mean of +0, +1, +2
        costs = [[len(t) + k for t, k in call] for call in rows.calls]
        assert all(len(c) * max(c) <= 40 for c in costs), costs
        assert any(len({t for t, _ in call}) > 1 for call in rows.calls)  # units of several texts shared a pass
        assert sorted(u for call in rows.calls for u in call) == sorted((x, k) for t in texts for x in t for k in range(3))


def test_a_small_request_is_done_when_its_units_are_while_a_large_one_runs():
    rows = Rows()
    batcher = Batcher(rows.run, expand=rows.expand, max_batch_tokens=60, max_wait_s=0.0, max_queue=8)
    with running(batcher):
        large = batcher.submit([f"big sentence {i}" for i in range(300)], [1] * 300)  # 900 units, about 2 s
        threading.Event().wait(0.2)
        small = batcher.submit(["small"], [1])
        np.testing.assert_allclose(small.result(1.0)[0], vector_of("small") + 1)
        assert not large.done()
        assert len(large.result(10)) == 300


def test_a_request_that_cannot_be_expanded_fails_alone():
    rows = Rows()
    batcher = Batcher(rows.run, expand=rows.expand, max_batch_tokens=100, max_wait_s=0.05, max_queue=8)
    with running(batcher):
        bad, good = batcher.submit(["broken"], [1]), batcher.submit(["fine"], [1])
        with pytest.raises(ValueError, match="cannot tokenize"):
            bad.result(5)
        np.testing.assert_allclose(good.result(5)[0], vector_of("fine") + 1)
        assert batcher.open_requests == 0 and batcher.queued_inputs == 0


def test_run_batch_steps_the_batcher_without_its_thread(recorder):
    """``run_batch`` is the worker's step (bench/batcher_sim.py drives it on a simulated clock)."""
    batcher = Batcher(recorder, max_batch_tokens=2, max_wait_s=0.0, max_queue=8)
    assert batcher.run_batch() is False
    future = batcher.submit(["a", "b", "c"], [1, 1, 1])
    assert batcher.run_batch() is True and not future.done()  # two of three inputs fit the budget
    assert batcher.run_batch() is True and future.done()
    np.testing.assert_array_equal(future.result(0), np.stack([vector_of(t) for t in "abc"]))
    assert batcher.run_batch() is False
