"""Token Prepending with the official placement equals a line-by-line port of the official code
(fuyuchenIfyw/token_prepending: evaluate.py builds the prompts and tokenizer, senllm/modeling_llama.py
replaces the <PST> state by the last token's entering blocks start..end-1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import SENTENCES
from metaeol import MetaEOL
from metaeol.boosters import TokenPrepending
from metaeol.text import clean_sentence

START, END, LAYER = 1, 3, 4  # stories260K has 5 blocks; layer 4 = the residual stream after block 4


def official_port(model, tokenizer, templates: list[str], sentences: list[str], vector: torch.Tensor) -> np.ndarray:
    """evaluate.py + LlamaModel.forward with plan 'tp', one prompt per pass (no padding)."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens(["<PST>"])  # evaluate.py: placeholder_token = '<PST>'; tokenizer.add_tokens(...)
    pst = tokenizer.convert_tokens_to_ids("<PST>")
    prompts = [t.replace('"{s}"', '<PST> "*sent 0*"') for t in templates]  # the official 'tp' templates
    out = []
    with torch.no_grad():
        for s in sentences:
            s = clean_sentence(s)  # evaluate.py's batcher: '.', '"' -> "'", final '?' -> '.'
            states = []
            for prompt in prompts:
                ids = tokenizer(prompt.replace("*sent 0*", s).strip(), return_tensors="pt")["input_ids"]
                where = int((ids[0] == pst).nonzero()[0, 0])  # find_token_indices(input_ids, token=<PST> id)
                ids[0, where] = 0  # the row is never read: the embedding of <PST> is the placeholder vector
                hidden = model.embed_tokens(ids)
                hidden[0, where] = vector  # embedding_layer.weight[placeholder_token_id] = the vector
                positions = torch.arange(ids.shape[1])[None]
                rotary = model.rotary_emb(hidden, positions)
                for index, layer in enumerate(model.layers[:LAYER]):
                    if START <= index < END:  # plan 'tp': the PST state becomes the last token's
                        hidden[torch.arange(1), where, :] = hidden[:, -1, :].clone()
                    hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
                    hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                states.append(hidden[0, -1])
            out.append(torch.stack(states).mean(0))
    return torch.stack(out).float().numpy()


@pytest.mark.parametrize("prompts", ["prompteol", "metaeol"])
def test_official_placement_equals_the_official_code(stories, prompts):
    vector = torch.randn(stories.embedding_dim, generator=torch.Generator().manual_seed(3))
    setting = TokenPrepending(START, END, placeholder=vector, placement="official")
    encoder = MetaEOL(stories.model, prompts, tokenizer=stories.tokenizer, layer=LAYER, token_prepending=setting)
    ours = encoder.encode(SENTENCES)
    want = official_port(stories.model, stories.tokenizer, [t.text for t in encoder.prompt_set], SENTENCES, vector)
    cosine = (ours * want).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999
    ours_placement = MetaEOL(stories.model, prompts, tokenizer=stories.tokenizer, layer=LAYER,
                             token_prepending=TokenPrepending(START, END, placeholder=vector,
                                                              placement="sentence")).encode(SENTENCES)
    assert not np.allclose(ours_placement, ours, atol=1e-4)  # the two placements are different methods


def test_official_placement_keys_and_errors(stories):
    official = TokenPrepending(1, 3)  # the default placement, chosen on STS-B dev
    assert official.placement == "official" and TokenPrepending.parse("1:3") == official
    assert official.key == "tp(1:3,random:0,official)"
    assert TokenPrepending(1, 3, placement="sentence").key == "tp(1:3,random:0)"  # the keys of stored vectors kept
    with pytest.raises(ValueError, match="placement must be one of"):
        TokenPrepending(1, 3, placement="before")
    from metaeol.prompts import PromptSet, Template

    unquoted = PromptSet("bare", (Template("bare", "Sentence {s} means in one word:\""),))
    with pytest.raises(ValueError, match="template 'bare' has no .*use placement 'sentence'"):
        MetaEOL(stories.model, unquoted, tokenizer=stories.tokenizer, token_prepending=official)
    encoder = MetaEOL(stories.model, tokenizer=stories.tokenizer, token_prepending=official)
    encoder.encode(["a sentence"])
    assert "<PST>" not in stories.tokenizer.get_vocab()  # the caller's tokenizer is left alone
