"""Forward passes that return pooled hidden states for tokenized prompts.

Two paths compute the same numbers:

* ``plain``: every prompt runs in full, right-padded (no position drift).
* ``prefix``: each template's instruction prefix runs once; its key/value states are
  kept and every prompt computes only its remaining tokens against them. The shared
  prefix is found on tokens: a prompt reuses the longest token prefix it shares with its
  template's prefix, so tokenizer merges across the sentence boundary stay exact. Rows of
  several templates can share one pass.

The prefix states are attended in one of three ways, the first that the model supports
(checked once against a full-prompt pass):

* ``packed``: ``broadcast`` attention in a padding-free pass: the rows' tails are packed end to
  end into one sequence, so the linear layers (most of a pass's time) compute no padding, and
  only the attention lays them out as padded rows. Passes with boosters fall back to padded rows.
* ``broadcast``: an attention function that uses the single stored copy of each prefix
  for all rows (:mod:`metaeol.prefix_attention`); needs a model whose attention layers go
  through transformers' attention-function registry (Llama, Mistral, Qwen, Gemma, ...).
* ``concat``: a read-only cache hands each layer ``prefix + tail`` keys/values, the
  prefixes of the batch's templates side by side, and a 4D mask lets each row see only
  its own; works with any model that accepts a cache and a 4D mask, at the cost of a
  per-row copy of the prefix states in every layer.

Pooling is the last token, the mean over all tokens (plain path only), or ``span``: the mean over
a given token span of each row (an echo template's second sentence copy, :mod:`metaeol.methods.echo`;
a span of one token is last-token pooling); with prefix reuse a row reuses no prefix tokens past its
span's start, so the span always lies in the computed tail.

Boosters (:mod:`metaeol.boosters`) bind to a run's rows: each may stop prefix reuse before
some token of a row, and installs hooks for the duration of each forward pass.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from dataclasses import astuple, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from metaeol.boosters.base import RowBoost
from metaeol.layers import HiddenStateTap
from metaeol.prefix_attention import Packing, PrefixGroup, broadcast_prefix
from metaeol.prompt_tokens import shared_prefix_length
from metaeol.quantization import is_quantized

logger = logging.getLogger(__name__)

PREFIX_ATTENTION_MODES = ("packed", "broadcast", "concat")
PACKED_PADDING_FACTOR = 4
"""A packed pass's padded layout (which only its attention computes) may be this many times
its token budget."""


def check_prefix_attention(modes: Sequence[str]) -> tuple[str, ...]:
    """``modes`` as a tuple, or a ValueError unless it is a non-empty sequence of known modes."""
    if isinstance(modes, str) or not modes or not set(modes) <= set(PREFIX_ATTENTION_MODES):
        raise ValueError(f"prefix_attention must be a non-empty sequence of {PREFIX_ATTENTION_MODES}, got {modes!r}")
    return tuple(modes)


@dataclass(frozen=True)
class BatchLimits:
    """How big one forward pass may be: rows, and padded query tokens (rows x longest)."""

    max_rows: int = 256
    max_tokens: int = 16384

    @property
    def pass_overhead_tokens(self) -> int:
        """What starting one more pass costs, in padded tokens: a sixteenth of a full pass
        (measured on CPU, SmolLM2: 35 ms a pass against 1.2 ms a token, with 512-token passes)."""
        return max(1, self.max_tokens // 16)


@dataclass
class EngineStats:
    """What the forward passes computed so far: passes, prompt tokens, padded slots (rows x
    longest tail, summed over passes), and the wall seconds they took (until their states
    were on the CPU)."""

    passes: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: EngineStats) -> EngineStats:
        return EngineStats(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def __sub__(self, other: EngineStats) -> EngineStats:
        return EngineStats(*(a - b for a, b in zip(astuple(self), astuple(other))))

    @property
    def padding(self) -> float:
        """Fraction of the computed slots that were padding."""
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


def plan_batches(
    lengths: Sequence[int], limits: BatchLimits, groups: Sequence[int] | None = None, packed: bool = False
) -> list[list[int]]:
    """Row indices split into passes within ``limits``: ordered by decreasing length (within
    each group first, when ``groups`` is given) and cut where the passes cost least in all, a
    pass costing its padded tokens plus :attr:`BatchLimits.pass_overhead_tokens`; so rows of
    very different lengths get passes of their own when the padding saved pays for the pass.
    ``packed`` passes cost their tokens (the budget holds tokens, and the padded layout of
    their attention stays within :data:`PACKED_PADDING_FACTOR` budgets)."""
    order = sorted(range(len(lengths)), key=(lambda i: (-lengths[i], i)) if groups is None
                   else (lambda i: (groups[i], -lengths[i], i)))
    sizes = np.array([lengths[i] for i in order], dtype=np.int64)
    n = len(order)
    best = np.full(n + 1, np.inf)  # best[i]: the least cost of the first i rows of `order`
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)  # start[i]: where the last pass of that plan starts
    for k in range(n):
        padded = np.arange(1, min(limits.max_rows, n - k) + 1) * np.maximum.accumulate(sizes[k:k + limits.max_rows])
        if packed:
            tokens = np.cumsum(sizes[k:k + limits.max_rows])
            within = (tokens <= limits.max_tokens) & (padded <= PACKED_PADDING_FACTOR * limits.max_tokens)
            fits = max(1, int(np.argmin(within)) if not within.all() else len(within))  # a lone row always runs
            size = tokens
        else:
            fits = max(1, int(np.searchsorted(padded, limits.max_tokens, side="right")))  # a lone row always runs
            size = padded
        cost = best[k] + limits.pass_overhead_tokens + size[:fits]
        better = cost < best[k + 1:k + 1 + fits]
        best[k + 1:k + 1 + fits][better] = cost[better]
        start[k + 1:k + 1 + fits][better] = k
    batches: list[list[int]] = []
    end = n
    while end > 0:
        batches.append(order[start[end]:end])
        end = start[end]
    return batches[::-1]


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _cache_keyword(model: nn.Module) -> str:
    """transformers renamed ``past_key_values`` to ``cache``; use whichever this version takes."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model: nn.Module) -> DynamicCache:
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


