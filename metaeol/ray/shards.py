"""Deterministic shards of an input file: fixed row ranges any worker can read on its own.

:func:`plan_input` makes one pass over the file on the driver: it checks the text column,
hashes the bytes, counts the rows, digests each shard's rows and, for line formats, notes the
byte offset where each shard starts. :func:`read_shard` then reads one shard's rows (``str`` or
:class:`BadRow`, as :mod:`metaeol.readers` gives them) from that offset, or from the parquet row
groups, and refuses them unless they are the rows that were planned.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Iterator

from metaeol.readers import (SUFFIXES, BadRow, InputError, allow_long_csv_fields, check_count, check_unchanged,
                             chunked, file_state, jsonl_text, rows_digest, text_or_bad)

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Shard:
    """Rows ``start`` (inclusive) to ``stop`` (exclusive); line formats start reading at byte ``offset``;
    ``digest`` is the :func:`~metaeol.readers.rows_digest` of its rows when planned."""

    index: int
    start: int
    stop: int
    offset: int
    digest: str


@dataclass(frozen=True)
class InputPlan:
    path: str
    format: str
    column: str
    sha256: str
    size: int
    rows: int
    shard_size: int
    digests: tuple[str, ...]  # rows_digest of each shard
    offsets: tuple[int, ...] = ()  # byte offset of each shard's first row (line formats)
    header: tuple[str, ...] = ()  # csv field names

    def shards(self) -> list[Shard]:
        return [
            Shard(i, start, min(start + self.shard_size, self.rows), self.offsets[i] if self.offsets else 0,
                  self.digests[i])
            for i, start in enumerate(range(0, self.rows, self.shard_size))
        ]

    def describe(self) -> dict:
        """What identifies the input (the path may move, the content may not change)."""
        return {"path": self.path, "format": self.format, "column": self.column, "sha256": self.sha256,
                "size": self.size, "rows": self.rows}


class _HashingLines:
    """Binary lines of a file with their byte offsets, hashing every byte read."""

    def __init__(self, handle: BinaryIO, start: int = 0):
        self.digest = hashlib.sha256()
        self.handle = handle
        self.position = start

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for line in self.handle:
            self.digest.update(line)
            offset = self.position
            self.position += len(line)
            yield offset, line


def _decode(line: bytes, path: str, offset: int) -> str:
    """The line as text, without a byte-order mark at the start of the file; :class:`InputError`
    unless it is UTF-8 text (as in :mod:`metaeol.readers`)."""
    if offset == 0 and line.startswith(codecs.BOM_UTF8):
        line, offset = line[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    nul = line.find(b"\0")
    if nul >= 0:
        raise InputError(f"{path}: not valid UTF-8 text (a NUL byte (binary data?) at byte {offset + nul})")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid UTF-8 text ({err.reason} at byte {offset + err.start})") from err


def _csv_rows(lines: _HashingLines, path: str) -> Iterator[tuple[int, list[str]]]:
    """``(byte offset of the row, fields)`` for every non-blank csv row (records may span lines)."""
    allow_long_csv_fields()
    reader = csv.reader(_decode(line, path, offset) for offset, line in lines)
    while True:
        start = lines.position
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise InputError(f"{path}: malformed CSV near byte {start}: {err}") from err
        if fields:
            yield start, fields


def _line_values(lines: _HashingLines, fmt: str, column: str, header: tuple[str, ...],
                 path: str) -> Iterator[tuple[int, "str | BadRow"]]:
    """``(byte offset, text or BadRow)`` for each row read from ``lines`` (after a csv header)."""
    if fmt == ".csv":
        index = header.index(column)
        for offset, fields in _csv_rows(lines, path):
            yield offset, text_or_bad(fields[index] if index < len(fields) else None, column)
        return
    for offset, line in lines:
        text = _decode(line, path, offset)
        yield offset, jsonl_text(text, column) if fmt == ".jsonl" else text.rstrip("\r\n")


def _plan_lines(path: Path, fmt: str, column: str,
                shard_size: int) -> tuple[str, int, list[str], list[int], tuple[str, ...]]:
    digests: list[str] = []
    offsets: list[int] = []
    header: tuple[str, ...] = ()
    rows = 0
    with path.open("rb") as handle:
        lines = _HashingLines(handle)
        if fmt == ".csv":
            first = next(_csv_rows(lines, str(path)), None)
            header = tuple(first[1]) if first else ()
            if column not in header:
                raise InputError(f"{path}: no column {column!r} (columns: {list(header) or None})")
        for chunk in chunked(_line_values(lines, fmt, column, header, str(path)), shard_size):
            if rows == 0 and fmt == ".jsonl" and isinstance(chunk[0][1], BadRow):
                raise InputError(f"{path}: the first record has no text under {column!r} ({chunk[0][1].reason})")
            offsets.append(chunk[0][0])
            digests.append(rows_digest(value for _, value in chunk))
            rows += len(chunk)
        return lines.digest.hexdigest(), rows, digests, offsets, header


def _plan_parquet(path: Path, column: str, shard_size: int) -> tuple[str, int, list[str]]:
    import pyarrow.parquet as pq

    from metaeol.ray.embedder import check_text_schema

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError ... for a file that is not parquet
        raise InputError(f"{path}: not a parquet file: {err}") from err
    schema = parquet.schema_arrow
    check_text_schema(schema.names, schema.types, column, str(path))
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    values = (text_or_bad(value, column) for batch in parquet.iter_batches(columns=[column])
              for value in batch.column(0).to_pylist())
    digests = [rows_digest(chunk) for chunk in chunked(values, shard_size)]
    return digest.hexdigest(), parquet.metadata.num_rows, digests


def plan_input(path: str | os.PathLike, column: str, shard_size: int) -> InputPlan:
    """Check, hash and count ``path`` (.parquet, .jsonl, .csv, .txt) and cut it into shards."""
    path = Path(path).resolve()
    fmt = path.suffix.lower()
    if fmt not in SUFFIXES:
        raise InputError(f"{path}: unsupported input type {fmt!r}; use one of {SUFFIXES}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    check_count(shard_size, "shard_size")
    state = file_state(path)
    offsets: list[int] = []
    header: tuple[str, ...] = ()
    if fmt == ".parquet":
        sha256, rows, digests = _plan_parquet(path, column, shard_size)
    else:
        sha256, rows, digests, offsets, header = _plan_lines(path, fmt, column, shard_size)
    check_unchanged(path, state)
    if rows == 0:
        raise InputError(f"{path}: no rows to embed")
    return InputPlan(str(path), fmt, column, sha256, state[1], rows, shard_size, tuple(digests), tuple(offsets),
                     header)


def _parquet_values(plan: InputPlan, shard: Shard) -> list[object]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(plan.path)
    groups, first, row = [], None, 0
    for index in range(parquet.metadata.num_row_groups):
        count = parquet.metadata.row_group(index).num_rows
        if row < shard.stop and row + count > shard.start:
            groups.append(index)
            first = row if first is None else first
        row += count
    table = parquet.read_row_groups(groups, columns=[plan.column])
    return table.column(0).slice(shard.start - first, shard.stop - shard.start).to_pylist()


def read_shard(plan: InputPlan, shard: Shard) -> list["str | BadRow"]:
    """The texts (or :class:`BadRow`\\ s) of one shard, in row order; :class:`InputError` unless
    they are the rows that were planned (the file changed since)."""
    changed = f"{plan.path} changed since the job was planned"
    try:
        if os.stat(plan.path).st_size != plan.size:
            raise InputError(f"{changed} (its size differs)")
        if plan.format == ".parquet":
            rows = [text_or_bad(v, plan.column) for v in _parquet_values(plan, shard)]
        else:
            with open(plan.path, "rb") as handle:
                handle.seek(shard.offset)
                lines = _HashingLines(handle, shard.offset)
                values = _line_values(lines, plan.format, plan.column, plan.header, plan.path)
                rows = [value for _, value in islice(values, shard.stop - shard.start)]
    except OSError as err:  # removed or unreadable since
        raise InputError(f"{changed} ({err.strerror or err})") from err
    if rows_digest(rows) != shard.digest:
        raise InputError(f"{changed}: rows {shard.start}-{shard.stop - 1} (shard {shard.index}) are not the "
                         "rows it planned on")
    return rows
