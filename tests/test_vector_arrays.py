"""The embedding column of parquet outputs (``metaeol embed``, the Ray job)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaeol.vector_arrays import EMBEDDING_TYPE, embedding_array


def test_bad_rows_are_null_and_the_rest_round_trip_through_parquet(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = embedding_array(vectors, [False, True, False, True])
    pq.write_table(pa.table({"embedding": column}), tmp_path / "v.parquet")
    read = pq.read_table(tmp_path / "v.parquet").column("embedding")
    assert read.to_pylist() == [[0.0, 1.0, 2.0], None, [6.0, 7.0, 8.0], None]


def test_the_column_is_a_variable_size_list():
    # pyarrow < 25 refuses to write a fixed-size list column with nulls to parquet, and 25 cannot
    # read one back (apache/arrow#35692): the files must stay readable by every supported pyarrow.
    column = embedding_array(np.zeros((2, 4), dtype=np.float32), [True, False])
    assert column.type == EMBEDDING_TYPE and pa.types.is_list(column.type)
    assert column.null_count == 1 and column.offsets.to_pylist() == [0, 0, 4]  # a null row holds no floats


def test_several_layers_are_flattened_per_row():
    vectors = np.arange(8, dtype=np.float32).reshape(2, 2, 2)  # rows x layers x dim
    assert embedding_array(vectors, [False, False]).to_pylist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
