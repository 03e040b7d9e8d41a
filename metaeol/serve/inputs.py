"""Turn validated request inputs into texts for the encoder, with their token counts.

Token-id inputs are decoded with the model's tokenizer (special tokens dropped) and then
treated exactly like the same text sent as a string. A text is counted as the encoder's
own :class:`~metaeol.prompt_tokens.PromptTokenizer` sees it (cleaned when the encoder
cleans, no special tokens); that count decides the ``--max-sentence-tokens`` limit, and,
capped at the limit, is the request's ``usage``.

Before tokenizing, a text is cut to ``max_chars`` = (limit + 8) x the length of the
vocabulary's longest token string: no token covers more characters than that, so a text
within the token limit is never cut, and a longer one keeps at least 8 tokens past the
limit, so the cut changes none of the tokens the encoder keeps (only the ones near the cut).
This bounds the work per input (a 2 MB word is not tokenized whole, here or in the model's
thread).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

from metaeol.prompt_tokens import PromptTokenizer
from metaeol.serve.errors import APIError
from metaeol.serve.schema import Item


_MARGIN_TOKENS = 8  # whole tokens kept past the limit when a text is cut by characters


@dataclass
class PreparedInputs:
    texts: list[str]  # what is passed to ``MetaEOL.encode``
    tokens: list[int]  # model tokens of each text after any truncation


class InputPreparer:
    """Decodes token ids, counts tokens and applies the truncation policy.

    It keeps its own copy of the tokenizer so that it never shares one with the
    thread that runs the model (fast tokenizers reject concurrent use).
    """

    def __init__(self, encoder: Any, truncate: bool):
        self.tokenizer = copy.deepcopy(encoder.tokenizer)
        self.sentences = PromptTokenizer(self.tokenizer, encoder.prompt_set, clean=encoder.clean,
                                         max_sentence_tokens=None)
        self.limit: int | None = encoder.max_sentence_tokens
        self.truncate = truncate
        self.vocab_size = len(self.tokenizer)
        longest = max(len(token) for token in self.tokenizer.get_vocab())
        self.max_chars = None if self.limit is None else (self.limit + _MARGIN_TOKENS) * longest

    def __call__(self, items: Sequence[Item]) -> PreparedInputs:
        texts = [item if isinstance(item, str) else self._decode(i, item) for i, item in enumerate(items)]
        if self.max_chars is not None:
            texts = [text[:self.max_chars] for text in texts]
        counts = self.sentences.sentence_tokens(texts)
        if self.limit is not None:
            too_long = next((i for i, n in enumerate(counts) if n > self.limit), None)
            if too_long is not None and not self.truncate:
                raise APIError(400, f"input[{too_long}] has more than {self.limit} tokens, this server's limit "
                                    "(--max-sentence-tokens); shorten it, or start the server with --truncate to cut "
                                    "long inputs", param="input", code="context_length_exceeded")
            counts = [min(n, self.limit) for n in counts]
        return PreparedInputs(texts, counts)

    def _decode(self, index: int, ids: list[int]) -> str:
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"input[{index}] has token id {bad}, outside this model's vocabulary "
                                f"(0..{self.vocab_size - 1})", param="input", code="invalid_token_id")
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if not text:
            raise APIError(400, f"input[{index}] decodes to an empty text (only special tokens); nothing to embed",
                           param="input")
        return text
