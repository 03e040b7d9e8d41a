"""The vector store is filled in chunks that each hold about ``max_chunk_seconds`` of encoding, so
a stopped run loses little finished work."""

from __future__ import annotations

import numpy as np

import metaeol.cache as cache_module
from metaeol.cache import TemplateStateCache
from metaeol.store import VectorStore, sentence_hash


def test_chunks_hold_about_max_chunk_seconds_of_work(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cache_module.time, "perf_counter", lambda: clock[0])
    sizes = []

    def compute(sentences, layers, templates):  # one second of "encoding" per sentence
        sizes.append(len(sentences))
        clock[0] += len(sentences)
        return np.ones((len(sentences), len(templates), len(layers), 4), dtype=np.float32)

    with VectorStore(tmp_path / "v.db") as store:
        cache = TemplateStateCache(store, "model", ["t1", "t2"], compute, first_chunk=4, max_chunk_seconds=10)
        report = cache.fill([f"sentence {i}" for i in range(40)], [3])
        assert sizes == [4, 10, 10, 10, 6] and report.chunks == 5 and report.encoded == 40
        cache.max_chunk_seconds = 1  # never below first_chunk
        sizes.clear()
        cache.fill([f"other {i}" for i in range(10)], [3])
        assert sizes == [4, 4, 2]


def test_a_sentence_is_encoded_only_in_the_templates_it_lacks(tmp_path):
    asked = []

    def compute(sentences, layers, templates):  # template j of sentence "s<i>" is i * 10 + j; "bad" overflows
        asked.append((list(sentences), list(templates)))
        return np.array([[[[np.nan if s == "bad" else int(s[1:]) * 10 + j] * 2] * len(layers) for j in templates]
                         for s in sentences], dtype=np.float32)

    with VectorStore(tmp_path / "v.db") as store:
        TemplateStateCache(store, "model", ["t0", "t2"], lambda s, l, t: compute(s, l, [(0, 2)[k] for k in t])).fill(
            ["s1", "s2"], [3])
        asked.clear()
        full = TemplateStateCache(store, "model", ["t0", "t1", "t2"], lambda s, l, t: compute(s, l, [(0, 1, 2)[k] for k in t]))
        report = full.fill(["s1", "s2", "s3"], [3])
        assert sorted(asked) == [(["s1", "s2"], [1]), (["s3"], [0, 1, 2])]
        assert (report.cached, report.encoded, report.prompts_encoded) == (0, 3, 5)
        assert full(["s2", "s3"], [3])[:, :, 0, 0].tolist() == [[20, 21, 22], [30, 31, 32]]
        # non-finite states of a partly stored sentence come back whole (stored and computed templates), unstored
        store.put("model", ["t0"], [3], [sentence_hash("bad")], np.full((1, 1, 1, 2), 7.0, np.float32))
        states = full(["bad"], [3])
        assert states[0, 0, 0].tolist() == [7.0, 7.0] and np.isnan(states[0, 1:]).all()
        assert not store.complete_templates("model", ["t1"], [3], [sentence_hash("bad")]).any()
