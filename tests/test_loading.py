"""GGUF conversion: the tokenizer follows the file's special tokens, whatever transformers did."""

import copy

import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from metaeol.loading import align_special_tokens


def test_sentencepiece_gguf_adds_bos_and_names_eos(stories_folder, stories_gguf):
    tokenizer = AutoTokenizer.from_pretrained(stories_folder)
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id == 1
    assert tokenizer.eos_token_id == 2
    assert tokenizer("")["input_ids"] == [1]

    # what an older transformers' conversion produced: no BOS added, EOS named "<s>"
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    tokenizer.eos_token = "<s>"
    assert tokenizer("hi")["input_ids"][0] != 1
    align_special_tokens(tokenizer, stories_gguf)
    assert tokenizer("hi")["input_ids"][0] == 1 and tokenizer("hi")["input_ids"][-1] != 2
    assert tokenizer.eos_token == "</s>"


@pytest.mark.slow
def test_gguf_that_says_no_bos_gets_none(smollm2):
    from conftest import SMOLLM2
    from metaeol.loading import packaged_gguf

    tokenizer = copy.deepcopy(smollm2.tokenizer)
    ids = tokenizer("hello")["input_ids"]
    assert ids[0] != tokenizer.bos_token_id  # the file sets add_bos_token = false
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", 1)]
    )
    align_special_tokens(tokenizer, packaged_gguf(SMOLLM2))
    assert tokenizer("hello")["input_ids"] == ids


def test_the_default_dtype_is_exact_on_the_cpu_and_bf16_on_accelerators(exact_default_dtype):
    import torch

    from metaeol.loading import parse_dtype

    assert exact_default_dtype("cpu") == torch.float32
    assert exact_default_dtype("cuda") == exact_default_dtype(torch.device("cuda", 1)) == torch.bfloat16
    assert parse_dtype("bf16", "cpu") == torch.bfloat16 and parse_dtype(torch.float16, "cpu") == torch.float16
