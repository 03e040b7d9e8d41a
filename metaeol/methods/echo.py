"""Echo embeddings (Springer et al., arXiv 2402.15449; official code: jakespringer/echo-embeddings).

An echo template holds the sentence twice (``Rewrite the following paragraph: {s}. The rewritten
paragraph: {s}``, the zero-shot prompt the authors confirm in echo-embeddings issue #8); the
embedding pools only the tokens of the second copy, which have attended to the whole sentence:
``mean`` averages them, ``last`` takes the last of them (``EchoPooling`` in ``echo_embeddings.py``).

Tokens follow ``EchoParser`` (``_parse_template`` / ``_tokenize_piece``): every text piece of the
template and each copy of the sentence is tokenized on its own, without special tokens, and the
pieces are concatenated. The official templates open with the beginning-of-sequence token written
as text (``<s>Rewrite ...``), so the first piece is tokenized after that text: a SentencePiece
tokenizer then adds no word-start marker to its first word. The span of the second copy is what
``EchoParser`` marks with ``embed_mask``.
"""

from __future__ import annotations

from typing import Any

from metaeol.prompts import PLACEHOLDER, Template

Span = tuple[int, int]  # [start, end) token positions in a prompt


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def leading_text(tokenizer: Any) -> str:
    """The beginning-of-sequence token as text when the tokenizer starts every input with it
    (``<s>`` for Llama and Mistral), else ``""``."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return ""
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if full and full[0] == tokenizer.bos_token_id else ""


def echo_prefix(tokenizer: Any, template: Template, leading: str) -> list[int]:
    """Token ids before the first copy of the sentence: ``leading`` (:func:`leading_text`) and the
    template's first piece, tokenized together (outer whitespace dropped, as :meth:`Template.fill`)."""
    return _tokens(tokenizer, leading + template.text.split(PLACEHOLDER)[0].lstrip())


def echo_prompt(tokenizer: Any, template: Template, sentence: str, leading: str) -> tuple[list[int], Span]:
    """Token ids of ``template`` with ``sentence`` in both places, and the span of its second copy."""
    _, middle, last = template.text.split(PLACEHOLDER)
    copy = _tokens(tokenizer, sentence)
    ids = echo_prefix(tokenizer, template, leading) + copy + _tokens(tokenizer, middle)
    start = len(ids)
    ids += copy
    return ids + _tokens(tokenizer, last.rstrip()), (start, start + len(copy))


def pooled_span(span: Span, length: int, pooling: str) -> Span:
    """The tokens that ``pooling`` (``mean`` or ``last``) averages, where ``span`` is what mean
    pooling covers in a prompt of ``length`` tokens (an echo template's second copy, else the whole
    prompt): ``last`` keeps its last token. An empty sentence's empty copy falls back to the
    prompt's last token (the official pooling would give a zero vector or the first token)."""
    start, end = span
    if end <= start:
        return (length - 1, length)
    return (end - 1, end) if pooling == "last" else (start, end)
