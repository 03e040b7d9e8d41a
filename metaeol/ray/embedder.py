"""The Ray Data UDF: one MetaEOL encoder per actor, adding ``text_sha256``, ``embedding`` and ``error``.

Rows whose text is not a string (a null), and rows whose embedding is not finite (NaN or inf),
keep their place with a null embedding and an ``error`` saying why, as ``metaeol embed`` does.
Every output table carries the encoder's configuration as JSON under the ``metaeol`` key of its
schema metadata, so ``Dataset.write_parquet`` writes it into each file.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa

from metaeol.finite import NOT_FINITE, nonfinite_rows
from metaeol.loading import DEFAULT_MODEL
from metaeol.readers import BadRow, InputError, check_count, text_or_bad
from metaeol.vector_arrays import embedding_array

if TYPE_CHECKING:
    import ray.data

OUTPUT_COLUMNS = ("text_sha256", "embedding", "error")
METADATA_KEY = b"metaeol"


def comparable_config(describe: dict[str, Any]) -> dict[str, Any]:
    """An encoder configuration without what may differ between actors of one job (device, versions)."""
    return {k: v for k, v in describe.items() if k not in ("device", "versions")}


class MetaEOLEmbedder:
    """Callable class for ``Dataset.map_batches``: embeds ``column`` of pyarrow batches.

    One MetaEOL encoder is loaded per actor. ``threads`` sets ``torch.set_num_threads``
    (the CPU cores an actor may use); the other keyword arguments go to :class:`MetaEOL`.
    """

    def __init__(
        self,
        column: str = "text",
        *,
        model: Any = DEFAULT_MODEL,
        threads: int | None = None,
        normalize: bool = False,
        encode_batch_size: int = 32,
        **encoder_options: Any,
    ):
        import torch

        from metaeol import MetaEOL

        if threads is not None:
            torch.set_num_threads(threads)
        self.column = column
        self.normalize = normalize
        self.encode_batch_size = encode_batch_size
        self.encoder = MetaEOL(model, **encoder_options)
        layers = None if isinstance(self.encoder.layer, int) else self.encoder.layers
        self.embedding_shape = [self.encoder.embedding_dim] if layers is None else [len(layers), self.encoder.embedding_dim]
        self.config = {
            "encoder": self.encoder.describe(),
            "normalize": normalize,
            "column": column,
            "embedding_shape": self.embedding_shape,
        }

    @property
    def width(self) -> int:
        """Floats per embedding (layers x dimension)."""
        return int(np.prod(self.embedding_shape))

    def embed(self, values: Sequence[object]) -> tuple[pa.Array, pa.Array, pa.Array]:
        """``(text_sha256, embedding, error)`` arrays for texts (or :class:`BadRow`\\ s / other values)."""
        texts = [v if isinstance(v, BadRow) else text_or_bad(v, self.column) for v in values]
        good = [i for i, t in enumerate(texts) if isinstance(t, str)]
        reasons = [t.reason if isinstance(t, BadRow) else None for t in texts]
        vectors = np.zeros((len(texts), self.width), dtype=np.float32)
        if good:
            encoded = self.encoder.encode(
                [texts[i] for i in good], batch_size=self.encode_batch_size, show_progress_bar=False,
                normalize_embeddings=self.normalize,
            )
            vectors[good] = np.asarray(encoded, dtype=np.float32).reshape(len(good), self.width)
            for j in nonfinite_rows(vectors[good]):
                reasons[good[j]] = NOT_FINITE  # a null row: embedding_array drops its floats
        embedding = embedding_array(vectors, [r is not None for r in reasons])
        hashes = pa.array([hashlib.sha256(t.encode("utf-8")).hexdigest() if isinstance(t, str) else None
                           for t in texts], type=pa.string())
        return hashes, embedding, pa.array(reasons, type=pa.string())

    def with_config(self, table: pa.Table, **extra: Any) -> pa.Table:
        """``table`` with this encoder's configuration (and ``extra``) in its schema metadata."""
        metadata = dict(table.schema.metadata or {})
        metadata[METADATA_KEY] = json.dumps({**self.config, **extra}, sort_keys=True).encode()
        return table.replace_schema_metadata(metadata)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.column not in batch.column_names:
            raise InputError(f"no column {self.column!r} (columns: {batch.column_names})")
        columns = self.embed(batch.column(self.column).to_pylist())
        for name, array in zip(OUTPUT_COLUMNS, columns):
            batch = batch.append_column(name, array)
        return self.with_config(batch)


def check_text_schema(names: Sequence[str], types: Sequence[pa.DataType], column: str, where: str) -> None:
    """Raise :class:`InputError` unless ``column`` exists, holds text (or nulls) and no output column exists."""
    if column not in names:
        raise InputError(f"{where}: no column {column!r} (columns: {list(names)})")
    kind = types[list(names).index(column)]
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise InputError(f"{where}: column {column!r} holds {kind}, not text")
    taken = [name for name in OUTPUT_COLUMNS if name in names]
    if taken:
        raise InputError(f"{where}: already has the output column(s) {taken}; rename or drop them first")


def actor_resources(num_gpus: float | None, threads: int, device: str | None) -> dict[str, float]:
    """``num_cpus``/``num_gpus`` for one actor: one GPU each when the cluster has GPUs (and no CPU device is forced)."""
    import ray

    if not ray.is_initialized():
        ray.init()
    if num_gpus is None:
        on_cpu = device is not None and str(device).startswith("cpu")
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 and not on_cpu else 0.0
    return {"num_cpus": threads, "num_gpus": num_gpus}


def embed_dataset(
    ds: "ray.data.Dataset",
    column: str = "text",
    *,
    model: Any = DEFAULT_MODEL,
    num_actors: int = 1,
    batch_size: int = 256,
    threads_per_actor: int = 1,
    num_gpus: float | None = None,
    normalize: bool = False,
    encode_batch_size: int = 32,
    **encoder_options: Any,
) -> "ray.data.Dataset":
    """``ds`` with ``text_sha256``, ``embedding`` (list of float32, null for a bad row) and ``error`` columns added.

    Runs on a fixed pool of ``num_actors`` actors, each with one encoder, ``threads_per_actor``
    CPUs and ``num_gpus`` GPUs (default: 1 when the cluster has GPUs, else 0). ``batch_size``
    is rows per actor call; ``encode_batch_size`` sentences per forward pass. Other rows'
    columns (e.g. a ``row_id``) pass through unchanged. The encoder's configuration is in
    each written file's schema metadata (key ``metaeol``). Lazy, like every Ray transform.
    """
    from ray.data import ActorPoolStrategy

    for name, value in (("num_actors", num_actors), ("batch_size", batch_size),
                        ("threads_per_actor", threads_per_actor), ("encode_batch_size", encode_batch_size)):
        check_count(value, name)
    schema = ds.schema()
    if schema is None:
        raise InputError("the dataset is empty")
    check_text_schema(schema.names, schema.types, column, "dataset")
    return ds.map_batches(
        MetaEOLEmbedder,
        fn_constructor_kwargs={
            "column": column, "model": model, "threads": threads_per_actor, "normalize": normalize,
            "encode_batch_size": encode_batch_size, **encoder_options,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=num_actors),
        **actor_resources(num_gpus, threads_per_actor, encoder_options.get("device")),
    )
