"""Embeddings as an Arrow column that every supported pyarrow writes to and reads from parquet."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

# A variable-size list, not a fixed-size one: pyarrow before 25 cannot write a fixed-size list
# column holding nulls to parquet, and pyarrow 25 writes it but cannot read it back. A list whose
# null rows are empty works in every version. The fixed width is in the file's metadata.
EMBEDDING_TYPE = pa.list_(pa.float32())


def embedding_array(vectors: np.ndarray, bad: Sequence[bool]) -> pa.ListArray:
    """Row ``i`` is ``vectors[i]`` (flattened), or null where ``bad[i]``."""
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(bad), -1)
    bad = np.asarray(bad, dtype=bool)
    lengths = np.where(bad, 0, vectors.shape[1])
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # int64: pa.array below refuses, not wraps, past 2**31
    values = pa.array(vectors[~bad].reshape(-1), type=pa.float32())
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values, type=EMBEDDING_TYPE,
                                    mask=pa.array(bad, type=pa.bool_()))
