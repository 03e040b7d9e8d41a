"""EmbedFilter (Wu et al., arXiv 2606.07502; official code: CentreChen/EmbFilter).

Embeddings are projected onto the middle ("bulk") right singular directions of the model's
unembedding (output) matrix ``W [vocab, hidden]``: with ``W = U S Vh`` and ``k = hidden //
filter_ratio``, the filter keeps rows ``(hidden - k) // 2 .. (hidden - k) // 2 + k - 1`` of ``Vh``
and maps ``x -> Vh_k x`` (``set_lm_embed`` in ``models/modeling_*_lr.py``: an ``nn.Linear`` with
those rows as its weight, applied to the final hidden states). ``filter_ratio=1`` keeps every
dimension (the official identity), so it is the same as no filter.

The projection is linear, so applying it to the per-template mean (as :class:`~metaeol.MetaEOL`
does) equals the official per-token projection before pooling.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import torch
from torch import nn

_PROJECTIONS: weakref.WeakKeyDictionary[nn.Module, dict[int, torch.Tensor]] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


class EmbedFilterError(ValueError):
    """The filter cannot apply (bad ratio, no unembedding matrix)."""


def check_ratio(ratio: object, hidden_size: int) -> int | None:
    """``ratio`` as an int (None when it keeps every dimension), or an EmbedFilterError."""
    if ratio is None:
        return None
    if isinstance(ratio, bool) or not isinstance(ratio, int) or not 1 <= ratio <= hidden_size:
        raise EmbedFilterError(f"embed_filter must be an int filter ratio 1..{hidden_size} (the hidden size), "
                               f"got {ratio!r}")
    return None if ratio == 1 else ratio


def filtered_dim(hidden_size: int, ratio: int | None) -> int:
    """The output dimension: ``hidden_size // ratio``."""
    return hidden_size if ratio is None else hidden_size // ratio


def bulk_directions(unembedding: torch.Tensor, ratio: int) -> torch.Tensor:
    """The ``[k, hidden]`` rows of ``Vh`` that the filter keeps (float32)."""
    hidden = unembedding.shape[1]
    keep = hidden // ratio
    _, _, vh = torch.linalg.svd(unembedding.float(), full_matrices=False)
    start = (hidden - keep) // 2
    return vh[start : start + keep].contiguous()


def unembedding_matrix(model: nn.Module, head: nn.Module | None = None) -> torch.Tensor:
    """The output (unembedding) matrix ``[vocab, hidden]`` of a base model loaded without its head:
    ``head``'s weight when given, the input embeddings when the model ties them, else the
    ``lm_head.weight`` tensor of the model folder's safetensors files."""
    if head is not None:
        return head.weight.detach()
    config = model.config.get_text_config()
    if getattr(config, "tie_word_embeddings", False) or getattr(model.config, "tie_word_embeddings", False):
        return model.get_input_embeddings().weight.detach()
    folder = Path(str(getattr(model.config, "_name_or_path", "")))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            name = next((k for k in tensors.keys() if k.endswith("lm_head.weight")), None)
            if name is not None:
                return tensors.get_tensor(name)
    raise EmbedFilterError(f"no unembedding matrix for EmbedFilter: the model does not tie its embeddings and "
                           f"{folder or 'its folder'} has no lm_head.weight in safetensors files; pass the "
                           "model with its language-model head")


def projection(model: nn.Module, ratio: int, head: nn.Module | None = None) -> torch.Tensor:
    """The filter's ``[k, hidden]`` float32 matrix on the CPU, computed once per model and ratio."""
    with _GUARD:
        cached = _PROJECTIONS.setdefault(model, {})
        if ratio not in cached:
            cached[ratio] = bulk_directions(unembedding_matrix(model, head), ratio).cpu()
        return cached[ratio]


def apply_filter(embeddings: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``embeddings [..., hidden]`` projected to ``[..., k]``."""
    return embeddings @ matrix.T
