"""Token Prepending (Fu et al., ACL 2025; official code fuyuchenIfyw/token_prepending).

One placeholder token is inserted before the sentence. Entering each
block ``b`` with ``start_layer <= b < end_layer`` (0-based block index, the same index as
the hidden state that enters it), the placeholder's state is replaced by the prompt's
last-token state at that point, i.e. the previous layer's sentence embedding, so that the
sentence tokens after it can attend to the whole sentence despite causal attention.
Outside that range the placeholder is an ordinary token.

Two placements (``placement``):

* ``official`` (the default): where the official templates write ``<PST>``, before the opening
  quote (``this sentence : <PST> "{s}"``), tokenized as the official code does: ``<PST>`` added
  to (a copy of) the tokenizer as a new token, the text around it tokenized as the tokenizer
  splits it. Every template must quote its sentence.
* ``sentence`` (ours): the placeholder goes directly before the sentence's first token, after
  the opening quote, with the prompt's own tokenization left as it is; works with any template.

The default was chosen on STS-B dev (SmolLM2-135M-Instruct, bf16, TP 1:4, all 1,500 pairs): official
77.42 at its best layer and 75.76 at the final output, against 77.34 and 74.24 (docs/boosters.md).

Either way the placeholder sits at or after the first token that differs from the template's
stored instruction prefix, so the prefix engine's stored states stay valid (positions before
the placeholder never see it).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from dataclasses import dataclass
from typing import Any, ContextManager, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from metaeol.layers import decoder_blocks
from metaeol.prompt_tokens import PromptTokenizer, shared_prefix_length
from metaeol.prompts import PLACEHOLDER, PromptSet, Template

PLACEHOLDERS = ("random", "mean")
PLACEMENTS = ("sentence", "official")
OFFICIAL_TOKEN = "<PST>"


@dataclass(frozen=True)
class TokenPrepending:
    """Token Prepending settings.

    Args:
        start_layer: first block (0-based) entered with the replaced placeholder state.
        end_layer: blocks from here on see the placeholder's own state (exclusive end);
            the official Llama-2-7B setting is ``1, 7``.
        placeholder: the placeholder's input vector (the embedding layer's output at its
            position): ``"random"`` (a standard normal vector from ``seed``, as the official
            code draws), ``"mean"`` (the mean input embedding), or a vector of the model's
            hidden size.
        seed: seed of the ``"random"`` vector (a CPU ``torch.Generator``, float32 draw).
        placement: ``official`` (``<PST>`` before the opening quote, tokenized as the official
            code does; the default) or ``sentence`` (before the sentence's first token, after the
            opening quote; for templates that do not quote the sentence); see the module docstring.
    """

    start_layer: int
    end_layer: int
    placeholder: str | Sequence[float] = "random"
    seed: int = 0
    placement: str = "official"

    def __post_init__(self) -> None:
        for name in ("start_layer", "end_layer", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"token_prepending {name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not 0 <= self.start_layer < self.end_layer:
            raise ValueError(
                f"token_prepending needs 0 <= start_layer < end_layer, got {self.start_layer}:{self.end_layer}"
            )
        if self.placement not in PLACEMENTS:
            raise ValueError(f"token_prepending placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if isinstance(self.placeholder, str):
            if self.placeholder not in PLACEHOLDERS:
                raise ValueError(f"token_prepending placeholder must be one of {PLACEHOLDERS} or a vector, "
                                 f"got {self.placeholder!r}")
            return
        data = self.placeholder
        try:
            vector = np.asarray(data.detach().float().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float64)
        except (TypeError, ValueError):
            vector = np.empty(0)
        if vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
            raise ValueError("token_prepending placeholder vector must be a non-empty 1-D sequence of finite floats")
        object.__setattr__(self, "placeholder", tuple(float(x) for x in vector))

    @classmethod
    def parse(cls, text: str, placeholder: str | Sequence[float] = "random", seed: int = 0,
              placement: str = "official") -> "TokenPrepending":
        """``"START:END"`` (as the command line takes it), e.g. ``"1:7"``."""
        parts = text.split(":")
        try:
            start, end = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"token prepending must be START:END block indices, e.g. 1:7; got {text!r}") from None
        return cls(start, end, placeholder=placeholder, seed=seed, placement=placement)

    def check(self, num_layers: int, hidden_size: int) -> None:
        """A ValueError unless the settings fit a model of this size."""
        if self.end_layer > num_layers:
            raise ValueError(f"token_prepending end_layer {self.end_layer} is beyond the model's {num_layers} blocks")
        if not isinstance(self.placeholder, str) and len(self.placeholder) != hidden_size:
            raise ValueError(f"token_prepending placeholder vector has {len(self.placeholder)} values; "
                             f"the model's hidden size is {hidden_size}")

    @property
    def _placeholder_label(self) -> str:
        if self.placeholder == "random":
            return f"random:{self.seed}"
        if self.placeholder == "mean":
            return "mean"
        data = np.asarray(self.placeholder, dtype=np.float32).tobytes()
        return f"vector:{hashlib.sha256(data).hexdigest()[:16]}"

    @property
    def key(self) -> str:
        """Identifies the settings in cache keys: ``tp(1:7,random:0)``, ``tp(1:7,random:0,official)``."""
        placement = ",official" if self.placement == "official" else ""
        return f"tp({self.start_layer}:{self.end_layer},{self._placeholder_label}{placement})"

    def describe(self) -> dict[str, Any]:
        return {"start_layer": self.start_layer, "end_layer": self.end_layer, "placeholder": self._placeholder_label,
                "placement": self.placement}

    def vector(self, embeddings: nn.Module, hidden_size: int) -> torch.Tensor:
        """The placeholder's input vector ``[hidden_size]`` in float32."""
        if self.placeholder == "random":
            return torch.randn(hidden_size, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float32)
        if self.placeholder == "mean":
            return embeddings.weight.detach().float().mean(0).cpu()
        return torch.tensor(self.placeholder, dtype=torch.float32)


