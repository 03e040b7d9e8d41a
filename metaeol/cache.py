"""The vector store as a stage of the encoding pipeline.

:class:`TemplateStateCache` wraps the per-template step of an encoder — any callable
``(sentences, layers, templates) -> [N, T, L, D]`` — so that it reads what a
:class:`~metaeol.store.VectorStore` already holds and computes (and stores) only the
rest: a sentence stored under some of the templates is encoded in the others only.
``layers`` are resolved indices (``0..num_layers``, see :func:`metaeol.layers.resolve_layers`),
which are also the store's layer keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from metaeol.finite import check_finite, nonfinite_rows
from metaeol.store import VectorStore, sentence_hash

TemplateStates = Callable[[list[str], list[int]], np.ndarray]
"""``(sentences, resolved layers) -> [N, n_templates, n_layers, D]`` float32."""
SomeTemplateStates = Callable[[list[str], list[int], list[int]], np.ndarray]
"""``(sentences, resolved layers, template indices) -> [N, len(indices), n_layers, D]`` float32."""


@dataclass
class EncodeReport:
    """What one :meth:`TemplateStateCache.fill` did."""

    sentences: int = 0
    cached: int = 0
    encoded: int = 0
    prompts_encoded: int = 0
    chunks: int = 0
    seconds: float = 0.0
    peak_chunk_bytes: int = 0

    @property
    def seconds_per_prompt(self) -> float | None:
        return self.seconds / self.prompts_encoded if self.prompts_encoded else None


class TemplateStateCache:
    """Per-template states through a vector store.

    Args:
        store: where the vectors live.
        key: the store's model key (e.g. :attr:`MetaEOL.cache_key`): everything besides the
            template, the layer and the sentence that changes a vector.
        template_hashes: sha256 of each template, in the order ``compute`` returns them.
        compute: the step that encodes what the store lacks, given the template indices to encode.
        max_chunk_bytes: vectors held in memory before they are written (one transaction).
        first_chunk: sentences in the first chunk, which measures the vector size and speed.
        max_chunk_seconds: later chunks hold about this much encoding time at the measured
            speed (at least ``first_chunk`` sentences), so that a stopped run loses little work.
    """

    def __init__(self, store: VectorStore, key: str, template_hashes: Sequence[str], compute: SomeTemplateStates, *,
                 max_chunk_bytes: int = 256 * 2**20, first_chunk: int = 64, max_chunk_seconds: float = 300.0):
        self.store = store
        self.key = key
        self.template_hashes = list(template_hashes)
        self.compute = compute
        self.max_chunk_bytes = max_chunk_bytes
        self.first_chunk = first_chunk
        self.max_chunk_seconds = max_chunk_seconds

    def fill(self, sentences: Sequence[str], layers: Sequence[int],
             log: Callable[[str], None] = lambda message: None, *,
             unstored: dict[str, np.ndarray] | None = None) -> EncodeReport:
        """Encode what the store lacks (at any of ``layers``): per distinct sentence, only the
        templates it lacks, chunk by chunk, each chunk written in one transaction. Non-finite
        states are never stored: they raise :class:`~metaeol.finite.NonFiniteVectors`, or, given
        ``unstored``, are put there (by sentence hash, all templates) for the caller to report per row."""
        report = EncodeReport()
        layers = [int(k) for k in layers]
        unique = list(dict.fromkeys(sentences))
        report.sentences = len(unique)
        s_hashes = [sentence_hash(s) for s in unique]
        present = self.store.complete_templates(self.key, self.template_hashes, layers, s_hashes)
        report.cached = int(present.all(axis=1).sum())
        lacking: dict[tuple[int, ...], list[int]] = {}  # the templates a sentence lacks -> its sentences
        for i in np.flatnonzero(~present.all(axis=1)):
            lacking.setdefault(tuple(int(j) for j in np.flatnonzero(~present[i])), []).append(int(i))
        partial = sum(len(ids) for templates, ids in lacking.items() if len(templates) < len(self.template_hashes))
        log(f"store: {report.cached}/{len(unique)} sentences cached, {len(unique) - report.cached} to encode"
            + (f" ({partial} in only the templates they lack)" if partial else ""))
        start = time.perf_counter()
        for templates, todo in lacking.items():
            self._fill_templates(list(templates), [unique[i] for i in todo], [s_hashes[i] for i in todo], layers,
                                 report, start, log, unstored)
        report.seconds = time.perf_counter() - start
        return report

    def _fill_templates(self, templates: list[int], todo: list[str], hashes: list[str], layers: list[int],
                        report: EncodeReport, start: float, log: Callable[[str], None],
                        unstored: dict[str, np.ndarray] | None) -> None:
        """Encode ``templates`` of the sentences ``todo`` into the store, in chunks sized by time."""
        t_hashes = [self.template_hashes[j] for j in templates]
        group_start = time.perf_counter()
        chunk, pos = max(1, min(len(todo), self.first_chunk)), 0
        while pos < len(todo):
            ids = range(pos, min(pos + chunk, len(todo)))
            vectors = np.asarray(self.compute([todo[i] for i in ids], layers, templates), dtype=np.float32)
            expected = (len(ids), len(templates), len(layers))
            if vectors.shape[:3] != expected:
                raise RuntimeError(f"the encoder returned shape {vectors.shape}, expected [{', '.join(map(str, expected))}, D]")
            bad = nonfinite_rows(vectors)
            if bad and unstored is None:
                check_finite(vectors, [todo[i] for i in ids], self.key)
            keep, stored = list(range(len(ids))), vectors
            if bad:  # only then copy the chunk: the rows that are stored
                for row in bad:
                    unstored[hashes[ids[row]]] = self._all_templates(hashes[ids[row]], layers, templates, vectors[row])
                skipped = set(bad)
                keep = [row for row in keep if row not in skipped]
                stored = vectors[keep]
            self.store.put(self.key, t_hashes, layers, [hashes[ids[row]] for row in keep], stored)
            report.peak_chunk_bytes = max(report.peak_chunk_bytes, vectors.nbytes)
            report.chunks += 1
            report.prompts_encoded += len(ids) * len(templates)
            pos += len(ids)
            report.encoded += len(ids)
            per_sentence = max(1, vectors.nbytes // len(ids))
            seconds_per_sentence = (time.perf_counter() - group_start) / pos
            in_time = max(self.first_chunk, int(self.max_chunk_seconds / max(seconds_per_sentence, 1e-9)))
            chunk = max(1, min(self.max_chunk_bytes // per_sentence, 4096, in_time))
            if pos < len(todo):
                log(f"  encoded {report.encoded}/{report.sentences - report.cached} sentences "
                    f"({time.perf_counter() - start:.1f}s)")

    def _all_templates(self, s_hash: str, layers: list[int], templates: list[int], computed: np.ndarray) -> np.ndarray:
        """One sentence's states in every template: the stored ones and the ``computed`` ``templates``."""
        if len(templates) == len(self.template_hashes):
            return computed
        full = self.store.get(self.key, self.template_hashes, layers, [s_hash])[0][0]  # stored: the key is known
        full[templates] = computed
        return full

    def read(self, sentences: Sequence[str], layers: Sequence[int]) -> np.ndarray:
        """Stored states ``[N, T, L, D]``; every sentence must be in the store."""
        vectors, found = self.store.get(self.key, self.template_hashes, [int(k) for k in layers],
                                        [sentence_hash(s) for s in sentences])
        if not found.all():
            raise RuntimeError(f"{int((~found).sum())} vectors are missing from the store {self.store.path}")
        return vectors

    def __call__(self, sentences: list[str], layers: list[int]) -> np.ndarray:
        """Like ``compute``, but through the store: a repeated call costs no model time.
        Non-finite states are returned as computed (for per-row errors) but not stored."""
        unstored: dict[str, np.ndarray] = {}
        self.fill(sentences, layers, unstored=unstored)
        if not unstored:
            return self.read(sentences, layers)
        stored = [s for s in sentences if sentence_hash(s) not in unstored]
        out = np.empty((len(sentences), len(self.template_hashes), len(layers), next(iter(unstored.values())).shape[-1]),
                       dtype=np.float32)
        read = iter(self.read(stored, layers)) if stored else iter(())
        for i, s in enumerate(sentences):
            out[i] = unstored[h] if (h := sentence_hash(s)) in unstored else next(read)
        return out
