"""The identity of the weights that compute a vector, by content.

The vector store, the results files, the MTEB revision and the sentence-transformers save all key
vectors by this id (through :mod:`metaeol.settings`), so it must change whenever the weights do
and only then:

- a hub model: the commit it was loaded from (12 hex digits);
- local files (a GGUF file, or a folder's files): ``local-`` + a sha256 of their contents, so
  replaced weights get a new id while a byte-identical copy, a reinstall or a move keeps it;
- a model object passed in memory: ``params-`` + a sha256 of its parameters and buffers, since
  what it computes with need not be what any file on disk holds.

A file is read once while it is unchanged (:func:`~metaeol.file_digest.file_sha256`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from metaeol.file_digest import file_sha256
from metaeol.loading import ModelLoadError, hub_commit, resolve_source

ID_HEX = 12


def files_id(paths: list[Path]) -> str:
    """``local-`` + a hash over the files' names and contents (not their folder, sizes or times)."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return f"local-{digest.hexdigest()[:ID_HEX]}"


def source_weights_id(model_name: str | os.PathLike, revision: str | None) -> str:
    """The id of the weights ``model_name`` (and ``revision``) loads, without loading them:
    the hub commit, ``local-<content hash>`` for local files, ``unknown`` when unreachable."""
    model_name = os.fspath(model_name)
    try:
        source = resolve_source(model_name, revision)
    except ModelLoadError:  # a name that is no longer a reachable source
        return str(revision)[:ID_HEX] if revision else "unknown"
    folder = Path(source.folder)
    if source.gguf_file:
        return files_id([folder / source.gguf_file])
    if folder.is_dir():
        return files_id([p for p in folder.iterdir() if p.is_file()])
    commit = hub_commit(model_name, revision)
    if commit:
        return commit[:ID_HEX]
    return str(revision)[:ID_HEX] if revision else "unknown"


def parameters_id(model: Any) -> str:
    """``params-`` + a hash over a model object's parameter and buffer names, dtypes, shapes and
    values (in memory: for a model passed in rather than loaded from files)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            continue
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\n".encode())
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return f"params-{digest.hexdigest()[:ID_HEX]}"
