"""Non-finite vectors (NaN or inf, from a model or booster setting that overflows) are errors,
never results: every surface that keeps or scores vectors checks them here."""

from __future__ import annotations

from typing import Sequence

import numpy as np

NOT_FINITE = "the embedding is not finite (NaN or inf): the model or a booster setting overflowed"


class NonFiniteVectors(ValueError):
    """Some vectors hold NaN or inf; ``rows`` are their indices along the first axis."""

    def __init__(self, message: str, rows: list[int]):
        super().__init__(message)
        self.rows = rows


def nonfinite_rows(vectors: np.ndarray) -> list[int]:
    """Indices (first axis) of the rows that hold any NaN or inf."""
    array = np.asarray(vectors)
    if array.ndim == 0 or array.shape[0] == 0:
        return []
    return np.flatnonzero(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)).tolist()


def check_finite(vectors: np.ndarray, sentences: Sequence[str], settings: str = "") -> None:
    """Raise :class:`NonFiniteVectors` naming how many rows of ``vectors`` (one per sentence) are
    not finite, the first such sentence, and ``settings`` (what produced them)."""
    rows = nonfinite_rows(vectors)
    if not rows:
        return
    first = sentences[rows[0]]
    shown = first if len(first) <= 60 else first[:57] + "..."
    where = f" with {settings}" if settings else ""
    raise NonFiniteVectors(
        f"{len(rows)} of {len(sentences)} vectors are not finite (NaN or inf){where}, first for sentence "
        f"{rows[0]} {shown!r}: the model overflows at this dtype or booster setting; try float32 or a smaller "
        "booster scale", rows)
