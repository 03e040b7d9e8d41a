"""Read texts from .txt, .jsonl, .csv and .parquet files, in chunks.

Every reader yields ``(row_id, text_or_error)`` pairs: a row that is not a string (a
null, a number, a broken JSON line) comes back as a :class:`BadRow` instead of stopping
the whole file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class BadRow:
    reason: str


Row = tuple[int, "str | BadRow"]


class InputError(ValueError):
    """The input file cannot be read as asked."""


def text_or_bad(value: object, column: str) -> "str | BadRow":
    """The value if it is text, else a :class:`BadRow` saying what it is."""
    if isinstance(value, str):
        return value
    if value is None:
        return BadRow(f"column {column!r} is missing or null")
    return BadRow(f"column {column!r} holds {type(value).__name__}, not text")


def _txt(path: Path, column: str) -> Iterator["str | BadRow"]:
    with path.open(encoding="utf-8", errors="strict", newline="") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


def jsonl_text(line: str, column: str) -> "str | BadRow":
    """The text under ``column`` in one JSON-lines record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return BadRow(f"invalid JSON: {err.msg}")
    return text_or_bad(record.get(column) if isinstance(record, dict) else None, column)


def _jsonl(path: Path, column: str) -> Iterator["str | BadRow"]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield jsonl_text(line, column)


def _csv(path: Path, column: str) -> Iterator["str | BadRow"]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise InputError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
        for record in reader:
            yield text_or_bad(record.get(column), column)


def _parquet(path: Path, column: str) -> Iterator["str | BadRow"]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if column not in parquet.schema_arrow.names:
        raise InputError(f"{path}: no column {column!r} (columns: {parquet.schema_arrow.names})")
    for batch in parquet.iter_batches(columns=[column], batch_size=8192):
        for value in batch.column(0).to_pylist():
            yield text_or_bad(value, column)


_READERS = {".txt": _txt, ".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}


def read_rows(path: str | Path, column: str = "text") -> Iterator[Row]:
    """``(row_id, text or BadRow)`` for every row of the file, in order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise InputError(f"{path}: unsupported input type {suffix!r}; use one of {SUFFIXES}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        yield from enumerate(_READERS[suffix](path, column))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err}") from err


def chunked(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Consecutive lists of ``size`` rows (the last may be shorter)."""
    while chunk := list(islice(rows, size)):
        yield chunk
