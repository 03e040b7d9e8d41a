"""Embed a file of texts into .npy or .parquet, in resumable chunks.

Each finished chunk is written atomically to ``OUTPUT.parts/``; the final file is
assembled from the parts (also atomically) and the parts are removed. A killed run
restarted with the same command skips the chunks already written. Rows that are not
text, and rows whose embedding is not finite, get NaN embeddings (null in parquet) and are
listed in ``OUTPUT.errors.jsonl``. The whole input is checked (UTF-8 text) and hashed before
anything is computed, and each chunk's rows are digested; a chunk that reads otherwise later
(the file was edited during the run) stops the job before it is embedded. A run resumes only
parts made from the same input content and settings. One run at a time writes an output: the
job holds ``OUTPUT.lock`` (see :mod:`metaeol.output_lock`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from metaeol.finite import NOT_FINITE, nonfinite_rows
from metaeol.layers import is_single_layer
from metaeol.output_lock import OutputError, output_lock
from metaeol.readers import (BadRow, InputError, check_count, check_unchanged, chunk_digests, chunked, file_state,
                             fingerprint, read_rows, rows_digest)

OUTPUT_SUFFIXES = (".npy", ".parquet")


@dataclass
class JobReport:
    rows: int = 0
    bad_rows: int = 0  # not text
    nonfinite: int = 0  # embedded to a NaN or inf: an error for the row
    chunks_done: int = 0
    chunks_resumed: int = 0
    truncated: int = 0


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _manifest(input_path: Path, input_sha256: str, column: str, chunk_size: int,
              settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": str(input_path.resolve()),
        "input_sha256": input_sha256,
        "column": column,
        "chunk_size": chunk_size,
        "settings": settings,
    }


def _prepare_parts(parts: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    path = parts / "manifest.json"
    if parts.exists() and (overwrite or not path.is_file()):
        shutil.rmtree(parts)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != manifest:
            changed = sorted(k for k in {*previous, *manifest} if previous.get(k) != manifest.get(k))
            what = ", ".join("input content" if k == "input_sha256" else k for k in changed)
            raise InputError(
                f"{parts} holds an unfinished run with other input or settings (changed: {what}); "
                "rerun with the same input and command to resume, or pass --overwrite to start over"
            )
        return
    parts.mkdir(parents=True)
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True)))


def _part_paths(parts: Path, index: int) -> tuple[Path, Path]:
    return parts / f"part-{index:06d}.npy", parts / f"part-{index:06d}.errors.json"


def _encode_chunk(encode: Callable[[list[str]], np.ndarray], rows, shape: tuple[int, ...]):
    """The chunk's vectors (NaN for a row that is not text or whose embedding is not finite) and
    its errors, in row order."""
    good = [i for i, (_, text) in enumerate(rows) if not isinstance(text, BadRow)]
    out = np.full((len(rows), *shape), np.nan, dtype=np.float32)
    reasons = {i: text.reason for i, (_, text) in enumerate(rows) if isinstance(text, BadRow)}
    if good:
        vectors = np.asarray(encode([rows[i][1] for i in good]), dtype=np.float32)
        out[good] = vectors
        for j in nonfinite_rows(vectors):
            out[good[j]] = np.nan
            reasons[good[j]] = NOT_FINITE
    errors = [{"row": rows[i][0], "error": reasons[i]} for i in sorted(reasons)]
    return out, errors


def _part_errors(parts: Path, count: int) -> list[dict]:
    return [error for i in range(count) for error in json.loads(_part_paths(parts, i)[1].read_text())]


def _write_errors(output: Path, errors: list[dict]) -> None:
    """``OUTPUT.errors.jsonl`` (removed when there are none), written before the output itself so
    that an output is never left without its errors file."""
    error_file = output.with_name(output.name + ".errors.jsonl")
    if errors:
        _atomic_write(error_file, lambda tmp: tmp.write_text("".join(json.dumps(e) + "\n" for e in errors)))
    elif error_file.exists():
        error_file.unlink()


def _assemble(parts: Path, count: int, output: Path, embedding_shape: tuple[int, ...], errors: list[dict]) -> None:
    part_files = [_part_paths(parts, i) for i in range(count)]
    if output.suffix.lower() == ".npy":
        total = sum(np.load(p, mmap_mode="r").shape[0] for p, _ in part_files)

        def write(tmp: Path) -> None:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, *embedding_shape))
            start = 0
            for p, _ in part_files:
                chunk = np.load(p)
                array[start : start + len(chunk)] = chunk
                start += len(chunk)
            array.flush()
            del array

        _atomic_write(output, write)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from metaeol.vector_arrays import embedding_array

        bad = {e["row"]: e["error"] for e in errors}
        width = int(np.prod(embedding_shape))

        def write(tmp: Path) -> None:
            writer = None
            start = 0
            for p, _ in part_files:
                chunk = np.load(p).reshape(-1, width)
                ids = np.arange(start, start + len(chunk))
                start += len(chunk)
                vectors = embedding_array(chunk, [int(i) in bad for i in ids])
                table = pa.table({
                    "row_id": pa.array(ids, type=pa.int64()),
                    "embedding": vectors,
                    "error": pa.array([bad.get(int(i)) for i in ids], type=pa.string()),
                })
                if writer is None:
                    metadata = {b"embedding_shape": json.dumps(list(embedding_shape)).encode()}
                    writer = pq.ParquetWriter(tmp, table.schema.with_metadata(metadata))
                writer.write_table(table)
            writer.close()

        _atomic_write(output, write)


def run_embed_job(
    encoder,
    input_path: str | Path,
    output: str | Path,
    *,
    column: str = "text",
    chunk_size: int = 10_000,
    batch_size: int = 32,
    normalize: bool = False,
    overwrite: bool = False,
    on_chunk: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> JobReport:
    """Embed every row of ``input_path`` into ``output`` (.npy or .parquet).

    ``on_start(total_rows)`` is called once the input is checked, ``on_chunk(rows)``
    after each chunk (computed or resumed). Raises :class:`InputError` for bad input,
    :class:`~metaeol.output_lock.OutputError` when the output cannot be written, and
    :class:`~metaeol.output_lock.OutputLocked` while another run writes ``output``.
    """
    input_path, output = Path(input_path), Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{output}: unsupported output type; use one of {OUTPUT_SUFFIXES}")
    check_count(chunk_size, "chunk_size")
    check_count(batch_size, "batch_size")
    if output.resolve() == input_path.resolve():
        raise InputError(f"{output} is the input; choose another output")
    with output_lock(output):
        try:
            return _run(encoder, input_path, output, column, chunk_size, batch_size, normalize, overwrite,
                        on_chunk, on_start)
        except OutputError:
            raise
        except OSError as err:  # writing a part or the output failed
            raise OutputError(f"cannot write {output}: {err.strerror or err} ({err.filename})") from err


def _run(encoder, input_path: Path, output: Path, column: str, chunk_size: int, batch_size: int,
         normalize: bool, overwrite: bool, on_chunk: Callable[[int], None] | None,
         on_start: Callable[[int], None] | None) -> JobReport:
    state = file_state(input_path) if input_path.is_file() else None  # else fingerprint says what is wrong
    input_sha256 = fingerprint(input_path)  # the whole input is checked before anything is computed
    rows = read_rows(input_path, column)
    first = next(rows, None)  # checks the column
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; pass --overwrite to replace it")
    parts = output.with_name(output.name + ".parts")
    settings = {**encoder.describe(), "normalize": normalize}
    settings.pop("device", None)
    _prepare_parts(parts, _manifest(input_path, input_sha256, column, chunk_size, settings), overwrite)
    planned = chunk_digests(input_path, column, chunk_size)
    check_unchanged(input_path, state)
    if on_start is not None:
        on_start(sum(count for count, _ in planned))

    layers = None if is_single_layer(encoder.layer) else encoder.layers
    shape = (encoder.embedding_dim,) if layers is None else (len(layers), encoder.embedding_dim)

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=batch_size, show_progress_bar=False, normalize_embeddings=normalize)

    report = JobReport()
    truncated_before = encoder.truncated_count
    all_rows = rows if first is None else _prepend(first, rows)
    index = -1
    for index, chunk in enumerate(chunked(all_rows, chunk_size)):
        if index >= len(planned) or rows_digest(text for _, text in chunk) != planned[index][1]:
            raise _changed(input_path, chunk[0][0], chunk[-1][0], index)
        report.rows += len(chunk)
        array_path, error_path = _part_paths(parts, index)
        if array_path.is_file():
            report.chunks_resumed += 1
        else:
            vectors, errors = _encode_chunk(encode, chunk, shape)
            _atomic_write(error_path, lambda tmp: tmp.write_text(json.dumps(errors)))
            _atomic_write(array_path, lambda tmp: _save_npy(tmp, vectors))
            report.chunks_done += 1
        if on_chunk is not None:
            on_chunk(len(chunk))
    if index + 1 != len(planned):
        raise _changed(input_path, report.rows, sum(count for count, _ in planned) - 1, index + 1)
    errors = _part_errors(parts, index + 1)
    _write_errors(output, errors)
    if index >= 0:
        _assemble(parts, index + 1, output, shape, errors)
    else:
        _atomic_write(output, lambda tmp: _write_empty(tmp, output.suffix.lower(), shape))
    shutil.rmtree(parts)
    report.nonfinite = sum(e["error"] == NOT_FINITE for e in errors)
    report.bad_rows = len(errors) - report.nonfinite
    report.truncated = encoder.truncated_count - truncated_before
    return report


def _changed(input_path: Path, first: int, last: int, finished: int) -> InputError:
    return InputError(
        f"{input_path} changed while the job was running: rows {first}-{last} are not the rows it checked; "
        f"the {finished} chunks finished before are kept: restore the file and rerun to resume, "
        "or rerun with --overwrite to embed its new content"
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())


def _prepend(first, rest):
    yield first
    yield from rest


def _write_empty(tmp: Path, suffix: str, shape: tuple[int, ...]) -> None:
    if suffix == ".npy":
        _save_npy(tmp, np.empty((0, *shape), dtype=np.float32))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from metaeol.vector_arrays import EMBEDDING_TYPE

    pq.write_table(
        pa.table({
            "row_id": pa.array([], type=pa.int64()),
            "embedding": pa.array([], type=EMBEDDING_TYPE),
            "error": pa.array([], type=pa.string()),
        }),
        tmp,
    )

