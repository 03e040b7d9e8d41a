"""The MetaEOL sentence encoder."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from metaeol.engine import PREFIX_ATTENTION_MODES, BatchLimits, Engine, check_prefix_attention
from metaeol.layers import num_hidden_layers, resolve_layers
from metaeol.loading import DEFAULT_MODEL, load_model, parse_dtype
from metaeol.prompts import PromptSet, load_prompt_set
from metaeol.store import VectorStore, cached_encode_templates
from metaeol.text import clean_sentence

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
        prompts: built-in prompt set name (``metaeol``, ``prompteol``, ``pcoteol``, ``ke``),
            a YAML/JSON file, or a :class:`PromptSet`.
        tasks: keep only templates of these meta-tasks (e.g. ``["SA", "PI"]``).
        layer: hidden-state index (``-1`` = final output after the final norm, ``k`` =
            after block ``k``), or a list of them to get one embedding per layer.
        dtype: ``float32`` (CPU default), ``bfloat16`` (GPU default) or ``float16``.
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
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        prompts: str | os.PathLike | PromptSet = "metaeol",
        *,
        tokenizer: Any = None,
        tasks: Sequence[str] | None = None,
        layer: int | Sequence[int] = -1,
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
    ):
        if engine not in ("prefix", "plain"):
            raise ValueError(f"unknown engine {engine!r}; use 'prefix' or 'plain'")
        self.prefix_attention = check_prefix_attention(prefix_attention)
        self.prompt_set = load_prompt_set(prompts, tasks=tasks)
        if isinstance(model, (str, os.PathLike)):
            self.model, self.tokenizer, source = load_model(
                model, dtype=dtype, device=device, attn_implementation=attn_implementation, revision=revision
            )
            self.model_name = source.name
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer= together with a loaded model")
            self.model = getattr(model, "base_model", model).eval()
            if device is not None:
                self.model.to(device)
            if dtype is not None:
                self.model.to(parse_dtype(dtype, self.model.device))
            self.tokenizer = tokenizer
            self.model_name = getattr(model.config, "name_or_path", type(model).__name__)
        self.revision = revision or getattr(self.model.config, "_commit_hash", None)
        self.num_layers = num_hidden_layers(self.model)
        self.layer = layer
        self.layers = resolve_layers(layer, self.num_layers)
        self.engine_kind = "plain" if pooling == "mean" else engine
        self.clean = clean
        self.max_sentence_tokens = max_sentence_tokens
        self.pooling = pooling
        # CPUs run fastest on small, cache-sized passes; GPUs on large ones.
        self.max_batch_tokens = max_batch_tokens or (512 if self.device.type == "cpu" else 16384)
        self.truncated_count = 0
        self.store = VectorStore(store) if isinstance(store, (str, os.PathLike)) else store
        self._engines: dict[tuple[int, ...], Engine] = {}

    # -- properties ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def model_key(self) -> str:
        """Identifies the weights and precision: model id, revision, dtype."""
        return f"{self.model_name}@{self.revision or 'local'}|{str(self.dtype).replace('torch.', '')}"

    def describe(self) -> dict[str, Any]:
        """The full configuration, for results files."""
        import transformers

        from metaeol import __version__

        return {
            "model": self.model_name,
            "revision": self.revision,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "layers": list(self.layers),
            "num_layers": self.num_layers,
            "prompts": self.prompt_set.describe(),
            "pooling": self.pooling,
            "engine": self.engine_kind,
            "clean": self.clean,
            "max_sentence_tokens": self.max_sentence_tokens,
            "versions": {"metaeol": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        }

    # -- preparation ---------------------------------------------------------------
    def _engine(self, layers: Sequence[int], batch_rows: int) -> Engine:
        key = tuple(layers)
        if key not in self._engines:
            prefixes = None
            if self.engine_kind == "prefix":
                prefixes = [self._tokenize([t.prefix.lstrip()])[0] for t in self.prompt_set]
            pad = self.tokenizer.pad_token_id
            if pad is None:
                pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
            self._engines[key] = Engine(
                self.model, key, prefixes=prefixes, pooling=self.pooling, pad_token_id=pad,
                prefix_attention=self.prefix_attention,
            )
        engine = self._engines[key]
        engine.limits = BatchLimits(max_rows=batch_rows, max_tokens=self.max_batch_tokens)
        return engine

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"]

    def prepare(self, sentences: Sequence[str]) -> list[str]:
        """Validated, cleaned and length-limited sentences, ready to be placed in templates."""
        if isinstance(sentences, str):
            raise TypeError("pass a list of sentences, not a single string")
        out = []
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentence #{i} is {type(s).__name__}, not str: {s!r:.80}")
            out.append(clean_sentence(s) if self.clean else s)
        if self.max_sentence_tokens is not None and out:
            ids = self.tokenizer(out, add_special_tokens=False)["input_ids"]
            long_rows = [i for i, t in enumerate(ids) if len(t) > self.max_sentence_tokens]
            for i in long_rows:
                out[i] = self.tokenizer.decode(ids[i][: self.max_sentence_tokens])
            if long_rows:
                self.truncated_count += len(long_rows)
                logger.warning(
                    "%d of %d sentences were longer than %d tokens and were truncated (the templates were not)",
                    len(long_rows), len(out), self.max_sentence_tokens,
                )
        return out

    # -- encoding ------------------------------------------------------------------
    def _iter_chunks(self, sentences, layers, batch_size, show_progress_bar):
        """Yield ``(start, states [n, T, L, D])`` per chunk of sentences."""
        n_templates = len(self.prompt_set)
        engine = self._engine(layers, batch_rows=max(1, batch_size) * n_templates)
        if show_progress_bar is None:
            show_progress_bar = len(sentences) >= 256 and logger.getEffectiveLevel() <= logging.WARNING
        bar = tqdm(total=len(sentences), desc="Encoding", unit="sent", disable=not show_progress_bar)
        try:
            for start in range(0, len(sentences), _CHUNK_SENTENCES):
                chunk = self.prepare(sentences[start : start + _CHUNK_SENTENCES])
                prompts = [t.fill(s) for s in chunk for t in self.prompt_set]
                rows = self._tokenize(prompts)
                empty = next((i for i, r in enumerate(rows) if not r), None)
                if empty is not None:
                    raise ValueError(
                        f"sentence {chunk[empty // n_templates]!r} gives a prompt with no tokens (empty template "
                        "and a tokenizer that adds no BOS token); nothing to embed"
                    )
                templates = [j for _ in chunk for j in range(n_templates)]
                states = engine.run(rows, templates, on_batch=lambda r: bar.update(r / n_templates))
                yield start, states.view(len(chunk), n_templates, len(layers), -1)
        finally:
            bar.close()

    def encode_templates(
        self,
        sentences: Sequence[str],
        layers: int | Sequence[int] | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Per-template last-token states ``[N, n_templates, n_layers, D]`` (float32),
        for all requested layers in one pass (default: the encoder's layers)."""
        resolved = self.layers if layers is None else resolve_layers(layers, self.num_layers)
        out = np.empty((len(sentences), len(self.prompt_set), len(resolved), self.embedding_dim), dtype=np.float32)
        for start, states in self._iter_chunks(sentences, resolved, batch_size, show_progress_bar):
            out[start : start + len(states)] = states.numpy()
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
        if self.store is not None:
            states = cached_encode_templates(self, self.store, items, self.layers, batch_size=batch_size)
            pooled = torch.from_numpy(states).mean(dim=1)
        else:
            pooled = torch.empty((len(items), len(self.layers), self.embedding_dim), dtype=torch.float32)
            for start, states in self._iter_chunks(items, self.layers, batch_size, show_progress_bar):
                pooled[start : start + len(states)] = states.mean(dim=1)
        if normalize_embeddings:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        if isinstance(self.layer, int):
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
