"""encode() follows sentence-transformers' conventions."""

import numpy as np
import pytest
import torch

from conftest import SENTENCES
from metaeol import MetaEOL


def test_shapes_types_and_order(stories):
    full = stories.encode(SENTENCES)
    assert isinstance(full, np.ndarray) and full.dtype == np.float32 and full.shape == (len(SENTENCES), 64)
    single = stories.encode(SENTENCES[0])
    assert single.shape == (64,) and np.allclose(single, full[0], atol=1e-6)
    assert stories.encode([]).shape == (0, 64)
    tensor = stories.encode(SENTENCES, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, torch.from_numpy(full), atol=1e-6)
    assert isinstance(stories.encode(SENTENCES, convert_to_numpy=False), torch.Tensor)


def test_normalize_and_precision(stories):
    unit = stories.encode(SENTENCES, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    raw = stories.encode(SENTENCES)
    assert stories.encode(SENTENCES, precision="float16").dtype == np.float16
    ubinary = stories.encode(SENTENCES, precision="ubinary")
    assert ubinary.shape == (len(SENTENCES), 8) and ubinary.dtype == np.uint8
    assert np.array_equal(np.unpackbits(ubinary, axis=1).astype(bool), raw > 0)
    with pytest.raises(ValueError, match="unknown precision"):
        stories.encode(SENTENCES, precision="int3")


def test_mean_is_over_templates(stories):
    per_template = stories.encode_templates(SENTENCES[:3])
    assert per_template.shape == (3, 8, 1, 64)
    assert np.allclose(per_template.mean(axis=1)[:, 0], stories.encode(SENTENCES[:3]), atol=1e-6)


@pytest.mark.parametrize("bad,kind", [([None], "NoneType"), (["ok", 3], "int"), ([b"bytes"], "bytes")])
def test_non_text_items_name_their_index(stories, bad, kind):
    with pytest.raises(TypeError, match=rf"sentence #{len(bad) - 1} is {kind}"):
        stories.encode(bad)


def test_empty_and_whitespace_strings_are_embedded_like_the_reference(stories):
    # Documented behaviour: "" is placed as-is (empty quotes); " " becomes " ." by the clean-up.
    out = stories.encode(["", " ", "   "])
    assert np.isfinite(out).all()
    assert stories.prepare(["", " "]) == ["", " ."]


def test_long_sentences_are_cut_on_tokens_and_counted(stories_gguf):
    encoder = MetaEOL(str(stories_gguf), max_sentence_tokens=5)
    long = "one two three four five six seven eight nine ten"
    prepared = encoder.prepare([long, "short"])
    assert len(encoder.tokenizer(prepared[0], add_special_tokens=False)["input_ids"]) <= 5
    assert prepared[1] == "short."
    assert encoder.truncated_count == 1
    assert np.isfinite(encoder.encode([long])).all() and encoder.truncated_count == 2


def test_prompt_subsets_and_clean_switch(stories_gguf):
    sa_pi = MetaEOL(str(stories_gguf), tasks=["SA", "PI"])
    assert len(sa_pi.prompt_set) == 4
    raw = MetaEOL(str(stories_gguf), clean=False)
    assert raw.prepare(['say "hi"']) == ['say "hi"']
    with pytest.raises(ValueError, match="unknown engine"):
        MetaEOL(str(stories_gguf), engine="turbo")
    with pytest.raises(TypeError, match="not a single string"):
        sa_pi.prepare("just one")


def test_describe_records_the_configuration(stories):
    info = stories.describe()
    assert info["dtype"] == "float32" and info["layers"] == [5] and info["num_layers"] == 5
    assert len(info["prompts"]["templates"]) == 8 and info["engine"] == "prefix"
    assert "transformers" in info["versions"]


def test_store_makes_a_repeated_encode_free(stories_gguf, tmp_path, monkeypatch):
    from metaeol.engine import Engine

    plain = MetaEOL(str(stories_gguf)).encode(SENTENCES)
    cached = MetaEOL(str(stories_gguf), store=tmp_path / "vectors.db")
    first = cached.encode(SENTENCES)
    assert np.allclose(first, plain, atol=1e-6)

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although every vector was stored")

    monkeypatch.setattr(Engine, "run", no_model)
    again = MetaEOL(str(stories_gguf), store=tmp_path / "vectors.db").encode(SENTENCES[::-1])
    assert np.array_equal(again, first[::-1])


def test_store_encodes_only_the_templates_a_sentence_lacks(stories_gguf, tmp_path, monkeypatch):
    """A sentence stored under some of an encoder's templates (by an encoder with a subset of
    them) is encoded in the others only, and its vector is the one computed without a store."""
    plain = MetaEOL(str(stories_gguf)).encode(SENTENCES)
    MetaEOL(str(stories_gguf), tasks=["SA", "PI"], store=tmp_path / "vectors.db").encode(SENTENCES[:3])
    asked: list[tuple[int, list[int]]] = []
    original = MetaEOL._compute_template_states

    def spy(self, sentences, layers, templates, *args):
        asked.append((len(sentences), list(templates)))
        return original(self, sentences, layers, templates, *args)

    monkeypatch.setattr(MetaEOL, "_compute_template_states", spy)
    full = MetaEOL(str(stories_gguf), store=tmp_path / "vectors.db")
    lacking = [j for j, t in enumerate(full.prompt_set) if t.task not in ("SA", "PI")]
    first = full.encode(SENTENCES)
    assert sorted(asked) == sorted([(3, lacking), (len(SENTENCES) - 3, list(range(len(full.prompt_set))))])
    np.testing.assert_allclose(first, plain, atol=1e-6)
    assert np.array_equal(full.encode(SENTENCES), first) and len(asked) == 2  # all read from the store
    some = MetaEOL(str(stories_gguf)).encode_templates(SENTENCES, templates=[0, 5])
    np.testing.assert_allclose(some, full.encode_templates(SENTENCES)[:, [0, 5]], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="increasing indices 0..7"):
        full.encode_templates(SENTENCES[:2], templates=[5, 0])


def test_a_prompt_without_tokens_is_a_clear_error(tiny_llama):
    import copy

    from tokenizers import processors

    model, tokenizer = tiny_llama
    no_bos = copy.deepcopy(tokenizer)
    no_bos.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    encoder = MetaEOL(model, "none", tokenizer=no_bos, pooling="mean")
    assert encoder.encode(["a b"]).shape == (1, 48)
    with pytest.raises(ValueError, match="sentence '' gives a prompt with no tokens"):
        encoder.encode(["a b", ""])


def test_encoders_sharing_one_model_run_from_several_threads(stories):
    """Two encoders on one model object (other settings, other hooks) used from four threads at
    once give the vectors they give alone: the forward lock belongs to the model."""
    import threading

    from metaeol.boosters import TokenPrepending

    plain = MetaEOL(stories.model, tokenizer=stories.tokenizer)
    boosted = MetaEOL(stories.model, tokenizer=stories.tokenizer, layer=3, token_prepending=TokenPrepending(1, 3))
    sentences = [f"sentence number {i} about things" for i in range(40)]
    expected = {id(plain): plain.encode(sentences), id(boosted): boosted.encode(sentences)}
    errors: list[str] = []

    def run(encoder: MetaEOL) -> None:
        try:
            for _ in range(4):
                np.testing.assert_allclose(encoder.encode(sentences, batch_size=3), expected[id(encoder)], atol=1e-5)
        except Exception as err:  # collected: an exception in a thread does not fail the test by itself
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(encoder,)) for encoder in (plain, boosted, plain, boosted)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
