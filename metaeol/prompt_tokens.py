"""Sentences to prompt token ids: validate, clean, cut long sentences, fill every template, tokenize."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from metaeol.methods.echo import Span, echo_prefix, echo_prompt, leading_text, pooled_span
from metaeol.prompts import PromptSet
from metaeol.text import clean_sentence

logger = logging.getLogger(__name__)


def shared_prefix_length(ids: Sequence[int], prefix: Sequence[int]) -> int:
    """How many leading tokens of ``ids`` equal ``prefix``'s, leaving at least the last
    token of ``ids`` out: where a prompt leaves its template's prefix tokens."""
    limit = min(len(prefix), len(ids) - 1)
    n = 0
    while n < limit and ids[n] == prefix[n]:
        n += 1
    return n


class PromptTokenizer:
    """Turns sentences into the token ids of their prompts, one row per (sentence, template).

    Args:
        tokenizer: the model's transformers tokenizer.
        prompt_set: the templates every sentence is placed in.
        clean: apply the reference sentence clean-up (:func:`metaeol.text.clean_sentence`).
        max_sentence_tokens: longer sentences are cut to this many tokens (never the
            template); ``None`` disables the limit.
    """

    def __init__(self, tokenizer: Any, prompt_set: PromptSet, *, clean: bool = True,
                 max_sentence_tokens: int | None = 512):
        if max_sentence_tokens is not None and (
            isinstance(max_sentence_tokens, bool) or not isinstance(max_sentence_tokens, int) or max_sentence_tokens < 1
        ):
            raise ValueError(f"max_sentence_tokens must be a positive int or None, got {max_sentence_tokens!r}")
        self.tokenizer = tokenizer
        self.prompt_set = prompt_set
        self.clean = clean
        self.max_sentence_tokens = max_sentence_tokens

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"]

    def prefixes(self) -> list[list[int]]:
        """Token ids of each template's shared prefix (what every one of its prompts starts with)."""
        leading = leading_text(self.tokenizer) if self.prompt_set.echo else ""
        return [echo_prefix(self.tokenizer, t, leading) if t.echo else self.tokenize([t.shared_prefix])[0]
                for t in self.prompt_set]

    @staticmethod
    def validate(sentences: Sequence[str]) -> None:
        """A TypeError naming the first item that is not a str."""
        if isinstance(sentences, (str, bytes)):
            raise TypeError("pass a list of sentences, not a single string")
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentence #{i} is {type(s).__name__}, not str: {s!r:.80}")

    def _cleaned(self, sentences: Sequence[str]) -> list[str]:
        self.validate(sentences)
        return [clean_sentence(s) if self.clean else s for s in sentences]

    def sentence_tokens(self, sentences: Sequence[str]) -> list[int]:
        """Model tokens of each sentence as its prompts hold it (cleaned), before any cut."""
        texts = self._cleaned(sentences)
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []

    def prepare(self, sentences: Sequence[str]) -> tuple[list[str], int]:
        """Validated, cleaned and length-limited sentences, and how many were cut."""
        out = self._cleaned(sentences)
        cut = 0
        if self.max_sentence_tokens is not None and out:
            out, cut = self._truncate(out)
        return out, cut

    def _truncate(self, texts: list[str]) -> tuple[list[str], int]:
        """Cut each text longer than the limit at the end of its last allowed token, in the
        original text (token offsets), so the cut text is never decoded from token ids."""
        limit = self.max_sentence_tokens
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        encoded = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=fast)
        out, cut = list(texts), 0
        for i, ids in enumerate(encoded["input_ids"]):
            if len(ids) <= limit:
                continue
            cut += 1
            if not fast:  # slow tokenizers give no offsets: the decoded tokens are the best cut
                out[i] = self.tokenizer.decode(ids[:limit])
                continue
            ends = sorted({end for _, end in encoded["offset_mapping"][i][:limit]}, reverse=True)
            for end in ends:  # a token may end inside a character's bytes: step back until it fits
                if len(self.tokenizer(texts[i][:end], add_special_tokens=False)["input_ids"]) <= limit:
                    out[i] = texts[i][:end]
                    break
            else:
                out[i] = ""
        if cut:
            logger.warning("%d of %d sentences were longer than %d tokens and were truncated (the templates were not)",
                           cut, len(texts), limit)
        return out, cut

    def prompts(self, sentences: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids of every prompt, sentence-major (sentence 0 in each template, then
        sentence 1, ...), and each row's template index. Echo templates are tokenized piece by
        piece (:func:`metaeol.methods.echo.echo_prompt`)."""
        rows, _ = self._rows(sentences)
        return rows, self._template_indices(sentences)

    def prompts_with_spans(self, sentences: list[str], pooling: str) -> tuple[list[list[int]], list[int], list[Span]]:
        """:meth:`prompts` and, per row, the token span that ``pooling`` averages: an echo template's
        second sentence copy (its last token for ``last``), else the whole prompt (its last token)."""
        rows, copies = self._rows(sentences)
        spans = [pooled_span(copy or (0, len(ids)), len(ids), pooling) for ids, copy in zip(rows, copies)]
        return rows, self._template_indices(sentences), spans

    def _template_indices(self, sentences: list[str]) -> list[int]:
        return [j for _ in sentences for j in range(len(self.prompt_set))]

    def _rows(self, sentences: list[str]) -> tuple[list[list[int]], list[Span | None]]:
        """Token ids of every prompt and, for echo templates, the span of the second sentence copy."""
        n_templates = len(self.prompt_set)
        rows = self.tokenize([t.fill(s) for s in sentences for t in self.prompt_set])
        copies: list[Span | None] = [None] * len(rows)
        if self.prompt_set.echo:
            leading = leading_text(self.tokenizer)
            for i, (s, t) in enumerate((s, t) for s in sentences for t in self.prompt_set):
                if t.echo:
                    rows[i], copies[i] = echo_prompt(self.tokenizer, t, s, leading)
        empty = next((i for i, r in enumerate(rows) if not r), None)
        if empty is not None:
            raise ValueError(
                f"sentence {sentences[empty // n_templates]!r} gives a prompt with no tokens (empty template "
                "and a tokenizer that adds no BOS token); nothing to embed"
            )
        return rows, copies
