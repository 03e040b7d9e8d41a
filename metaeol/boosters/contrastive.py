"""Contrastive Prompting (Cheng et al., 2025; official code zifengcheng/CP).

An auxiliary prompt asks for the sentence's non-essential information. At one decoder
block, the input of the attention output projection (``self_attn.o_proj``: every head's
value-weighted output, concatenated) at the main prompt's last token, ``A``, is replaced by
``scale * (A - B)``, where ``B`` is the same quantity for the auxiliary prompt of the same
sentence (the official ``scaled`` strategy at ``att_head``). Only each prompt's last token
changes, so the prefix engine's stored states stay valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from metaeol.layers import decoder_blocks
from metaeol.prompts import validate_template_text

OFFICIAL_AUXILIARY = 'The irrelevant information of this sentence : "{s}" means in one word:"'


@dataclass(frozen=True)
class ContrastivePrompting:
    """Contrastive Prompting settings.

    Args:
        layer: decoder block (0-based) whose attention output is steered; the official
            Llama-2-7B setting is 4 (with output layer 27).
        scale: the coefficient ``C`` in ``C * (A - B)``; official 0.5.
        auxiliary: the auxiliary template (one ``{s}``); default the official one.
    """

    layer: int
    scale: float = 0.5
    auxiliary: str = OFFICIAL_AUXILIARY

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)) or self.layer < 0:
            raise ValueError(f"contrastive layer must be a block index >= 0, got {self.layer!r}")
        object.__setattr__(self, "layer", int(self.layer))
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float, np.floating)) or not math.isfinite(self.scale):
            raise ValueError(f"contrastive scale must be a finite number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))
        problem = validate_template_text(self.auxiliary)
        if problem:
            raise ValueError(f"contrastive auxiliary prompt: {problem}")

    @classmethod
    def parse(cls, text: str, auxiliary: str | None = None) -> "ContrastivePrompting":
        """``"LAYER:SCALE"`` (as the command line takes it), e.g. ``"4:0.5"``."""
        try:
            layer, scale = text.split(":")
            setting = (int(layer), float(scale))
        except ValueError:
            raise ValueError(f"contrastive prompting must be LAYER:SCALE, e.g. 4:0.5; got {text!r}") from None
        return cls(*setting, **({} if auxiliary is None else {"auxiliary": auxiliary}))

    def check(self, num_layers: int) -> None:
        if self.layer >= num_layers:
            raise ValueError(f"contrastive layer {self.layer} is beyond the model's {num_layers} blocks")

    @property
    def key(self) -> str:
        """Identifies the settings in cache keys: ``cp(4,0.5,<auxiliary hash>)``."""
        return f"cp({self.layer},{self.scale!r},{hashlib.sha256(self.auxiliary.encode()).hexdigest()[:16]})"

    def describe(self) -> dict[str, Any]:
        return {"layer": self.layer, "scale": self.scale, "auxiliary": self.auxiliary}


def output_projection(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer``'s attention output projection (``self_attn.o_proj``)."""
    projection = getattr(getattr(decoder_blocks(model)[layer], "self_attn", None), "o_proj", None)
    if not isinstance(projection, nn.Module):
        raise ValueError(f"contrastive prompting needs decoder blocks with self_attn.o_proj (Llama, Mistral, Qwen, "
                         f"Gemma, ...); {type(model).__name__} has none")
    return projection


@contextlib.contextmanager
def _pre_hook(module: nn.Module, hook) -> Iterator[None]:
    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class CapturedRows:
    """Records, for each row of an engine run, the projection's input at the last token."""

    def __init__(self, projection: nn.Module, n_rows: int):
        self.projection = projection
        self.values: torch.Tensor | None = None
        self.n_rows = n_rows

    def reuse_limit(self, row: int) -> None:
        return None

    def active(self, rows: Sequence[int], reused: Sequence[int], last: torch.Tensor):
        index = torch.tensor(list(rows))

        def capture(module, args):
            picked = args[0][torch.arange(len(index), device=last.device), last]
            if self.values is None:
                self.values = picked.new_empty((self.n_rows, picked.shape[-1]))
            self.values[index.to(picked.device)] = picked

        return _pre_hook(self.projection, capture)


class ContrastedRows:
    """Contrastive Prompting bound to the rows of one engine run: row ``r`` is steered by
    ``negatives[sentence_of_row[r]]``."""

    def __init__(self, projection: nn.Module, negatives: torch.Tensor, sentence_of_row: Sequence[int], scale: float):
        self.projection = projection
        self.negatives = negatives
        self.sentence_of_row = torch.tensor(list(sentence_of_row))
        self.scale = scale

    def reuse_limit(self, row: int) -> None:
        return None  # only the last token changes, and it is always computed

    def active(self, rows: Sequence[int], reused: Sequence[int], last: torch.Tensor):
        negatives = self.negatives[self.sentence_of_row[list(rows)].to(self.negatives.device)].to(last.device)
        where = (torch.arange(len(rows), device=last.device), last)

        def steer(module, args):
            x = args[0]
            return (x.index_put(where, self.scale * (x[where] - negatives.to(x.dtype))), *args[1:])

        return _pre_hook(self.projection, steer)
