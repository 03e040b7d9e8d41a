"""Encode time of several encoders on the same sentences, measured alike."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

from metaeol.protocols import SentenceEncoder


def time_encoders(encoders: Mapping[str, SentenceEncoder], sentences: Sequence[str], *, repeats: int = 3,
                  batch_size: int = 32) -> dict[str, float]:
    """Best-of-``repeats`` seconds per sentence of each encoder on ``sentences``.

    Each encoder first encodes two sentences (a warm-up: prefix states, kernels); then every
    repeat runs every encoder once, in turn, so that load on the machine slows them alike."""
    if not sentences or repeats < 1:
        raise ValueError("timing needs at least one sentence and one repeat")
    items = list(sentences)
    for encoder in encoders.values():
        encoder.encode(items[:2], batch_size=batch_size, show_progress_bar=False)
    best = {name: float("inf") for name in encoders}
    for _ in range(repeats):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(items, batch_size=batch_size, show_progress_bar=False)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds / len(items) for name, seconds in best.items()}
