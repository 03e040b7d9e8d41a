"""The settings record: every MetaEOL option that changes a vector is in it, and every surface
that keys or saves vectors (store key, MTEB revision, sentence-transformers config) reads it."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.settings import RUNTIME_OPTIONS, VECTOR_OPTIONS, build_encoder

# one changed value per vector-changing option (the loaded stories260K model otherwise)
VARIANTS = {
    "model": None,  # another model reference: the GGUF file of the same weights, below
    "revision": dict(revision="0123456789abcdef"),
    "prompts": dict(prompts="prompteol"),
    "tasks": dict(tasks=["SA"]),
    "layer": dict(layer=2),
    "dtype": None,  # loaded apart: dtype= converts a passed model in place
    "clean": dict(clean=False),
    "max_sentence_tokens": dict(max_sentence_tokens=16),
    "pooling": dict(pooling="mean"),
    "token_prepending": dict(token_prepending=TokenPrepending(1, 3)),
    "contrastive": dict(contrastive=ContrastivePrompting(2, 0.5)),
    "demonstrations": dict(demonstrations="scaling_sentemb:opt-2.7b"),
    "embed_filter": dict(embed_filter=2),
}
# the store keeps templates and layers apart (demonstrations are template text); EmbedFilter
# applies after the template mean, to vectors the store does not keep
NOT_IN_STORE_KEY = {"prompts", "tasks", "layer", "demonstrations", "embed_filter"}


def _variant(stories, **kwargs) -> MetaEOL:
    return MetaEOL(stories.model, tokenizer=stories.tokenizer, **kwargs)


def test_every_encoder_option_is_classified():
    options = set(inspect.signature(MetaEOL.__init__).parameters) - {"self"}
    assert options == set(VECTOR_OPTIONS) | set(RUNTIME_OPTIONS), (
        "a MetaEOL option is neither in the settings record (metaeol.settings.VECTOR_OPTIONS) "
        "nor listed as runtime-only (RUNTIME_OPTIONS)")
    assert not set(VECTOR_OPTIONS) & set(RUNTIME_OPTIONS)
    assert set(VARIANTS) == set(VECTOR_OPTIONS), "every vector option needs a variant in this test"


@pytest.mark.parametrize("option", sorted(VECTOR_OPTIONS))
def test_every_vector_option_changes_every_key(stories, stories_gguf, option):
    base = _variant(stories).settings
    if option == "model":
        changed = MetaEOL(str(stories_gguf)).settings  # the base names the converted folder
    elif option == "dtype":
        changed = MetaEOL(str(stories_gguf), dtype="bfloat16").settings
    else:
        changed = _variant(stories, **VARIANTS[option]).settings
    if option == "revision":
        # the revision picks the hub commit to load, and a loaded model's weights id is that commit
        # (tests/test_weights_identity.py); a model passed in is identified by its parameters, so
        # here the revision is recorded (a rebuild loads it) while the weights keys stay
        assert changed.to_config() != base.to_config() and changed.describe() != base.describe()
        assert changed.weights == base.weights and changed.store_key == base.store_key
        return
    assert changed.label != base.label, "MTEB revision / result-cache label"
    assert changed.fingerprint() != base.fingerprint(), "sentence-transformers fingerprint"
    assert changed.to_config() != base.to_config(), "sentence-transformers / MTEB config"
    assert changed.describe() != base.describe(), "results JSON"
    if option not in NOT_IN_STORE_KEY:
        assert changed.store_key != base.store_key, "vector store key"


@pytest.mark.parametrize("option", sorted(set(RUNTIME_OPTIONS) - {"tokenizer", "store", "device"}))
def test_runtime_options_leave_the_keys_alone(stories, option):
    values = {"attn_implementation": "eager", "engine": "plain", "prefix_attention": ("concat",), "max_batch_tokens": 64}
    base, other = _variant(stories).settings, _variant(stories, **{option: values[option]}).settings
    assert other.label == base.label and other.store_key == base.store_key


def test_config_rebuilds_an_encoder_with_the_same_settings_and_vectors(stories_gguf):
    boosted = MetaEOL(str(stories_gguf), prompts="prompteol", layer=3, clean=False, max_sentence_tokens=20,
                      token_prepending=TokenPrepending(1, 3, placeholder="mean"),
                      contrastive=ContrastivePrompting(2, 0.25, auxiliary='Ignore "{s}" in one word:"'))
    rebuilt = build_encoder(boosted.settings.to_config())
    assert rebuilt.settings.fingerprint() == boosted.settings.fingerprint()
    assert rebuilt.settings.label == boosted.settings.label and rebuilt.cache_key == boosted.cache_key
    sentences = ["A man is playing a guitar.", "Is it raining?"]
    np.testing.assert_array_equal(rebuilt.encode(sentences), boosted.encode(sentences))


def test_placeholder_vector_round_trips(stories):
    vector = np.linspace(-1, 1, stories.embedding_dim)
    encoder = _variant(stories, token_prepending=TokenPrepending(1, 3, placeholder=vector))
    config = encoder.settings.to_config()
    assert config["token_prepending"]["placeholder"] == pytest.approx(list(vector))
    rebuilt = build_encoder({**config, "model": stories.model}, tokenizer=stories.tokenizer)
    assert rebuilt.cache_key == encoder.cache_key


def test_unknown_saved_setting_is_refused():
    with pytest.raises(ValueError, match="unknown MetaEOL settings"):
        build_encoder({"model": "x", "temperature": 1})


def test_a_save_from_before_the_placement_was_recorded_keeps_the_sentence_placement():
    from metaeol.settings import encoder_arguments

    old = {"start_layer": 1, "end_layer": 3, "placeholder": "random", "seed": 0}  # saved when sentence was the only one
    assert encoder_arguments({"token_prepending": old})["token_prepending"].placement == "sentence"
    assert encoder_arguments({"token_prepending": {**old, "placement": "official"}})["token_prepending"].placement == "official"
    assert TokenPrepending(1, 3).placement == "official"  # while the default is the official placement
