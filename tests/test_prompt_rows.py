"""Prompt rows: any rows of several sentence groups, computed together in any order, give the
vectors that ``encode`` gives each sentence, with every booster and method."""

import numpy as np
import pytest
import torch

from _threads import single_thread
from conftest import SENTENCES
from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

SETTINGS = {
    "metaeol": {},
    "tp-official": {"token_prepending": TokenPrepending(1, 3)},
    "tp-sentence": {"token_prepending": TokenPrepending(1, 3, placement="sentence")},
    "cp": {"contrastive": ContrastivePrompting(2, 0.5)},
    "cp+embed-filter": {"contrastive": ContrastivePrompting(2, 0.5), "embed_filter": 2},
    "echo-mean": {"prompts": "echo", "pooling": "mean"},
    "echo-last": {"prompts": "echo"},
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_rows_of_several_groups_in_any_order_give_each_sentence_its_vector(stories, setting):
    encoder = MetaEOL(stories.model, tokenizer=stories.tokenizer, **SETTINGS[setting])
    first, second = SENTENCES[:3], SENTENCES[3:6]
    expected = encoder.encode(first + second, normalize_embeddings=True)
    a, b = encoder.prompt_rows(first), encoder.prompt_rows(second)
    T = len(encoder.prompt_set)
    assert len(a) == 3 * T and len(a.costs) == len(a) and all(0 < c <= len(ids) for c, ids in zip(a.costs, a.ids))
    # interleave: the second group's last sentence, then every other row of the first group, ...
    order_a = list(range(len(a)))[::-1]
    order_b = list(range(len(b)))
    parts = [(b, order_b[2 * T:]), (a, order_a[::2]), (b, order_b[: 2 * T]), (a, order_a[1::2])]
    states = encoder.run_rows(parts)
    rows_a = torch.empty((len(a), *states.shape[1:]))
    rows_b = torch.empty_like(rows_a)
    at = 0
    for rows, indices in parts:
        target = rows_a if rows is a else rows_b
        target[indices] = states[at : at + len(indices)]
        at += len(indices)
    got = torch.cat([encoder.rows_to_embeddings(rows_a, True), encoder.rows_to_embeddings(rows_b, True)])[:, 0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=2e-5)
    if encoder.contrastive is not None:  # each sentence's auxiliary prompt ran once, when its first row did
        assert sorted(a.negatives) == [0, 1, 2] and sorted(b.negatives) == [0, 1, 2]


def test_no_rows_give_an_empty_array(stories):
    assert tuple(stories.run_rows([(stories.prompt_rows([]), [])]).shape) == (0, 1, stories.hidden_size)


def test_rows_run_only_on_the_encoder_that_made_them(stories):
    other = MetaEOL(stories.model, tokenizer=stories.tokenizer, token_prepending=TokenPrepending(1, 3))
    rows = other.prompt_rows(SENTENCES[:2])
    with pytest.raises(ValueError, match="this encoder's prompt_rows only"):
        stories.run_rows([(rows, range(len(rows)))])