class PrefixCache(DynamicCache):
    """A read-only cache holding fixed prefix states (one row, broadcast to the batch).

    Each attention layer gets ``prefix + new`` keys/values; nothing is retained, so only
    one layer's concatenated states exist at a time."""

    def __init__(self, per_block: list[tuple[torch.Tensor, torch.Tensor]], rows: int):
        super().__init__()
        self.per_block = per_block
        self.rows = rows

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = self.per_block[layer_idx]
        shape = (self.rows, -1, -1, -1)
        return (
            torch.cat([keys.expand(shape), key_states], dim=2),
            torch.cat([values.expand(shape), value_states], dim=2),
        )

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.per_block[0][0].shape[2]


def _layer_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


def last_token_pool(last_index: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    rows = torch.arange(last_index.numel(), device=last_index.device)
    return lambda hidden: hidden[rows, last_index]


def packed_last_token_pool(last_index: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Last-token pooling of a packed pass: ``last_index`` holds packed positions."""
    return lambda hidden: hidden[0, last_index]


def packed_mean_pool(mask: torch.Tensor, valid: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Mean over ``mask`` (``[rows, width]``, padded layout) of a packed pass's states."""
    weights = torch.zeros((mask.shape[0], int(valid.sum())), dtype=torch.float32, device=mask.device)
    rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)
    weights[rows[valid], torch.arange(weights.shape[1], device=mask.device)] = mask[valid].float()
    counts = weights.sum(1, keepdim=True)
    return lambda hidden: (weights.to(hidden.dtype) @ hidden[0]) / counts.to(hidden.dtype)


def span_mask(spans: Sequence[tuple[int, int]], reused: Sequence[int], width: int) -> torch.Tensor:
    """``[rows, width]`` True on each row's span, shifted by the tokens it took from the prefix."""
    mask = torch.zeros((len(spans), width), dtype=torch.bool)
    for r, ((start, end), n) in enumerate(zip(spans, reused)):
        mask[r, start - n : end - n] = True
    return mask


def mean_pool(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    weights = mask.unsqueeze(-1)
    return lambda hidden: (hidden * weights.to(hidden.dtype)).sum(1) / weights.sum(1).to(hidden.dtype)


class Engine:
    """Computes pooled states ``[rows, n_layers, D]`` (float32) for tokenized prompts."""

    def __init__(
        self,
        model: nn.Module,
        layer_indices: Sequence[int],
        *,
        prefixes: Sequence[Sequence[int]] | None = None,
        pooling: str = "last",
        pad_token_id: int = 0,
        limits: BatchLimits = BatchLimits(),
        prefix_attention: Sequence[str] = PREFIX_ATTENTION_MODES,
    ):
        if pooling not in ("last", "mean", "span"):
            raise ValueError(f"unknown pooling {pooling!r}; use 'last', 'mean' or 'span'")
        if prefixes is not None and pooling == "mean":
            raise ValueError("prefix reuse needs last-token or span pooling")
        self.model = model
        self.layer_indices = list(layer_indices)
        self.pooling = pooling
        self.pad_token_id = pad_token_id
        self.limits = limits
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._cache_kw = _cache_keyword(model)
        self.prefixes = [list(p) for p in prefixes] if prefixes is not None else None
        self.prefix_attention_modes = check_prefix_attention(prefix_attention)
        self.prefix_mode: str | None = None  # the verified way of attending the prefix states
        self._packing_checked = False  # packed mode: packed passes were checked against padded ones
        self._prefix_kv: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._boosts: tuple[RowBoost, ...] = ()  # those of the current run
        self._spans: list[tuple[int, int]] | None = None  # the current run's spans (span pooling)
        self.stats = EngineStats()

    @property
    def uses_prefix(self) -> bool:
        return self.prefixes is not None

    # -- prefix states -------------------------------------------------------------
    def _build_prefix_kv(self, tap: HiddenStateTap) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per template, per executed block: the prefix's keys and values ``[1, H, P, d]``."""
        states = []
        for ids in self.prefixes:
            cache = _new_cache(self.model)
            input_ids = torch.tensor([ids], device=self.device)
            tap.run_to_fill_cache(
                lambda: self.model(input_ids=input_ids, use_cache=True, **{self._cache_kw: cache})
            )
            states.append([_layer_kv(cache, b) for b in range(tap.blocks_run)])
        return states

    def _enable_prefix_reuse(self, tap: HiddenStateTap, row: list[int], template: int) -> None:
        """Build the prefix states and pick the first attention mode whose result on one
        prompt matches a full-prompt pass; fall back to full prompts (with a warning) when
        none does."""
        reasons = []
        try:
            self._prefix_kv = self._build_prefix_kv(tap)
            full = self._forward(tap, [row], [template], [0], [0])
            reused = [self._reusable(row, template, 0)]
        except Exception as err:  # any failure here means: this model cannot reuse prefixes
            if _is_oom(err):
                self._prefix_kv = None
                raise
            reasons.append(str(err))
        else:
            tolerance = self._tolerance()
            for mode in self.prefix_attention_modes:
                self.prefix_mode = mode
                try:
                    got = self._forward(tap, [row], [template], reused, [0])
                except Exception as err:  # this mode does not work for this model
                    self.prefix_mode = None
                    if _is_oom(err):
                        self._prefix_kv = None
                        raise
                    reasons.append(f"{mode}: {err}")
                    continue
                agreement = torch.nn.functional.cosine_similarity(got.flatten(1), full.flatten(1)).min().item()
                if agreement >= tolerance:
                    logger.debug("prefix reuse verified with %s attention (cosine %.7f)", mode, agreement)
                    return
                reasons.append(f"{mode}: prefix reuse disagrees with full prompts (cosine {agreement:.6f})")
        logger.warning("prefix reuse is not possible for %s (%s); running full prompts instead",
                       type(self.model).__name__, "; ".join(reasons))
        self.prefixes, self._prefix_kv, self.prefix_mode = None, None, None

    def _tolerance(self) -> float:
        """Least cosine at which two paths agree: float32 reproduces full prompts to rounding;
        bf16/fp16 and int8 rounding amplify the paths' float differences (int8: one quantization
        step flips), so they agree to 0.99 (docs/engine.md)."""
        return 0.99999 if self.dtype == torch.float32 and not is_quantized(self.model) else 0.99

    def _check_packing(self, tap: HiddenStateTap, row: list[int], template: int, reused: int) -> None:
        """Keep ``packed`` mode if a packed pass of ``row`` beside a shorter copy of it (a copy, when
        it is pooled over a span) equals a padded one (blocks that mix a pass's tokens outside
        attention cannot pack rows); else attend with ``broadcast``, padded."""
        rows = [row, row if self.pooling == "span" else row[: max(reused + 1, len(row) - 2)]]
        args = (tap, rows, [template] * 2, [reused] * 2, [0, 0])
        packed, padded = self._forward(*args, packed=True), self._forward(*args, packed=False)
        agreement = torch.nn.functional.cosine_similarity(packed.flatten(1), padded.flatten(1)).min().item()
        if agreement < self._tolerance():
            logger.debug("packed passes disagree with padded ones (cosine %.7f): attending padded", agreement)
            self.prefix_mode = "broadcast"
        self._packing_checked = True

    def reused_tokens(self, ids: Sequence[int], template: int) -> int:
        """How many leading tokens of ``ids`` come from the template's cached prefix
        (always leaving at least one token to compute)."""
        return shared_prefix_length(ids, self.prefixes[template])

    def _reusable(self, ids: Sequence[int], template: int, index: int) -> int:
        """Leading tokens of run row ``index`` that can come from the cached prefix, within the boosters' limits."""
        n = self.reused_tokens(ids, template)
        if self._spans is not None:
            n = min(n, self._spans[index][0])
        for boost in self._boosts:
            limit = boost.reuse_limit(index)
            n = n if limit is None else min(n, limit)
        return n

    def _reused(self, rows: Sequence[Sequence[int]], templates: Sequence[int]) -> list[int]:
        """Per row, the number of leading tokens taken from the cached prefixes."""
        if self.prefix_mode is None:
            return [0] * len(rows)
        return [self._reusable(ids, t, i) for i, (ids, t) in enumerate(zip(rows, templates))]

    # -- attention inputs for each mode ---------------------------------------------
    def _broadcast_groups(self, templates: list[int], reused: list[int], blocks: int) -> list[PrefixGroup]:
        """Runs of consecutive rows with the same template, each with its prefix states."""
        groups, start = [], 0
        for stop in range(1, len(templates) + 1):
            if stop == len(templates) or templates[stop] != templates[start]:
                t = templates[start]
                positions = torch.arange(len(self.prefixes[t]))
                visible = positions.unsqueeze(0) < torch.tensor(reused[start:stop]).unsqueeze(1)
                bias = self._additive(visible)[:, None, None, None]
                groups.append(PrefixGroup(start, stop, self._prefix_kv[t][:blocks], bias))
                start = stop
        return groups

    def _concat_cache_and_mask(self, templates: list[int], reused: list[int], width: int, blocks: int):
        """A cache holding the batch's prefixes side by side, and the mask that lets each
        row see its own prefix tokens and its own tail causally."""
        present = sorted(set(templates))
        starts, total = {}, 0
        for t in present:
            starts[t], total = total, total + len(self.prefixes[t])
        allowed = torch.zeros((len(templates), 1, width, total + width), dtype=torch.bool)
        for r, (t, n) in enumerate(zip(templates, reused)):
            allowed[r, 0, :, starts[t] : starts[t] + n] = True
        allowed[:, 0, :, total:] = torch.tril(torch.ones(width, width, dtype=torch.bool))
        per_block = [
            (
                torch.cat([self._prefix_kv[t][b][0] for t in present], dim=2),
                torch.cat([self._prefix_kv[t][b][1] for t in present], dim=2),
            )
            for b in range(blocks)
        ]
        return PrefixCache(per_block, len(templates)), self._additive(allowed)

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean mask as an additive one on the model's device: 0 where allowed, dtype min elsewhere."""
        mask = torch.zeros(allowed.shape, dtype=self.dtype)
        return mask.masked_fill_(~allowed, torch.finfo(self.dtype).min).to(self.device)

    # -- forward passes ------------------------------------------------------------
    @property
    def _may_pack(self) -> bool:
        """Whether this run's passes can be padding-free: ``packed`` mode and no boosters (whose
        hooks index padded rows)."""
        return self.prefix_mode == "packed" and not self._boosts

    @property
    def packs(self) -> bool:
        """Whether this run's passes are padding-free (:attr:`_may_pack`, once checked)."""
        return self._may_pack and self._packing_checked

    def _forward(
        self, tap: HiddenStateTap, rows: list[list[int]], templates: list[int], reused: list[int] | None = None,
        indices: list[int] | None = None, packed: bool | None = None,
    ) -> torch.Tensor:
        """Pooled states of ``rows``; ``indices`` are their positions in the run (for the boosters);
        ``packed`` (default: :attr:`packs`) runs them padding-free."""
        if reused is None:
            reused = self._reused(rows, templates)
        packed = self.packs if packed is None else packed
        tails = [ids[n:] for ids, n in zip(rows, reused)]
        batch, width = len(tails), max(len(t) for t in tails)
        self.stats.passes += 1
        self.stats.tokens += sum(len(t) for t in tails)
        self.stats.padded_tokens += sum(len(t) for t in tails) if packed else batch * width
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        valid = torch.zeros((batch, width), dtype=torch.bool)
        for r, tail in enumerate(tails):
            input_ids[r, : len(tail)] = torch.tensor(tail)
            valid[r, : len(tail)] = True
        position_ids = torch.tensor(reused).unsqueeze(1) + torch.arange(width).unsqueeze(0)
        last_index = valid.sum(1) - 1
        attending = contextlib.nullcontext()
        kwargs = {"use_cache": False}
        if self.prefix_mode in ("broadcast", "packed"):
            causal = torch.tril(torch.ones(width, width, dtype=torch.bool)).expand(batch, 1, width, width)
            kwargs["attention_mask"] = self._additive(causal)
            packing = Packing.of([len(t) for t in tails], self.device) if packed else None
            groups = self._broadcast_groups(templates, reused, tap.blocks_run)
            attending = broadcast_prefix(self.model, groups, packing)
            if packing is not None:
                input_ids, position_ids = input_ids[valid].unsqueeze(0), position_ids[valid].unsqueeze(0)
                last_index = packing.last  # packed positions from here on
        elif self.prefix_mode == "concat":
            cache, kwargs["attention_mask"] = self._concat_cache_and_mask(templates, reused, width, tap.blocks_run)
            kwargs.update({self._cache_kw: cache, "use_cache": True})
        else:
            kwargs["attention_mask"] = valid.long().to(self.device)
        if self.pooling == "last":
            pool = (packed_last_token_pool if packed else last_token_pool)(last_index.to(self.device))
        elif self.pooling == "span":
            mask = span_mask([self._spans[i] for i in indices], reused, width).to(self.device)
            pool = packed_mean_pool(mask, valid.to(self.device)) if packed else mean_pool(mask)
        else:
            pool = mean_pool(valid.to(self.device))
        with contextlib.ExitStack() as hooks:
            hooks.enter_context(attending)
            for boost in self._boosts:
                hooks.enter_context(boost.active(indices, reused, last_index.to(self.device)))
            out = tap.run(
                lambda: self.model(
                    input_ids=input_ids.to(self.device), position_ids=position_ids.to(self.device), **kwargs
                ),
                pool,
            )
        return out.float()

    def _forward_splitting(self, tap: HiddenStateTap, rows, templates, reused, indices) -> Iterator[torch.Tensor]:
        """Forward a batch; on out-of-memory, halve it and retry each half."""
        try:
            yield self._forward(tap, rows, templates, reused, indices)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err) or len(rows) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(rows) // 2
            self.limits = BatchLimits(max(1, half), self.limits.max_tokens)
            logger.warning("out of memory on %d rows: retrying in halves (max_rows now %d)", len(rows), half)
            yield from self._forward_splitting(tap, rows[:half], templates[:half], reused[:half], indices[:half])
            yield from self._forward_splitting(tap, rows[half:], templates[half:], reused[half:], indices[half:])

    @torch.inference_mode()
    def run(
        self,
        rows: Sequence[Sequence[int]],
        templates: Sequence[int],
        on_batch: Callable[[int], None] | None = None,
        boosts: Sequence[RowBoost] = (),
        spans: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """Pooled states ``[len(rows), n_layers, D]`` in input order. ``templates[i]``
        is row i's template index (used for prefix reuse and grouping); ``boosts`` are
        boosters bound to these rows (:mod:`metaeol.boosters`); ``spans[i]`` is the
        ``[start, end)`` token span of row i that span pooling averages."""
        rows = [list(r) for r in rows]
        templates = list(templates)
        if (spans is None) != (self.pooling != "span"):
            raise ValueError("span pooling needs spans, and only span pooling takes them")
        out: torch.Tensor | None = None
        self._boosts = tuple(boosts)
        self._spans = None if spans is None else [tuple(span) for span in spans]
        try:
            with HiddenStateTap(self.model, self.layer_indices) as tap:
                if self.uses_prefix and self._prefix_kv is None and rows:
                    self._enable_prefix_reuse(tap, rows[0], templates[0])
                reused = self._reused(rows, templates)
                if self._may_pack and not self._packing_checked:
                    self._check_packing(tap, rows[0], templates[0], reused[0])
                lengths = [len(r) - n for r, n in zip(rows, reused)]
                # Passes mix templates to cut padding, except with the concat cache, where each
                # row would copy every present template's prefix.
                by_template = templates if self.prefix_mode == "concat" else None
                for batch in plan_batches(lengths, self.limits, by_template, packed=self.packs):
                    batch.sort(key=lambda i: templates[i])  # each template's rows side by side
                    started = time.perf_counter()
                    pieces = list(self._forward_splitting(
                        tap, [rows[i] for i in batch], [templates[i] for i in batch], [reused[i] for i in batch], batch
                    ))
                    result = torch.cat(pieces).cpu()
                    self.stats.seconds += time.perf_counter() - started
                    if out is None:
                        out = torch.empty((len(rows), *result.shape[1:]), dtype=torch.float32)
                    out[torch.tensor(batch)] = result
                    if on_batch is not None:
                        on_batch(len(batch))
        finally:
            self._boosts, self._spans = (), None
        return out
