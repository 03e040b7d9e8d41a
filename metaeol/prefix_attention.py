"""Attention over a cached prefix that every row shares, without copying it per row.

A forward pass computes only each prompt's own tokens (its "tail"). Every row attends to
(a) the first ``reused[r]`` positions of its template's cached prefix and (b) its own tail,
causally. The prefix keys/values are stored once (``[1, kv_heads, P, d]``) and enter the
score and output products as shared operands, so nothing of size rows x prefix is ever
materialised; the softmax is taken jointly over prefix and tail scores, as full attention
would.

:func:`broadcast_prefix` installs this as the model's attention for the duration of one
forward pass (through transformers' attention-function registry). With a :class:`Packing`, the pass is
padding-free: the rows' tails are packed into one sequence (so the linear layers compute no
padding) and only the attention lays them out as padded rows.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION_NAME = "metaeol_broadcast_prefix"


@dataclass(frozen=True)
class PrefixGroup:
    """Rows ``start:stop`` of the batch, all reading the same template's prefix."""

    start: int
    stop: int
    blocks: Sequence[tuple[torch.Tensor, torch.Tensor]]  # per block: keys, values [1, kv_heads, P, d]
    bias: torch.Tensor  # [rows, 1, 1, 1, P]: 0 where a row attends to a prefix position, dtype min elsewhere


