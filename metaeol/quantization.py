"""int8 linear layers for CPU inference: int8 weights (one scale per output channel) and
dynamic int8 activations (one scale per token), multiplied in integers by ``torch._int_mm``.

This is the recipe of torchao's ``Int8DynamicActivationInt8WeightConfig`` (symmetric, per-token
activations, per-channel weights), run on the integer matmul kernel directly: on CPU that is
several times faster than float32 and faster than bfloat16, where torchao's eager CPU path for
this configuration is slower than float32 and torch's ``quantize_dynamic`` (per-tensor
activation scales) is deprecated. Per-token scales also keep exactness: a token's output
depends on that token alone, and int32 accumulation is exact, so vectors do not depend on the
batch, the padding or the engine path (docs/engine.md).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from metaeol.layers import decoder_blocks

_QMAX = 127.0


def _symmetric_scales(values: torch.Tensor) -> torch.Tensor:
    """One scale per row: the row's largest magnitude maps to 127."""
    return values.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / _QMAX


def _quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 rows and their scales. ``rows / scales`` lies within [-127, 127] by construction (the
    largest magnitude maps to 127 up to one float rounding), so rounding needs no clamp."""
    scales = _symmetric_scales(rows)
    return (rows / scales).round_().to(torch.int8), scales


class QuantizedInputs:
    """The last input quantized by the int8 layers of one block, so that layers reading the same
    tensor (q, k and v; gate and up) quantize it once. Inputs are matched by identity (a weak
    reference, dropped with the tensor); quantization is a function of the input alone, so a
    shared result is the one each layer would compute."""

    __slots__ = ("__weakref__", "_entry")

    def __init__(self) -> None:
        self._entry: tuple[weakref.ref, torch.Tensor, torch.Tensor] | None = None

    def __reduce__(self):  # copies and pickles start empty (a weak reference does not travel)
        return QuantizedInputs, ()

    def get(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` as int8 rows [tokens, features] and their scales [tokens, 1]."""
        entry = self._entry  # one read: another thread may replace it meanwhile
        if entry is not None and entry[0]() is x:
            return entry[1], entry[2]
        quantized, scales = _quantize_rows(x.reshape(-1, x.shape[-1]).float())
        self_ref = weakref.ref(self)
        self._entry = (weakref.ref(x, lambda _, holder=self_ref: _drop_entry(holder)), quantized, scales)
        return quantized, scales


def _drop_entry(holder: weakref.ref) -> None:
    """Free a block's quantized input once the tensor it was made from is gone."""
    inputs = holder()
    if inputs is not None and inputs._entry is not None and inputs._entry[0]() is None:
        inputs._entry = None


class Int8Linear(nn.Module):
    """A drop-in replacement of an ``nn.Linear`` computing in int8 (see the module docstring).
    Layers of one block share ``inputs`` (see :class:`QuantizedInputs`)."""

    def __init__(self, linear: nn.Linear, inputs: QuantizedInputs | None = None):
        super().__init__()
        self.inputs = inputs or QuantizedInputs()
        quantized, scales = _quantize_rows(linear.weight.detach().float())  # one scale per output channel
        # _int_mm runs fastest with the [in, out] operand in column-major order: the transpose of [out, in]
        self.register_buffer("weight_int8", quantized)
        self.register_buffer("weight_scales", scales.reshape(1, -1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantized, scales = self.inputs.get(x)
        out = torch._int_mm(quantized, self.weight_int8.t()).float().mul_(scales).mul_(self.weight_scales)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def check_int8_device(device: str | torch.device) -> None:
    """Raise ``ValueError`` unless int8 can run on ``device`` (CPU only)."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"dtype int8 runs on CPU only, not on {device}; on a GPU use bfloat16")


def quantize_blocks(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside the decoder blocks of ``model`` (in place) by an
    :class:`Int8Linear`; embeddings and norms stay float32. Returns how many were replaced."""
    check_int8_device(next(model.parameters()).device)
    replaced = 0
    for block in decoder_blocks(model):
        inputs = QuantizedInputs()
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.Linear):
                parent_name, _, child = name.rpartition(".")
                parent = block.get_submodule(parent_name) if parent_name else block
                setattr(parent, child, Int8Linear(module, inputs))
                replaced += 1
    return replaced


def is_quantized(model: nn.Module) -> bool:
    """Whether :func:`quantize_blocks` has run on ``model``."""
    return any(isinstance(module, Int8Linear) for module in model.modules())
