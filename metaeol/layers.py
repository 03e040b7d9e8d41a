"""Which hidden states to read, and reading them during one forward pass.

Layer indices follow transformers' ``hidden_states``: ``0`` is the embedding output,
``k`` the residual stream after block ``k``, and ``num_layers`` (also ``-1``) the model's
final output after its final norm. Blocks above the highest requested layer are not run.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import nn

Pool = Callable[[torch.Tensor], torch.Tensor]


LayerSpec = Union[int, Sequence[int], str]
"""A layer request: one index (embeddings ``[N, D]``), a sequence of indices (``[N, n_layers, D]``),
or ``"all"`` (blocks ``1..n-1`` and the final output; layer 0, the token embeddings, is the same
last token for every sentence and is left out)."""

ALL_LAYERS = "all"


def _as_index(value: object, origin: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"layer indices must be integers, got {value!r} in {origin!r}")
    return int(value)


def parse_layers(spec: LayerSpec) -> int | list[int] | str:
    """Validate a layer request without knowing the model.

    Text as the command line takes it: ``"-1"`` -> -1, ``"-1,12,20"`` -> [-1, 12, 20],
    ``"all"`` -> ``"all"``; an int or a sequence of ints is checked and returned as such.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == ALL_LAYERS:
            return ALL_LAYERS
        parts = [p.strip() for p in text.split(",")]
        if not text or any(not p for p in parts):
            raise ValueError(f"layers must be 'all' or integers separated by commas, got {spec!r}")
        try:
            items = [int(p) for p in parts]
        except ValueError as err:
            raise ValueError(f"layers must be 'all' or integers separated by commas, got {spec!r}") from err
        return items[0] if len(items) == 1 else items
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return int(spec)
    if isinstance(spec, (list, tuple, range)):
        items = [_as_index(k, spec) for k in spec]
        if not items:
            raise ValueError("no layer requested")
        return items
    raise ValueError(f"layer must be an int, a list of ints or 'all', got {spec!r}")


def is_single_layer(spec: LayerSpec) -> bool:
    """Whether ``spec`` asks for one layer (embeddings ``[N, D]`` rather than ``[N, n_layers, D]``)."""
    return not isinstance(parse_layers(spec), (list, str))


def expand_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """The requested indices as the user counts them, ``"all"`` spelled out as
    ``[1, ..., num_layers - 1, -1]``; each checked against the model (see :func:`resolve_layers`)."""
    parsed = parse_layers(spec)
    if parsed == ALL_LAYERS:
        return list(range(1, num_layers)) + [-1]
    items = [parsed] if isinstance(parsed, int) else list(parsed)
    resolve_layers(items, num_layers)
    return items


def resolve_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """Map user indices (negative allowed, ``-1`` = final output) to ``0..num_layers``, the
    index of transformers' ``hidden_states`` and the layer key of the vector store."""
    parsed = parse_layers(spec)
    if parsed == ALL_LAYERS:
        return list(range(1, num_layers + 1))
    items = [parsed] if isinstance(parsed, int) else list(parsed)
    resolved = []
    for k in items:
        index = k + num_layers + 1 if k < 0 else k
        if not 0 <= index <= num_layers:
            raise ValueError(
                f"layer {k} is out of range for a model with {num_layers} blocks "
                f"(valid: {-num_layers - 1}..{num_layers}, -1 = final output)"
            )
        resolved.append(index)
    return resolved


def layer_label(layer: int, num_layers: int | None = None) -> str:
    """``out`` for the final output (``-1``, or ``num_layers`` when known), else the index."""
    return "out" if layer == -1 or (num_layers is not None and layer == num_layers) else str(layer)


def num_hidden_layers(model: nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.num_hidden_layers)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (the ModuleList with one entry per layer)."""
    n = num_hidden_layers(model)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} decoder blocks of {type(model).__name__}")


class _StopForward(Exception):
    """Raised by a hook once every requested layer has been read."""


class HiddenStateTap:
    """Pools the hidden states at the requested indices during a forward pass.

    Use as a context manager (it owns forward pre-hooks on the blocks), then call
    :meth:`run` with a zero-argument forward and a pooling function ``[B,T,D] -> [B,D]``.
    """

    def __init__(self, model: nn.Module, layer_indices: Sequence[int]):
        self.num_layers = num_hidden_layers(model)
        self.layer_indices = list(layer_indices)
        self.inner = sorted({k for k in self.layer_indices if k < self.num_layers})
        self.needs_final = self.num_layers in self.layer_indices
        self.stop_at = None if self.needs_final else max(self.inner)
        self._blocks = decoder_blocks(model)
        self._handles: list = []
        self._captured: dict[int, torch.Tensor] = {}
        self._pool: Pool | None = None

    @property
    def blocks_run(self) -> int:
        """How many blocks a forward pass executes."""
        return self.num_layers if self.stop_at is None else self.stop_at

    def __enter__(self) -> "HiddenStateTap":
        for k in self.inner:
            self._handles.append(self._blocks[k].register_forward_pre_hook(self._hook(k), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, k: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self._captured[k] = self._pool(hidden)
            if k == self.stop_at:
                raise _StopForward

        return hook

    def run(self, forward: Callable[[], object], pool: Pool) -> torch.Tensor:
        """Run ``forward`` and return pooled states ``[B, n_layers, D]`` in request order."""
        self._captured = {}
        self._pool = pool
        try:
            output = forward()
        except _StopForward:
            output = None
        if self.needs_final:
            self._captured[self.num_layers] = pool(output.last_hidden_state)
        return torch.stack([self._captured[k] for k in self.layer_indices], dim=1)

    def run_to_fill_cache(self, forward: Callable[[], object]) -> None:
        """Run ``forward`` only for its side effect on a KV cache, as far as needed."""
        self.run(forward, lambda h: h[:, -1])
