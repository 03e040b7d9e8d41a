"""Encoder input handling: validation with clear errors, token-level truncation, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from metaeol.layers import parse_layers
from metaeol.text import clean_sentence

CHINESE_A = "".join(chr(0x4E00 + (i * 7) % 2000) for i in range(380))
CHINESE_B = "".join(chr(0x4E00 + (i * 13) % 2000) for i in range(380))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "512"])
def test_max_sentence_tokens_must_be_a_positive_int(stories_gguf, bad) -> None:
    from metaeol import MetaEOL

    with pytest.raises(ValueError, match="max_sentence_tokens must be a positive int"):
        MetaEOL(str(stories_gguf), max_sentence_tokens=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, None, True])
def test_batch_size_must_be_a_positive_int(stories, bad) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        stories.encode(["a"], batch_size=bad)


@pytest.mark.parametrize("bad", [2.5, "1,,2", "x", [], True, [1, 2.0]])
def test_layer_specs_are_strict(bad) -> None:
    with pytest.raises(ValueError):
        parse_layers(bad)


def test_layer_out_of_range_and_float_rejected_by_the_encoder(stories_gguf) -> None:
    from metaeol import MetaEOL

    for bad in (2.5, 6, [1, -7]):
        with pytest.raises(ValueError):
            MetaEOL(str(stories_gguf), layer=bad)


def test_tasks_as_a_string_names_meta_tasks_not_letters(stories_gguf) -> None:
    from metaeol import MetaEOL

    enc = MetaEOL(str(stories_gguf), tasks="SA")
    assert {t.task for t in enc.prompt_set} == {"SA"} and len(enc.prompt_set) == 2
    assert len(MetaEOL(str(stories_gguf), tasks="SA,PI").prompt_set) == 4


def test_bytes_and_none_items_are_type_errors_naming_the_index(stories) -> None:
    with pytest.raises(TypeError, match="#1 is bytes"):
        stories.encode(["ok", b"raw"])
    with pytest.raises(TypeError, match="#0 is NoneType"):
        stories.encode([None])
    with pytest.raises(TypeError, match="not a single string"):
        stories.encode_templates("one string")


def test_truncation_cuts_the_original_text_at_a_token_boundary(stories) -> None:
    """Byte-fallback tokenizers split a CJK character into byte tokens; cutting token ids and
    decoding gave U+FFFD runs (two different texts, one embedding) and more tokens than the limit."""
    limit = stories.max_sentence_tokens
    before = stories.truncated_count
    cut_a, cut_b = stories.prepare([CHINESE_A, CHINESE_B])
    assert stories.truncated_count == before + 2
    for original, cut in ((CHINESE_A, cut_a), (CHINESE_B, cut_b)):
        assert "\ufffd" not in cut and original.startswith(cut) and len(cut) > 100
        assert len(stories.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= limit
    emb = stories.encode([CHINESE_A, CHINESE_B])
    assert not np.array_equal(emb[0], emb[1])


def test_short_sentences_are_not_touched_by_the_limit(stories) -> None:
    text = "A man is playing a guitar."
    assert stories.prepare([text]) == [text]


def test_sentence_tokens_count_what_the_prompts_hold(stories) -> None:
    """Token counts (the server's usage and limit check) are of the cleaned text, uncut."""
    texts = ["  A man   is playing a guitar. ", CHINESE_A, ""]
    counts = stories.prompt_tokens.sentence_tokens(texts)
    raw, cleaned = texts[0], clean_sentence(texts[0])
    assert raw != cleaned
    assert counts[0] == len(stories.tokenizer(cleaned, add_special_tokens=False)["input_ids"]) > 0
    assert counts[1] > stories.max_sentence_tokens and counts[2] == 0


def test_threads_with_different_layers_share_one_encoder(stories_gguf) -> None:
    """Concurrent encode_templates calls on one fresh encoder, each with its own layers,
    give the sequential results, and prefix reuse stays on."""
    from metaeol import MetaEOL

    enc = MetaEOL(str(stories_gguf))
    sentences = [f"Sentence {i} about a cat." for i in range(6)]
    layer_sets = [[-1], [2], [1, 3], [-1, 2]]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = enc.encode_templates(sentences, layers=layer_sets[i % 4], batch_size=2)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(engine.prefix_mode is not None for engine in enc._engines.values())
    for i, got in results.items():
        np.testing.assert_allclose(got, enc.encode_templates(sentences, layers=layer_sets[i % 4]), atol=1e-5)


def test_progress_bar_counts_whole_sentences(stories, capsys) -> None:
    stories.encode([f"s {i}" for i in range(5)], batch_size=2, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "5/5" in err and ".0/" not in err
