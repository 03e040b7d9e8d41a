"""Echo embeddings (Springer et al., arXiv 2402.15449; official code: jakespringer/echo-embeddings).

An echo template holds the sentence twice (``Rewrite the following paragraph: {s}. The rewritten
paragraph: {s}``, the zero-shot prompt the authors confirm in echo-embeddings issue #8); the
embedding pools only the tokens of the second copy, which have attended to the whole sentence:
``mean`` averages them, ``last`` takes the last of them (``EchoPooling`` in ``echo_embeddings.py``).

Tokens follow ``EchoParser`` (``_parse_template`` / ``_tokenize_piece``): every text piece of the
template and each copy of the sentence is tokenized on its own, without special tokens, and the
pieces are concatenated after the beginning-of-sequence token (the official templates open with a
literal ``<s>``). The span of the second copy is what ``EchoParser`` marks with ``embed_mask``.
"""

from __future__ import annotations

from typing import Any

from metaeol.prompts import PLACEHOLDER, Template

Span = tuple[int, int]  # [start, end) token positions in a prompt


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The tokens the tokenizer puts before any text (its beginning-of-sequence token, or none)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def echo_prompt(tokenizer: Any, template: Template, sentence: str, leading: list[int]) -> tuple[list[int], Span]:
    """Token ids of ``template`` with ``sentence`` in both places, and the span of its second copy.
    ``leading`` is :func:`leading_special_ids` of the tokenizer; outer whitespace of the template is
    dropped, as :meth:`Template.fill` does."""
    first, middle, last = template.text.split(PLACEHOLDER)

    def tokens(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    copy = tokens(sentence)
    ids = list(leading) + tokens(first.lstrip()) + copy + tokens(middle)
    start = len(ids)
    ids += copy
    return ids + tokens(last.rstrip()), (start, start + len(copy))


def pooled_span(span: Span, length: int, pooling: str) -> Span:
    """The tokens that ``pooling`` (``mean`` or ``last``) averages, where ``span`` is what mean
    pooling covers in a prompt of ``length`` tokens (an echo template's second copy, else the whole
    prompt): ``last`` keeps its last token. An empty sentence's empty copy falls back to the
    prompt's last token (the official pooling would give a zero vector or the first token)."""
    start, end = span
    if end <= start:
        return (length - 1, length)
    return (end - 1, end) if pooling == "last" else (start, end)
