"""What the evaluation, the sweep, the cache and the serving surfaces need from an encoder."""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from metaeol.prompts import PromptSet


@runtime_checkable
class SentenceEncoder(Protocol):
    """Anything that maps sentences to an ``[N, D]`` array (``describe()`` is optional)."""

    def encode(self, sentences: Sequence[str], batch_size: int = ..., show_progress_bar: bool | None = ...) -> np.ndarray:
        ...


@runtime_checkable
class TemplateEncoder(SentenceEncoder, Protocol):
    """An encoder that also exposes its per-template, per-layer states (what the vector
    store keeps and the sweep scores)."""

    prompt_set: PromptSet
    num_layers: int

    @property
    def cache_key(self) -> str:
        """Names everything besides template, layer and sentence that changes a stored vector."""
        ...

    def encode_templates(
        self, sentences: Sequence[str], layers: Any = ..., batch_size: int = ..., show_progress_bar: bool | None = ...,
        templates: Sequence[int] | None = ...,
    ) -> np.ndarray:
        ...

    def describe(self) -> dict[str, Any]:
        ...
