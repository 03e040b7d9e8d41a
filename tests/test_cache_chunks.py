"""The vector store is filled in chunks that each hold about ``max_chunk_seconds`` of encoding, so
a stopped run loses little finished work."""

from __future__ import annotations

import numpy as np

import metaeol.cache as cache_module
from metaeol.cache import TemplateStateCache
from metaeol.store import VectorStore


def test_chunks_hold_about_max_chunk_seconds_of_work(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cache_module.time, "perf_counter", lambda: clock[0])
    sizes = []

    def compute(sentences, layers):  # one second of "encoding" per sentence
        sizes.append(len(sentences))
        clock[0] += len(sentences)
        return np.ones((len(sentences), 2, len(layers), 4), dtype=np.float32)

    with VectorStore(tmp_path / "v.db") as store:
        cache = TemplateStateCache(store, "model", ["t1", "t2"], compute, first_chunk=4, max_chunk_seconds=10)
        report = cache.fill([f"sentence {i}" for i in range(40)], [3])
        assert sizes == [4, 10, 10, 10, 6] and report.chunks == 5 and report.encoded == 40
        cache.max_chunk_seconds = 1  # never below first_chunk
        sizes.clear()
        cache.fill([f"other {i}" for i in range(10)], [3])
        assert sizes == [4, 4, 2]
