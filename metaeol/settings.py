"""The one record of everything that changes a MetaEOL vector.

:class:`VectorSettings` is what the vector store's key, the results JSON (``describe()``), the
MTEB revision and the sentence-transformers save all read, so a setting that is in it cannot be
dropped by one of them. Every :class:`~metaeol.MetaEOL` constructor argument is either a field
here (:data:`VECTOR_OPTIONS`) or listed in :data:`RUNTIME_OPTIONS` with the reason it leaves the
vectors unchanged; ``tests/test_settings.py`` fails when an argument is in neither.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.prompts import PromptSet, prompt_set_from_dict
from metaeol.weights_identity import ID_HEX

if TYPE_CHECKING:
    from metaeol.encoder import MetaEOL

# MetaEOL arguments that change vectors, and the record fields that hold them
VECTOR_OPTIONS = {
    "model": "model, weights",
    "revision": "revision, weights",
    "prompts": "prompts",
    "tasks": "prompts",  # the templates kept
    "layer": "layer",
    "dtype": "dtype",
    "clean": "clean",
    "max_sentence_tokens": "max_sentence_tokens",
    "pooling": "pooling",
    "token_prepending": "token_prepending",
    "contrastive": "contrastive",
    "demonstrations": "prompts",  # the demonstrations become part of the template texts
    "embed_filter": "embed_filter",
}

# MetaEOL arguments that do not change vectors (beyond float rounding), and why
RUNTIME_OPTIONS = {
    "tokenizer": "belongs to the loaded model, which `model` names",
    "device": "where the model runs",
    "attn_implementation": "the attention kernel; equal up to float rounding",
    "engine": "prefix and plain engines give equal vectors (tested)",
    "prefix_attention": "how the prefix engine attends stored states; equal vectors (tested)",
    "max_batch_tokens": "batching; vectors do not depend on it (tested)",
    "store": "a cache keyed by these settings",
}


def prompts_sha256(prompt_set: PromptSet) -> str:
    """sha256 over the ordered template texts (names and tags do not change vectors)."""
    digest = hashlib.sha256()
    for template in prompt_set.templates:
        digest.update(template.sha256.encode("ascii"))
    return digest.hexdigest()


_OUTDATED_KEY = re.compile(r"^(?P<name>[^|]*)@(?P<weights>local|[0-9a-f]{40})(?P<rest>\|.*)$")


def adopted_key(key: str, local_weights: dict[str, str]) -> str | None:
    """Today's form of an outdated store key (:meth:`VectorSettings.is_outdated_key`): a hub
    commit becomes the weights id it gives now; ``local`` takes ``local_weights[name]``, the id of
    the weights the caller vouches those vectors came from. None when it cannot be adopted."""
    match = _OUTDATED_KEY.match(key)
    if match is None:
        return None
    name, weights, rest = match.group("name", "weights", "rest")
    if weights != "local":
        return f"{name}@{weights[:ID_HEX]}{rest}"
    return f"{name}@{local_weights[name]}{rest}" if name in local_weights else None


def booster_config(booster: TokenPrepending | ContrastivePrompting | None) -> dict[str, Any] | None:
    """The JSON form of a booster that rebuilds it (``None`` when off)."""
    if booster is None:
        return None
    if isinstance(booster, TokenPrepending):
        placeholder = booster.placeholder if isinstance(booster.placeholder, str) else list(booster.placeholder)
        return {"start_layer": booster.start_layer, "end_layer": booster.end_layer,
                "placeholder": placeholder, "seed": booster.seed, "placement": booster.placement}
    return {"layer": booster.layer, "scale": booster.scale, "auxiliary": booster.auxiliary}


@dataclass(frozen=True)
class VectorSettings:
    """Everything that decides the vector of a sentence (see the module docstring).

    ``layer`` is the resolved hidden-state index (``0..num_layers``) when the encoder embeds one
    layer, else the list of them; ``layers`` is always the list.
    """

    model: str
    revision: str | None
    weights: str
    prompts: PromptSet
    layer: int | list[int]
    layers: tuple[int, ...]
    pooling: str
    dtype: str
    max_sentence_tokens: int | None
    clean: bool
    token_prepending: TokenPrepending | None
    contrastive: ContrastivePrompting | None
    embed_filter: int | None = None  # EmbedFilter ratio; after the template mean, so not in the store key

    @classmethod
    def of(cls, encoder: MetaEOL) -> VectorSettings:
        """The settings of ``encoder``."""
        return cls(
            model=encoder.model_name, revision=encoder.revision,
            weights=encoder.weights_id,
            prompts=encoder.prompt_set,
            layer=encoder.layers[0] if isinstance(encoder.layer, int) else list(encoder.layers),
            layers=tuple(encoder.layers), pooling=encoder.pooling, dtype=encoder.dtype_name,
            max_sentence_tokens=encoder.max_sentence_tokens, clean=encoder.clean,
            token_prepending=encoder.token_prepending, contrastive=encoder.contrastive,
            embed_filter=encoder.embed_filter,
        )

    @property
    def boosters(self) -> list[TokenPrepending | ContrastivePrompting]:
        return [b for b in (self.token_prepending, self.contrastive) if b is not None]

    @staticmethod
    def is_outdated_key(key: str) -> bool:
        """A store key written before weights were identified by content (``name@local|...`` or
        ``name@<40-hex commit>|...``): no encoder reads it any more (see :func:`adopted_key`)."""
        return _OUTDATED_KEY.match(key) is not None

    @property
    def model_key(self) -> str:
        """The weights and precision: model name, weights id (by content), dtype."""
        return f"{self.model}@{self.weights}|{self.dtype}"

    @property
    def store_key(self) -> str:
        """The vector store's model key: everything besides sentence, template and layer.
        (The store keeps each template and layer apart, so prompts and layer are not in it; EmbedFilter
        applies after the template mean, to vectors the store does not keep.)"""
        key = f"{self.model_key}|pooling={self.pooling},clean={self.clean},max_sentence_tokens={self.max_sentence_tokens}"
        return f"{key},boost={'+'.join(b.key for b in self.boosters)}" if self.boosters else key

    def fingerprint(self) -> dict[str, Any]:
        """A flat JSON summary (hashes, not texts) that differs whenever the vectors may."""
        return {
            "model": self.model,
            "weights": self.weights,
            "prompts": self.prompts.name,
            "prompts_sha256": prompts_sha256(self.prompts),
            "layer": self.layer,
            "pooling": self.pooling,
            "dtype": self.dtype,
            "max_sentence_tokens": self.max_sentence_tokens,
            "clean": self.clean,
            "token_prepending": self.token_prepending.key if self.token_prepending else None,
            "contrastive": self.contrastive.key if self.contrastive else None,
            "embed_filter": self.embed_filter,
        }

    @property
    def label(self) -> str:
        """A readable, path-safe label, e.g. ``local-1a2b3c4d_metaeol-5e6f7a8b_L5_last_float32_t512``
        (then ``_raw`` without the clean-up, ``_tp-1-7-random-0``, ``_cp-4-0.5-<hash>`` for boosters and
        ``_ef2`` for EmbedFilter)."""
        prompts = _path_safe(self.prompts.name)[:32] or "prompts"
        layers = "+".join(str(layer) for layer in self.layers)
        parts = [self.weights, f"{prompts}-{prompts_sha256(self.prompts)[:8]}", f"L{layers}", self.pooling,
                 self.dtype, f"t{self.max_sentence_tokens or 'all'}"]
        if not self.clean:
            parts.append("raw")
        parts.extend(_path_safe(booster.key) for booster in self.boosters)
        if self.embed_filter is not None:
            parts.append(f"ef{self.embed_filter}")
        return "_".join(parts)

    def describe(self) -> dict[str, Any]:
        """The settings for results files (template hashes rather than texts)."""
        described = {
            "model": self.model,
            "revision": self.revision,
            "weights": self.weights,
            "dtype": self.dtype,
            "layers": list(self.layers),
            "prompts": self.prompts.describe(),
            "pooling": self.pooling,
            "clean": self.clean,
            "max_sentence_tokens": self.max_sentence_tokens,
            "token_prepending": self.token_prepending.describe() if self.token_prepending else None,
            "contrastive": self.contrastive.describe() if self.contrastive else None,
            "embed_filter": {"filter_ratio": self.embed_filter} if self.embed_filter else None,
            "store_key": self.store_key,
        }
        return described

    def to_config(self) -> dict[str, Any]:
        """JSON-able :class:`~metaeol.MetaEOL` arguments that rebuild these settings (see
        :func:`build_encoder`): the model reference (absolute path when local), its revision, the
        full prompt set, the boosters and the resolved dtype."""
        local = Path(self.model).expanduser()
        return {
            "model": str(local.resolve()) if local.exists() else self.model,
            "revision": self.revision,
            "prompts": self.prompts.to_dict(),
            "layer": self.layer,
            "pooling": self.pooling,
            "dtype": self.dtype,
            "max_sentence_tokens": self.max_sentence_tokens,
            "clean": self.clean,
            "token_prepending": booster_config(self.token_prepending),
            "contrastive": booster_config(self.contrastive),
            "embed_filter": self.embed_filter,
        }


def _path_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


# :meth:`VectorSettings.to_config` keys, plus ``engine`` (kept by older sentence-transformers saves)
CONFIG_KEYS = ("model", "revision", "prompts", "layer", "pooling", "dtype", "max_sentence_tokens", "clean",
               "token_prepending", "contrastive", "embed_filter", "engine")


def encoder_arguments(config: dict[str, Any]) -> dict[str, Any]:
    """:class:`~metaeol.MetaEOL` keyword arguments from :meth:`VectorSettings.to_config` output
    (``prompts`` may also be a name or a path; boosters may also be booster objects)."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown MetaEOL settings {unknown}; known: {list(CONFIG_KEYS)}")
    kwargs = dict(config)
    if isinstance(kwargs.get("prompts"), dict):
        kwargs["prompts"] = prompt_set_from_dict(kwargs["prompts"], "saved MetaEOL settings")
    if isinstance(kwargs.get("token_prepending"), dict):
        # saves from before the placement was recorded used the sentence placement (then the only one)
        kwargs["token_prepending"] = TokenPrepending(**{"placement": "sentence", **kwargs["token_prepending"]})
    if isinstance(kwargs.get("contrastive"), dict):
        kwargs["contrastive"] = ContrastivePrompting(**kwargs["contrastive"])
    return kwargs


def build_encoder(config: dict[str, Any], **overrides: Any) -> MetaEOL:
    """A MetaEOL encoder from :meth:`VectorSettings.to_config` output; ``overrides`` are further
    MetaEOL keyword arguments (e.g. ``device``)."""
    from metaeol import MetaEOL

    return MetaEOL(**{**encoder_arguments(config), **overrides})