@dataclass(frozen=True)
class Packing:
    """Rows packed end to end into one sequence ``[1, N]``: ``slots[r * width + j]`` is the packed
    position of row r's token j, or N for padding; ``real`` lists the padded positions
    ``r * width + j`` that hold tokens, in packed order; ``last[r]`` is the packed position of
    row r's last token."""

    rows: int
    width: int
    slots: torch.Tensor  # [rows * width], long
    real: torch.Tensor  # [N], long
    last: torch.Tensor  # [rows], long

    @classmethod
    def of(cls, lengths: Sequence[int], device: torch.device | str) -> Packing:
        width, total = max(lengths), sum(lengths)
        slots = torch.full((len(lengths), width), total, dtype=torch.long)
        start = 0
        for r, n in enumerate(lengths):
            slots[r, :n] = torch.arange(start, start + n)
            start += n
        real = (slots < total).flatten().nonzero().squeeze(1)
        last = torch.tensor(lengths).cumsum(0) - 1
        return cls(len(lengths), width, slots.flatten().to(device), real.to(device), last.to(device))

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """``[1, heads, N, d]`` -> ``[rows, heads, width, d]``, padding slots zero."""
        heads, _, dim = x.shape[1:]
        flat = torch.cat([x[0].transpose(0, 1), x.new_zeros(1, heads, dim)])
        return flat[self.slots].view(self.rows, self.width, heads, dim).transpose(1, 2)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``[rows, width, ...]`` -> ``[1, N, ...]``, the padding dropped."""
        return x.reshape(self.rows * self.width, *x.shape[2:])[self.real].unsqueeze(0)


class UnsupportedAttention(RuntimeError):
    """The model asked for an attention variant this function does not implement."""


_ACTIVE: ContextVar[tuple[tuple[PrefixGroup, ...], Packing | None] | None] = ContextVar(
    "metaeol_prefix_groups", default=None)


def _shared_matmul(x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """``x [b, kv, g, q, n] @ shared [kv, n, m] -> [b, kv, g, q, m]``, the shared operand
    used once for all rows (the rows are folded into the matrix dimension)."""
    b, kv, g, q, n = x.shape
    folded = x.permute(1, 0, 2, 3, 4).reshape(kv, b * g * q, n)
    return torch.bmm(folded, shared).view(kv, b, g, q, -1).permute(1, 0, 2, 3, 4)


def _capped(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return scores if softcap is None else torch.tanh(scores / softcap) * softcap


def broadcast_prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: ``query [B, H, q, d]``, tail ``key/value [B, kv, q, d]``,
    ``attention_mask`` the tails' additive causal mask ``[B, 1, q, q]``; returns ``[B, q, H, d]``.
    A packed pass brings ``[1, H, N, d]`` and gets ``[1, N, H, d]``; its mask is the padded rows'."""
    active = _ACTIVE.get()
    if active is None:  # another thread's ordinary forward while a prefix pass runs
        original = _original_attention(module)
        return original(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    groups, packing = active
    if packing is not None:
        query, key, value = packing.unpack(query), packing.unpack(key), packing.unpack(value)
    if kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None:
        raise UnsupportedAttention("attention sinks and position biases are not supported")
    softcap = kwargs.get("softcap")
    batch, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    scaling = head_dim**-0.5 if scaling is None else scaling
    query = query.view(batch, kv_heads, heads // kv_heads, q_len, head_dim)
    layer = module.layer_idx
    window = kwargs.get("sliding_window")
    outputs = []
    for group in groups:
        prefix_keys, prefix_values = group.blocks[layer]
        prefix_len = prefix_keys.shape[2]
        if window is not None and prefix_len + q_len > window:
            raise UnsupportedAttention(f"sliding window {window} is shorter than prefix + tail")
        rows = slice(group.start, group.stop)
        q = query[rows]
        tail_keys, tail_values = key[rows].unsqueeze(2), value[rows].unsqueeze(2)  # [b, kv, 1, T, d]
        prefix_scores = _capped(_shared_matmul(q, prefix_keys[0].transpose(1, 2)) * scaling, softcap)
        tail_scores = _capped(torch.matmul(q, tail_keys.transpose(-1, -2)) * scaling, softcap)
        if attention_mask is not None:
            tail_scores = tail_scores + attention_mask[rows, :, None, :, -q_len:]
        scores = torch.cat([prefix_scores + group.bias, tail_scores], dim=-1)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out = _shared_matmul(probs[..., :prefix_len], prefix_values[0])
        outputs.append(out + torch.matmul(probs[..., prefix_len:], tail_values))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    out = out.reshape(batch, heads, q_len, head_dim).transpose(1, 2)
    return (out.contiguous() if packing is None else packing.pack(out)), None


AttentionInterface.register(ATTENTION_NAME, broadcast_prefix_attention)
# Prefix passes bring their own 4D mask; an ordinary forward of another thread meanwhile gets
# the explicit 4D mask that both eager and SDPA attention accept.
AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)


def _attention_configs(model: nn.Module) -> list:
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config")}
    return list(configs.values()) or [model.config]


# id(config) -> [config, its own attention implementation, number of prefix passes running]
_SWITCHED: dict[int, list] = {}
_SWITCH_LOCK = threading.Lock()


def _original_attention(module: nn.Module) -> Callable:
    entry = _SWITCHED.get(id(module.config))
    name = entry[1] if entry is not None else None
    if name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    return sys.modules[type(module).__module__].eager_attention_forward


@contextlib.contextmanager
def broadcast_prefix(model: nn.Module, groups: Sequence[PrefixGroup], packing: Packing | None = None) -> Iterator[None]:
    """Within the block, ``model``'s attention layers read their prefix from ``groups`` (and
    unpack the pass's rows by ``packing``, when given).
    Safe with concurrent passes: the model's own attention is restored when the last
    prefix pass ends, and other threads' ordinary forwards keep using it meanwhile."""
    configs = _attention_configs(model)
    token = _ACTIVE.set((tuple(groups), packing))
    with _SWITCH_LOCK:
        for config in configs:
            entry = _SWITCHED.setdefault(id(config), [config, config._attn_implementation, 0])
            entry[2] += 1
            config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            for config in configs:
                entry = _SWITCHED[id(config)]
                entry[2] -= 1
                if entry[2] == 0:
                    config._attn_implementation = entry[1]
                    del _SWITCHED[id(config)]
        _ACTIVE.reset(token)