def insert_placeholders(
    rows: Sequence[Sequence[int]], templates: Sequence[int], prefixes: Sequence[Sequence[int]], token_id: int
) -> tuple[list[list[int]], list[int]]:
    """Each row with ``token_id`` inserted where it first leaves its template's prefix
    tokens (the sentence start; never after the last token), and those positions."""
    out, positions = [], []
    for ids, template in zip(rows, templates):
        k = shared_prefix_length(ids, prefixes[template])
        out.append([*ids[:k], token_id, *ids[k:]])
        positions.append(k)
    return out, positions


def official_prompt_set(prompt_set: PromptSet) -> PromptSet:
    """``prompt_set`` with ``<PST> `` before each template's opening quote, as the official templates
    write it (``this sentence : <PST> "{s}"``); an error names a template whose sentence is not quoted."""
    templates = []
    for template in prompt_set.templates:
        quoted = f'"{PLACEHOLDER}'
        if quoted not in template.text:
            raise ValueError(f"token_prepending placement 'official' puts {OFFICIAL_TOKEN} before the opening quote, "
                             f"but template {template.name!r} has no '\"{PLACEHOLDER}'; use placement 'sentence' "
                             "(--tp-placement sentence) for templates that do not quote the sentence")
        text = template.text.replace(quoted, f"{OFFICIAL_TOKEN} {quoted}", 1)
        templates.append(Template(template.name, text, template.task))
    return PromptSet(prompt_set.name, tuple(templates), prompt_set.description, dict(prompt_set.metadata))


class OfficialPlaceholders:
    """Prompt token ids with ``<PST>`` where the official code puts it (see the module docstring)."""

    def __init__(self, tokenizer: Any, prompt_set: PromptSet, token_id: int):
        tokenizer = copy.deepcopy(tokenizer)  # never change the caller's tokenizer
        tokenizer.add_tokens([OFFICIAL_TOKEN])
        self.placeholder_id = tokenizer.convert_tokens_to_ids(OFFICIAL_TOKEN)
        self.prompts = PromptTokenizer(tokenizer, official_prompt_set(prompt_set), clean=False, max_sentence_tokens=None)
        self.token_id = token_id

    def rows(self, prepared: list[str]) -> tuple[list[list[int]], list[int]]:
        """Every prompt's ids (``<PST>`` replaced by ``token_id``: its input vector is set by the
        hooks) and each placeholder's position, for already cleaned and cut sentences."""
        rows, _ = self.prompts.prompts(prepared)
        positions = [row.index(self.placeholder_id) for row in rows]
        return [[self.token_id if i == p else t for i, t in enumerate(row)] for row, p in zip(rows, positions)], positions


class PlaceholderHooks:
    """Applies Token Prepending to a model's forward passes (hooks live only inside :meth:`active`)."""

    def __init__(self, model: nn.Module, setting: TokenPrepending):
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.setting = setting
        self.embeddings = model.get_input_embeddings()
        self.blocks = list(decoder_blocks(model))[setting.start_layer : setting.end_layer]
        parameter = next(model.parameters())
        vector = setting.vector(self.embeddings, int(config.hidden_size))
        self.vector = vector.to(device=parameter.device, dtype=parameter.dtype)

    @contextlib.contextmanager
    def active(self, placeholder: torch.Tensor, last: torch.Tensor) -> Iterator[None]:
        """Within the block, a forward pass puts the placeholder vector at ``placeholder[r]``
        of row ``r`` and, entering each boosted block, replaces that position's state by
        the state at ``last[r]`` (indices into this pass's sequence dimension)."""
        rows = torch.arange(placeholder.numel(), device=placeholder.device)
        where = (rows, placeholder)

        def embed(module, args, output):
            return output.index_put(where, self.vector.expand(rows.numel(), -1))

        def prepend(module, args, kwargs):
            if args:
                return (args[0].index_put(where, args[0][rows, last]), *args[1:]), kwargs
            hidden = kwargs["hidden_states"]
            return args, {**kwargs, "hidden_states": hidden.index_put(where, hidden[rows, last])}

        handles = [self.embeddings.register_forward_hook(embed)]
        try:
            for block in self.blocks:
                handles.append(block.register_forward_pre_hook(prepend, with_kwargs=True))
            yield
        finally:
            for handle in handles:
                handle.remove()


class PrependedRows:
    """Token Prepending bound to the rows of one engine run (a :class:`~metaeol.boosters.base.RowBoost`)."""

    def __init__(self, hooks: PlaceholderHooks, positions: Sequence[int]):
        self.hooks = hooks
        self.positions = list(positions)

    def reuse_limit(self, row: int) -> int:
        return self.positions[row]  # the placeholder and everything after it are computed

    def active(self, rows: Sequence[int], reused: Sequence[int], last: torch.Tensor) -> ContextManager[None]:
        at = torch.tensor([self.positions[r] - n for r, n in zip(rows, reused)], device=last.device)
        return self.hooks.active(at, last)
