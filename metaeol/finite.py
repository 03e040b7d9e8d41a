"""Finiteness of embeddings: a NaN or an inf (an overflowing model, a booster with a huge
scale) is an error for its row, never a vector to store."""

from __future__ import annotations

import numpy as np

NOT_FINITE = "the embedding is not finite (NaN or inf): the model or a booster setting overflowed"


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``vectors`` (N x ..., any float dtype) that hold a NaN or an inf."""
    vectors = np.asarray(vectors)
    return np.flatnonzero(~np.isfinite(vectors.reshape(len(vectors), -1)).all(axis=1))
