"""The settings that change a MetaEOL vector: a JSON form that rebuilds an encoder, and a
short label of them for file and cache names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaeol.loading import resolve_source
from metaeol.prompts import PromptSet, prompt_set_from_dict

if TYPE_CHECKING:
    from metaeol.encoder import MetaEOL

# encoder_config keys that are MetaEOL keyword arguments
ENCODER_KWARGS = ("model", "revision", "prompts", "layer", "pooling", "dtype", "max_sentence_tokens", "clean", "engine")


def prompts_sha256(prompt_set: PromptSet) -> str:
    """sha256 over the ordered template texts (names and tags do not change vectors)."""
    digest = hashlib.sha256()
    for template in prompt_set.templates:
        digest.update(template.sha256.encode("ascii"))
    return digest.hexdigest()


def _stat_key(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:8]


def weights_id(encoder: MetaEOL) -> str:
    """The hub commit of the weights (12 hex digits), or ``local-<key>`` for local files, where
    the key hashes the files' paths, sizes and modification times (replaced weights get a new id)."""
    if encoder.revision:
        return str(encoder.revision)[:12]
    source = resolve_source(encoder.model_name)
    folder = Path(source.folder)
    if source.gguf_file:
        return f"local-{_stat_key([folder / source.gguf_file])}"
    if folder.is_dir():
        return f"local-{_stat_key(sorted(p for p in folder.iterdir() if p.is_file()))}"
    return "unknown"


def single_layer(encoder: MetaEOL) -> int:
    """The encoder's one hidden-state index (0..num_layers); the integrations embed one layer."""
    if not isinstance(encoder.layer, int):
        raise ValueError(f"the integrations embed one layer at a time, got layer={encoder.layer!r}")
    return encoder.layers[0]


def vector_settings(encoder: MetaEOL) -> dict[str, Any]:
    """Everything that decides the vectors of ``encoder`` (engine, device and batch size do not)."""
    return {
        "model": encoder.model_name,
        "weights": weights_id(encoder),
        "prompts": encoder.prompt_set.name,
        "prompts_sha256": prompts_sha256(encoder.prompt_set),
        "layer": single_layer(encoder),
        "pooling": encoder.pooling,
        "dtype": str(encoder.dtype).replace("torch.", ""),
        "max_sentence_tokens": encoder.max_sentence_tokens,
        "clean": encoder.clean,
    }


def settings_label(settings: dict[str, Any]) -> str:
    """A readable, path-safe label of :func:`vector_settings`, e.g.
    ``local-1a2b3c4d_metaeol-5e6f7a8b_L5_last_float32_t512``."""
    prompts = re.sub(r"[^A-Za-z0-9.+-]+", "-", settings["prompts"]).strip("-")[:32] or "prompts"
    parts = [
        settings["weights"],
        f"{prompts}-{settings['prompts_sha256'][:8]}",
        f"L{settings['layer']}",
        settings["pooling"],
        settings["dtype"],
        f"t{settings['max_sentence_tokens'] or 'all'}",
    ]
    if not settings["clean"]:
        parts.append("raw")
    return "_".join(parts)


def encoder_config(encoder: MetaEOL) -> dict[str, Any]:
    """JSON-able MetaEOL arguments that rebuild ``encoder`` (see :func:`build_encoder`): the model
    reference (absolute path when local), its revision, the full prompt set and the resolved dtype."""
    name = encoder.model_name
    local = Path(name).expanduser()
    return {
        "model": str(local.resolve()) if local.exists() else name,
        "revision": encoder.revision,
        "prompts": encoder.prompt_set.to_dict(),
        "layer": single_layer(encoder),
        "pooling": encoder.pooling,
        "dtype": str(encoder.dtype).replace("torch.", ""),
        "max_sentence_tokens": encoder.max_sentence_tokens,
        "clean": encoder.clean,
        "engine": encoder.engine_kind,
    }


def build_encoder(config: dict[str, Any], **overrides: Any) -> MetaEOL:
    """A MetaEOL encoder from :func:`encoder_config` output (``prompts`` may be a name, a path
    or a prompt-set dict); ``overrides`` are further MetaEOL keyword arguments (e.g. ``device``)."""
    from metaeol import MetaEOL

    unknown = sorted(set(config) - set(ENCODER_KWARGS))
    if unknown:
        raise ValueError(f"unknown MetaEOL settings {unknown}; known: {list(ENCODER_KWARGS)}")
    kwargs = dict(config)
    if isinstance(kwargs.get("prompts"), dict):
        kwargs["prompts"] = prompt_set_from_dict(kwargs["prompts"], "saved MetaEOL settings")
    return MetaEOL(**kwargs, **overrides)
