"""The encoder the server tests serve: stories260K with a short --max-sentence-tokens."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def encoder(stories_gguf):
    pytest.importorskip("fastapi")
    from _live_server import MAX_TOKENS

    from metaeol import MetaEOL

    return MetaEOL(str(stories_gguf), max_sentence_tokens=MAX_TOKENS)
