"""The MetaEOL sentence encoder.

One pipeline, top-down: :class:`~metaeol.prompt_tokens.PromptTokenizer` prepares the
sentences and tokenizes every prompt -> :meth:`Engine.run <metaeol.engine.Engine.run>`
computes each prompt's last-token state at the requested layers -> per-template states
``[N, T, L, D]`` (optionally through a :class:`~metaeol.cache.TemplateStateCache`) ->
mean over templates -> EmbedFilter projection (when on) -> normalize / quantize.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from metaeol.boosters.contrastive import CapturedRows, ContrastedRows, ContrastivePrompting, output_projection
from metaeol.boosters.token_prepending import (
    OfficialPlaceholders, PlaceholderHooks, PrependedRows, TokenPrepending, insert_placeholders, official_prompt_set,
)
from metaeol.cache import TemplateStateCache, TemplateStates
from metaeol.engine import PREFIX_ATTENTION_MODES, BatchLimits, Engine, EngineStats, check_prefix_attention
from metaeol.layers import LayerSpec, is_single_layer, num_hidden_layers, resolve_layers
from metaeol.loading import DEFAULT_MODEL, load_model, parse_dtype
from metaeol.methods.demonstrations import Demonstrations, load_demonstrations
from metaeol.methods.embed_filter import apply_filter, check_ratio, filtered_dim, projection
from metaeol.prompt_rows import PromptRows
from metaeol.prompt_tokens import PromptTokenizer, shared_prefix_length
from metaeol.prompts import PromptSet, Template, load_prompt_set
from metaeol.quantization import is_quantized, quantize_blocks
from metaeol.settings import VectorSettings
from metaeol.store import VectorStore
from metaeol.versions import library_versions
from metaeol.weights_identity import parameters_id, source_weights_id

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "float16", "binary", "ubinary")
_CHUNK_SENTENCES = 4096  # sentences tokenized and sorted together


class MetaEOL:
    """Sentence embeddings from a decoder-only LLM by meta-task prompting.

    Each sentence is placed in every template of ``prompts``; the hidden state of each
    prompt's last token at ``layer`` is taken, and the templates' states are averaged.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a loaded transformers model
            (then pass ``tokenizer`` too).
        prompts: built-in prompt set name (``metaeol``, ``prompteol``, ``pcoteol``, ``ke``, ``ck``,
            ``metaeol-ck``, ``echo``),
            a YAML/JSON file, or a :class:`PromptSet`.
        tasks: keep only templates of these meta-tasks (e.g. ``["SA", "PI"]`` or ``"SA,PI"``).
        layer: hidden-state index (``-1`` = final output after the final norm, ``k`` =
            after block ``k``), or a list of them (or ``"all"``) to get one embedding per layer.
        dtype: ``float32`` (CPU default), ``bfloat16`` (GPU default), ``float16``, or ``int8``
            (CPU: int8 linear layers in the blocks, everything else float32; see
            :mod:`metaeol.quantization`).
        engine: ``prefix`` (reuse each template's prefix states; default) or ``plain``.
        prefix_attention: how the prefix engine attends the stored states, tried in order
            until one reproduces a full prompt: ``broadcast`` (one copy for all rows) and
            ``concat`` (a per-row copy); see docs/engine.md.
        clean: apply the reference sentence clean-up.
        max_sentence_tokens: longer sentences are cut to this many tokens (the template
            is never cut); ``None`` disables the limit.
        pooling: ``last`` (the method) or ``mean`` (plain mean pooling, a baseline).
        max_batch_tokens: padded tokens per forward pass (default 512 on CPU, 16384 on GPU).
        store: a :class:`~metaeol.store.VectorStore` (or its path) used as a cache of
            per-template vectors: ``encode`` computes only the sentences it lacks.
        token_prepending: a :class:`~metaeol.boosters.TokenPrepending` booster (default
            off); see docs/boosters.md.
        contrastive: a :class:`~metaeol.boosters.ContrastivePrompting` booster (default off).
        demonstrations: in-context demonstrations placed before each template (PromptEOL + ICL):
            a demonstrations file, ``POOL:PICK`` (e.g. ``scaling_sentemb:opt-2.7b``) or a
            :class:`~metaeol.methods.demonstrations.Demonstrations`; see docs/methods.md.
        embed_filter: EmbedFilter ratio: project the embeddings onto the middle
            ``hidden_size // embed_filter`` singular directions of the unembedding matrix
            (default off; 1 keeps every dimension).

    Echo templates (two ``{s}``, e.g. the ``echo`` prompt set) pool over the sentence's second
    copy: its last token for ``last``, its mean for ``mean`` (:mod:`metaeol.methods.echo`).
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        prompts: str | os.PathLike | PromptSet = "metaeol",
        *,
        tokenizer: Any = None,
        tasks: str | Sequence[str] | None = None,
        layer: LayerSpec = -1,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        revision: str | None = None,
        engine: str = "prefix",
        prefix_attention: Sequence[str] = PREFIX_ATTENTION_MODES,
        clean: bool = True,
        max_sentence_tokens: int | None = 512,
        pooling: str = "last",
        max_batch_tokens: int | None = None,
        store: "str | os.PathLike | VectorStore | None" = None,
        token_prepending: TokenPrepending | None = None,
        contrastive: ContrastivePrompting | None = None,
        demonstrations: "str | os.PathLike | Demonstrations | None" = None,
        embed_filter: int | None = None,
    ):
        if engine not in ("prefix", "plain"):
            raise ValueError(f"unknown engine {engine!r}; use 'prefix' or 'plain'")
        if pooling not in ("last", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}; use 'last' or 'mean'")
        for name, value, kind in (("token_prepending", token_prepending, TokenPrepending),
                                  ("contrastive", contrastive, ContrastivePrompting)):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be a {kind.__name__} or None, got {type(value).__name__}")
            if value is not None and pooling != "last":
                raise ValueError(f"{name} needs pooling='last'")
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        self.prefix_attention = check_prefix_attention(prefix_attention)
        self.prompt_set = load_prompt_set(prompts, tasks=tasks)
        if demonstrations is not None:
            self.prompt_set = load_demonstrations(demonstrations).apply(self.prompt_set)
        if self.prompt_set.echo and (token_prepending is not None or contrastive is not None):
            raise ValueError("the boosters do not apply to echo templates (two {s}): their positions assume one copy")
        int8 = isinstance(dtype, str) and dtype.lower() == "int8"
        if int8:
            dtype = torch.float32  # the int8 layers take and give float32
        head = None  # the language-model head, when a model with one is passed (EmbedFilter reads it)
        if isinstance(model, (str, os.PathLike)):
            self.model, self.tokenizer, source = load_model(
                model, dtype=dtype, device=device, attn_implementation=attn_implementation, revision=revision
            )
            self.model_name = source.name
            revision = getattr(self.model.config, "_commit_hash", None) or revision  # a branch name moves
            self._weights_id: str | None = source_weights_id(model, revision)
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer= together with a loaded model")
            self.model = getattr(model, "base_model", model).eval()
            if device is not None:
                self.model.to(device)
            if dtype is not None and is_quantized(self.model) and parse_dtype(dtype, self.model.device) != torch.float32:
                raise ValueError(f"this model has int8 layers, which compute in float32; dtype {dtype!r} cannot apply")
            if dtype is not None:
                self.model.to(parse_dtype(dtype, self.model.device))
            self.tokenizer = tokenizer
            self.model_name = getattr(model.config, "name_or_path", type(model).__name__)
            self._weights_id = None  # its parameters' hash, taken on first use (weights_id)
            head = getattr(model, "get_output_embeddings", lambda: None)()
        if int8 and not is_quantized(self.model):
            quantize_blocks(self.model)
        self.revision = revision or getattr(self.model.config, "_commit_hash", None)
        self.num_layers = num_hidden_layers(self.model)
        self.layer = layer
        self.layers = resolve_layers(layer, self.num_layers)
        self.embed_filter = check_ratio(embed_filter, self.hidden_size)
        self.output_head = head  # a passed model's language-model head (EmbedFilter reads its matrix)
        if token_prepending is not None:
            token_prepending.check(self.num_layers, self.hidden_size)
            if token_prepending.placement == "official":
                official_prompt_set(self.prompt_set)  # every template must quote its sentence
        self.token_prepending = token_prepending
        if contrastive is not None:
            contrastive.check(self.num_layers)
            output_projection(self.model, contrastive.layer)
        self.contrastive = contrastive
        # mean pooling over whole prompts cannot reuse prefixes; echo templates pool a span after them
        self.engine_kind = "plain" if pooling == "mean" and not self.prompt_set.echo else engine
        self.pooling = pooling
        self.prompt_tokens = PromptTokenizer(self.tokenizer, self.prompt_set, clean=clean,
                                             max_sentence_tokens=max_sentence_tokens)
        # CPUs run fastest on small, cache-sized passes; GPUs on large ones.
        self.max_batch_tokens = max_batch_tokens or (512 if self.device.type == "cpu" else 16384)
        self.truncated_count = 0
        self.store = VectorStore(store) if isinstance(store, (str, os.PathLike)) else store
        self._engines: dict[tuple[int, ...], Engine] = {}
        self._lock = model_lock(self.model)  # one forward at a time per model: hooks live on the model
        self._rows_token = object()  # marks the PromptRows this encoder made (see run_rows)

    # -- properties ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type the model computes in (float32 under ``dtype="int8"``)."""
        return next(self.model.parameters()).dtype

    @property
    def dtype_name(self) -> str:
        """``int8`` for a model with int8 layers, else the name of :attr:`dtype` (``float32`` ...)."""
        return "int8" if is_quantized(self.model) else str(self.dtype).replace("torch.", "")

    @property
    def weights_id(self) -> str:
        """The identity of the weights (:mod:`metaeol.weights_identity`): the hub commit or a hash
        of the local files' contents when loaded by name, a hash of the parameters for a model
        passed in (taken on first use: make a new encoder after changing its parameters)."""
        if self._weights_id is None:
            self._weights_id = parameters_id(self.model)
        return self._weights_id

    @weights_id.setter
    def weights_id(self, value: str) -> None:
        self._weights_id = value

    @property
    def hidden_size(self) -> int:
        """The model's hidden size: the dimension of the per-template states."""
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def embedding_dim(self) -> int:
        """The dimension of :meth:`encode`'s vectors (smaller under EmbedFilter)."""
        return filtered_dim(self.hidden_size, self.embed_filter)

    def filter_matrix(self) -> torch.Tensor | None:
        """EmbedFilter's ``[embedding_dim, hidden_size]`` projection (None without EmbedFilter)."""
        return None if self.embed_filter is None else projection(self.model, self.embed_filter, self.output_head)

    def engine_stats(self) -> EngineStats:
        """What this encoder's forward passes have computed so far (all its engines together);
        the difference of two calls is what ran in between."""
        return sum((engine.stats for engine in list(self._engines.values())), EngineStats())

    @property
    def padding_free(self) -> bool:
        """Whether this encoder's forward passes compute no padding: the prefix engine's ``packed``
        mode, known after a first encode (Token Prepending and Contrastive Prompting keep passes padded)."""
        engine = self._engines.get(tuple(self.layers))
        return (engine is not None and engine.packs and self.token_prepending is None
                and self.contrastive is None)

    @property
    def clean(self) -> bool:
        return self.prompt_tokens.clean

    @property
    def max_sentence_tokens(self) -> int | None:
        return self.prompt_tokens.max_sentence_tokens

    @property
    def settings(self) -> VectorSettings:
        """Everything that changes this encoder's vectors: the one record that the store key,
        results files and the integrations read (:mod:`metaeol.settings`)."""
        return VectorSettings.of(self)

    @property
    def model_key(self) -> str:
        """Identifies the weights and precision: model name, weights id, dtype."""
        return self.settings.model_key

    @property
    def cache_key(self) -> str:
        """The vector store's model key (:attr:`VectorSettings.store_key`)."""
        return self.settings.store_key

    def describe(self) -> dict[str, Any]:
        """The full configuration, for results files: the vector settings plus how they run."""
        return {
            **self.settings.describe(),
            "device": str(self.device),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "embedding_dim": self.embedding_dim,
            "engine": self.engine_kind,
            "versions": library_versions(),
        }

    # -- the pipeline --------------------------------------------------------------
    def prepare(self, sentences: Sequence[str]) -> list[str]:
        """Validated, cleaned and length-limited sentences, ready to be placed in templates."""
        prepared, cut = self.prompt_tokens.prepare(sentences)
        self.truncated_count += cut
        return prepared

    @cached_property
    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        return pad

    @cached_property
    def _template_prefixes(self) -> list[list[int]]:
        return self.prompt_tokens.prefixes()

    @cached_property
    def _placeholder_hooks(self) -> PlaceholderHooks:
        return PlaceholderHooks(self.model, self.token_prepending)

    @cached_property
    def _official_placeholders(self) -> OfficialPlaceholders:
        return OfficialPlaceholders(self.tokenizer, self.prompt_set, self._pad_token_id)

    @cached_property
    def _auxiliary_prompts(self) -> PromptTokenizer:
        auxiliary = PromptSet("auxiliary", (Template("auxiliary", self.contrastive.auxiliary),))
        return PromptTokenizer(self.tokenizer, auxiliary, clean=False, max_sentence_tokens=None)

    def _engine(self, layers: Sequence[int], batch_rows: int, auxiliary: bool = False) -> Engine:
        """The engine reading ``layers`` of the main prompts, or (``auxiliary``) of the
        contrastive auxiliary prompt, which runs up to its steered block only."""
        key = ("auxiliary", *layers) if auxiliary else tuple(layers)
        if key not in self._engines:
            prefixes = (self._auxiliary_prompts.prefixes() if auxiliary else self._template_prefixes)
            pooling = "span" if self.prompt_set.echo and not auxiliary else self.pooling
            self._engines[key] = Engine(
                self.model, list(layers), prefixes=prefixes if self.engine_kind == "prefix" else None,
                pooling=pooling, pad_token_id=self._pad_token_id, prefix_attention=self.prefix_attention,
            )
        engine = self._engines[key]
        engine.limits = BatchLimits(max_rows=batch_rows, max_tokens=self.max_batch_tokens)
        return engine

    def prompt_rows(self, sentences: Sequence[str]) -> PromptRows:
        """Every prompt of every sentence, tokenized, with what the boosters need per row
        (see :mod:`metaeol.prompt_rows`); :meth:`run_rows` computes them."""
        prepared = self.prepare(sentences)
        spans = positions = None
        if not prepared:
            return PromptRows(self._rows_token, [], len(self.prompt_set), [], [])
        if self.prompt_set.echo:
            ids, templates, spans = self.prompt_tokens.prompts_with_spans(prepared, self.pooling)
        else:
            ids, templates = self.prompt_tokens.prompts(prepared)
        if self.token_prepending is not None:  # the placeholder's id is never read: its input vector is set
            if self.token_prepending.placement == "official":
                ids, positions = self._official_placeholders.rows(prepared)
            else:
                ids, positions = insert_placeholders(ids, templates, self._template_prefixes, self._pad_token_id)
        prefixes = self._template_prefixes
        costs = [len(row) - shared_prefix_length(row, prefixes[t]) if self.engine_kind == "prefix" else len(row)
                 for row, t in zip(ids, templates)]
        return PromptRows(self._rows_token, prepared, len(self.prompt_set), ids, templates, positions, spans, costs)

    def run_rows(self, parts: Sequence[tuple[PromptRows, Sequence[int]]], layers: Sequence[int] | None = None,
                 batch_size: int = 32, on_rows: Callable[[int], None] | None = None) -> torch.Tensor:
        """The states ``[rows, n_layers, D]`` (float32, in order) of the given rows of each
        :class:`PromptRows` (from :meth:`prompt_rows` of this encoder), computed in one engine
        run; ``layers`` are resolved layer indices (default: the encoder's)."""
        _check_batch_size(batch_size)
        layers = self.layers if layers is None else list(layers)
        picked = [(rows, list(indices)) for rows, indices in parts]
        if any(rows.made_by is not self._rows_token for rows, _ in picked):
            raise ValueError("run_rows takes the rows of this encoder's prompt_rows only: another encoder's rows "
                             "hold other prompts, tokens or booster positions")
        ids = [rows.ids[r] for rows, indices in picked for r in indices]
        if not ids:
            return torch.empty((0, len(layers), self.hidden_size))
        templates = [rows.templates[r] for rows, indices in picked for r in indices]
        spans = [rows.spans[r] for rows, indices in picked for r in indices] if self.prompt_set.echo else None
        boosts = []
        if self.token_prepending is not None:
            positions = [rows.placeholder_positions[r] for rows, indices in picked for r in indices]
            boosts.append(PrependedRows(self._placeholder_hooks, positions))
        with self._lock:
            if self.contrastive is not None:
                for rows, indices in picked:
                    missing = rows.missing_negatives(indices)
                    if missing:
                        states = self._auxiliary_states([rows.sentences[s] for s in missing], batch_size)
                        rows.negatives.update(zip(missing, states))
                sentence_of_row = [(k, rows.sentence_of(r)) for k, (rows, indices) in enumerate(picked) for r in indices]
                sentences = list(dict.fromkeys(sentence_of_row))
                negatives = torch.stack([picked[k][0].negatives[s] for k, s in sentences])
                number = {sentence: i for i, sentence in enumerate(sentences)}
                boosts.append(ContrastedRows(output_projection(self.model, self.contrastive.layer), negatives,
                                             [number[sentence] for sentence in sentence_of_row], self.contrastive.scale))
            engine = self._engine(layers, batch_rows=batch_size * len(self.prompt_set))
            states = engine.run(ids, templates, on_batch=on_rows, boosts=boosts, spans=spans)
        # an ordinary tensor over the same memory: the engine's is an inference tensor, read-only outside inference mode
        return torch.from_numpy(states.numpy())

    def rows_to_embeddings(self, states: torch.Tensor, normalize_embeddings: bool = False) -> torch.Tensor:
        """Embeddings ``[N, n_layers, D']`` from all rows' states ``[N * n_templates, n_layers, D]``
        of :meth:`run_rows`, in row order: as :meth:`encode` makes them, before its layer and
        precision handling."""
        pooled = states.view(-1, len(self.prompt_set), *states.shape[1:]).mean(dim=1)
        return self._finish(pooled, normalize_embeddings)

    def _finish(self, pooled: torch.Tensor, normalize_embeddings: bool) -> torch.Tensor:
        """EmbedFilter (when on) and normalization of the template means ``[N, n_layers, D]``."""
        if self.embed_filter is not None:
            pooled = apply_filter(pooled, self.filter_matrix())
        if normalize_embeddings:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def _compute_template_states(self, sentences: list[str], layers: list[int], templates: list[int],
                                 batch_size: int, on_rows: Callable[[int], None]) -> np.ndarray:
        """The model step: the last-token states ``[n, len(templates), L, D]`` of the given
        template indices at resolved ``layers``."""
        rows = self.prompt_rows(sentences)
        wanted = set(templates)
        picked = [r for r in range(len(rows)) if rows.templates[r] in wanted]  # sentence-major, template order
        states = self.run_rows([(rows, picked)], layers, batch_size, on_rows)
        return states.view(len(rows.sentences), len(templates), len(layers), -1).numpy()

    def _auxiliary_states(self, prepared: list[str], batch_size: int) -> torch.Tensor:
        """Per sentence, the contrastive auxiliary prompt's input to the steered block's
        attention output projection at its last token ``[n, features]``."""
        rows, templates = self._auxiliary_prompts.prompts(prepared)
        capture = CapturedRows(output_projection(self.model, self.contrastive.layer), len(rows))
        self._engine([self.contrastive.layer + 1], batch_rows=batch_size, auxiliary=True).run(
            rows, templates, boosts=[capture])
        return capture.values

    def _template_states(self, batch_size: int, on_rows: Callable[[int], None],
                         templates: Sequence[int] | None = None) -> TemplateStates:
        """The step ``(sentences, layers) -> [n, len(templates), L, D]`` for the given template
        indices (default: all), through the store when the encoder has one."""
        _check_batch_size(batch_size)
        templates = list(range(len(self.prompt_set))) if templates is None else list(templates)

        def compute(sentences: list[str], layers: list[int], which: list[int]) -> np.ndarray:
            return self._compute_template_states(sentences, layers, [templates[k] for k in which], batch_size, on_rows)

        if self.store is None:
            return lambda sentences, layers: compute(sentences, layers, list(range(len(templates))))
        return TemplateStateCache(self.store, self.cache_key, [self.prompt_set.templates[j].sha256 for j in templates],
                                  compute)

    def _chunks(self, sentences: Sequence[str], layers: list[int], batch_size: int,
                show_progress_bar: bool | None, templates: Sequence[int] | None = None):
        """Yield ``(start, states [n, T, L, D])`` for consecutive chunks of sentences (``T``: the
        given template indices, default all)."""
        self.prompt_tokens.validate(sentences)  # fail on bad input before any model time
        items = list(sentences)
        if show_progress_bar is None:
            show_progress_bar = len(items) >= 256 and logger.getEffectiveLevel() <= logging.WARNING
        n_templates = len(self.prompt_set) if templates is None else len(templates)
        with tqdm(total=len(items), desc="Encoding", unit="sent", disable=not show_progress_bar) as bar:
            rows_done = [0]

            def on_rows(rows: int) -> None:  # passes mix templates: count whole sentences only
                before = rows_done[0] // n_templates
                rows_done[0] += rows
                bar.update(rows_done[0] // n_templates - before)

            step = self._template_states(batch_size, on_rows, templates)
            for start in range(0, len(items), _CHUNK_SENTENCES):
                yield start, step(items[start : start + _CHUNK_SENTENCES], layers)

    def encode_templates(
        self,
        sentences: Sequence[str],
        layers: LayerSpec | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        templates: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Per-template last-token states ``[N, n_templates, n_layers, D]`` (float32, ``D`` the
        hidden size, before any EmbedFilter), for all requested layers in one pass (default: the
        encoder's layers); ``templates``: increasing template indices to encode (default all)."""
        self.prompt_tokens.validate(sentences)
        resolved = self.layers if layers is None else resolve_layers(layers, self.num_layers)
        if templates is not None:
            templates = [int(t) for t in templates]
            if sorted(set(templates)) != templates or not all(0 <= t < len(self.prompt_set) for t in templates):
                raise ValueError(f"templates must be increasing indices 0..{len(self.prompt_set) - 1}, got {templates}")
        n_templates = len(self.prompt_set) if templates is None else len(templates)
        out = np.empty((len(sentences), n_templates, len(resolved), self.hidden_size), dtype=np.float32)
        for start, states in self._chunks(sentences, resolved, batch_size, show_progress_bar, templates):
            out[start : start + len(states)] = states
        return out

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = False,
        precision: str = "float32",
    ) -> np.ndarray | torch.Tensor:
        """Embed sentences (sentence-transformers' conventions).

        Returns ``[N, D]`` (or ``[D]`` for a single string); with several layers,
        ``[N, n_layers, D]``. Order follows the input; results do not depend on
        ``batch_size`` or on which sentences share a batch.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
        single = isinstance(sentences, str)
        items = [sentences] if single else list(sentences)
        pooled = torch.empty((len(items), len(self.layers), self.hidden_size), dtype=torch.float32)
        for start, states in self._chunks(items, self.layers, batch_size, show_progress_bar):
            pooled[start : start + len(states)] = torch.from_numpy(states).mean(dim=1)
        pooled = self._finish(pooled, normalize_embeddings)
        if is_single_layer(self.layer):
            pooled = pooled[:, 0]
        if single:
            pooled = pooled[0]
        pooled = _quantize(pooled, precision)
        if convert_to_tensor:
            return pooled.to(self.device)
        return pooled.numpy() if convert_to_numpy else pooled

    def similarity(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix between two sets of embeddings."""
        a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
        a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
        return a @ b.transpose(-1, -2)


_MODEL_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The lock that every encoder on ``model`` holds around its forward passes: engines add
    hooks to the shared model, so two encoders on one model must not run at once."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _quantize(embeddings: torch.Tensor, precision: str) -> torch.Tensor:
    if precision == "float32":
        return embeddings
    if precision == "float16":
        return embeddings.half()
    bits = (embeddings > 0).numpy()
    packed = np.packbits(bits, axis=-1)
    if precision == "binary":
        return torch.from_numpy((packed.astype(np.int16) - 128).astype(np.int8))
    return torch.from_numpy(packed)
