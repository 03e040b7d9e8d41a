"""Scale-out on a Ray cluster (the ``[ray]`` extra): a Ray Data UDF and a resumable file job.

``embed_dataset(ds)`` adds embeddings to a Ray dataset; ``run_ray_embed_job(input, out_dir)``
(``metaeol embed --ray``) embeds a file into parquet shards, exactly once and resumable.
Importing this package does not import Ray.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MetaEOLEmbedder", "RayJobReport", "embed_dataset", "run_ray_embed_job"]

_HOMES = {
    "MetaEOLEmbedder": "metaeol.ray.embedder",
    "embed_dataset": "metaeol.ray.embedder",
    "RayJobReport": "metaeol.ray.job",
    "run_ray_embed_job": "metaeol.ray.job",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'metaeol.ray' has no attribute {name!r}")
