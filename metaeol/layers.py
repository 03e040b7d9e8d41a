"""Which hidden states to read, and reading them during one forward pass.

Layer indices follow transformers' ``hidden_states``: ``0`` is the embedding output,
``k`` the residual stream after block ``k``, and ``num_layers`` (also ``-1``) the model's
final output after its final norm. Blocks above the highest requested layer are not run.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

Pool = Callable[[torch.Tensor], torch.Tensor]


def resolve_layers(layers: int | Sequence[int], num_layers: int) -> list[int]:
    """Map user indices (negative allowed, ``-1`` = final output) to ``0..num_layers``."""
    items = [layers] if isinstance(layers, int) else list(layers)
    if not items:
        raise ValueError("no layer requested")
    resolved = []
    for k in items:
        if not isinstance(k, int) or isinstance(k, bool):
            raise ValueError(f"layer index must be an int, got {k!r}")
        index = k + num_layers + 1 if k < 0 else k
        if not 0 <= index <= num_layers:
            raise ValueError(
                f"layer {k} is out of range for a model with {num_layers} blocks "
                f"(valid: {-num_layers - 1}..{num_layers}, -1 = final output)"
            )
        resolved.append(index)
    return resolved


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
