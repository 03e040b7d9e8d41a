"""Read texts from .txt, .jsonl, .csv and .parquet files, in chunks.

Every reader yields ``(row_id, text_or_error)`` pairs: a row that is not a string (a
null, a number, a broken JSON line) comes back as a :class:`BadRow` instead of stopping
the whole file. A UTF-8 byte-order mark at the start of a text file is skipped.
:func:`fingerprint` hashes a file and checks, before anything is embedded, that a text
file is UTF-8 text throughout; :func:`chunk_digests` and :func:`rows_digest` let a job check
that what it reads later is still what it planned on.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from metaeol.text import lone_surrogate

SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class BadRow:
    reason: str


Row = tuple[int, "str | BadRow"]
T = TypeVar("T")


class InputError(ValueError):
    """The input file cannot be read as asked."""


def check_count(value: object, name: str) -> int:
    """``value`` if it is a whole number of at least 1 (a size or count option), else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def text_or_bad(value: object, column: str) -> "str | BadRow":
    """The value if it is text (valid Unicode), else a :class:`BadRow` saying what it is."""
    if isinstance(value, str):
        at = lone_surrogate(value)
        if at is not None:
            return BadRow(f"column {column!r} holds a lone surrogate {value[at]!r} at character {at}, "
                          "not valid Unicode text")
        return value
    if value is None:
        return BadRow(f"column {column!r} is missing or null")
    return BadRow(f"column {column!r} holds {type(value).__name__}, not text")


_TEXT_ENCODING = "utf-8-sig"  # UTF-8, skipping a byte-order mark at the start
_BLOCK = 1 << 20


def _txt(path: Path, column: str) -> Iterator["str | BadRow"]:
    with path.open(encoding=_TEXT_ENCODING, errors="strict", newline="") as handle:
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
    with path.open(encoding=_TEXT_ENCODING) as handle:
        for line in handle:
            yield jsonl_text(line, column)


def allow_long_csv_fields() -> None:
    """Let the csv module read a field of any length (its default limit is 131,072 characters):
    a long text is a row to embed (and truncate), not a malformed file."""
    csv.field_size_limit(2**31 - 1)


def _csv(path: Path, column: str) -> Iterator["str | BadRow"]:
    allow_long_csv_fields()
    with path.open(encoding=_TEXT_ENCODING, newline="") as handle:
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


def _check_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise InputError(f"{path}: unsupported input type {suffix!r}; use one of {SUFFIXES}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return suffix


def _not_text(path: Path, data: bytes, offset: int, line: int, problem: str) -> InputError:
    hint = ""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        hint = "; the file looks like UTF-16: convert it to UTF-8"
    return InputError(f"{path}: not valid UTF-8 text: {problem} at line {line} (byte {offset}){hint}")


def fingerprint(path: str | Path) -> str:
    """The sha256 of the file's bytes, read in one streaming pass that also checks that a
    .txt/.jsonl/.csv file is UTF-8 text: the first invalid byte or NUL byte raises
    :class:`InputError` naming its line and byte offset."""
    path = Path(path)
    text = _check_path(path) != ".parquet"
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = newlines = 0  # bytes and line ends before the current block
    first = b""
    try:
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
                first = first or block[:4]
                if text:
                    _check_block(path, decoder, block, offset, newlines, first)
                    newlines += block.count(b"\n")
                offset += len(block)
            if text:
                _check_block(path, decoder, b"", offset, newlines, first, final=True)
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
    return digest.hexdigest()


def _check_block(path: Path, decoder, block: bytes, offset: int, newlines: int, first: bytes,
                 final: bool = False) -> None:
    pending = decoder.getstate()[0]  # an incomplete sequence carried over: never holds a newline
    try:
        decoder.decode(block, final)
    except UnicodeDecodeError as err:
        start = offset - len(pending) + err.start
        line = newlines + err.object[: err.start].count(b"\n") + 1
        raise _not_text(path, first, start, line, err.reason) from None
    nul = block.find(b"\0")
    if nul >= 0:
        line = newlines + block[:nul].count(b"\n") + 1
        raise _not_text(path, first, offset + nul, line, "a NUL byte (binary data?)")


def read_rows(path: str | Path, column: str = "text") -> Iterator[Row]:
    """``(row_id, text or BadRow)`` for every row of the file, in order."""
    path = Path(path)
    suffix = _check_path(path)
    try:
        yield from enumerate(_READERS[suffix](path, column))
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err}") from err


def rows_digest(values: Iterable["str | BadRow"]) -> str:
    """A sha256 of a run of rows as read (texts and bad rows), to check a later read against."""
    digest = hashlib.sha256()
    for value in values:
        kind, data = (b"B", value.reason) if isinstance(value, BadRow) else (b"T", value)
        raw = data.encode("utf-8")
        digest.update(kind + len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def chunk_digests(path: str | Path, column: str, size: int) -> list[tuple[int, str]]:
    """``(rows, rows_digest)`` of each run of ``size`` rows of the file, in order (one pass)."""
    return [(len(chunk), rows_digest(text for _, text in chunk)) for chunk in chunked(read_rows(path, column), size)]


def file_state(path: str | Path) -> tuple[int, int, int]:
    """``(inode, size, mtime in ns)``: differs once the file is edited or replaced."""
    stat = Path(path).stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def check_unchanged(path: str | Path, state: tuple[int, int, int] | None) -> None:
    """:class:`InputError` unless ``path`` still has the :func:`file_state` it had before it was read."""
    if file_state(path) != state:
        raise InputError(f"{path} changed while it was being read; rerun once it no longer changes")


def chunked(rows: Iterator[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` rows (the last may be shorter)."""
    while chunk := list(islice(rows, size)):
        yield chunk
