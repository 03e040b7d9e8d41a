"""MetaEOL as a sentence-transformers module, against the real package (stories260K)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

st = pytest.importorskip("sentence_transformers", minversion="5")

from conftest import SENTENCES  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from metaeol.integrations.sentence_transformers import MetaEOLModule  # noqa: E402


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_same_vectors(got, want) -> None:
    """fp32 cosine >= 0.99999 per row, and equal within float noise (MetaEOL vectors move by ~1e-6
    with the other sentences of a forward pass)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == np.float32
    assert _cosines(got, want).min() >= 0.99999
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def reference(stories) -> np.ndarray:
    return stories.encode(SENTENCES)


@pytest.fixture(scope="module")
def model(stories):
    return SentenceTransformer(modules=[MetaEOLModule(stories)], device="cpu")


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("st") / "stories-metaeol"
    model.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_encode_matches_metaeol(model, reference, batch_size):
    assert_same_vectors(model.encode(SENTENCES, batch_size=batch_size), reference)
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # 6.x / 5.x
    assert dimension() == reference.shape[1] == 64


def test_saved_folder_holds_the_settings_and_no_weights(saved, stories):
    modules = json.loads((saved / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["metaeol.integrations.sentence_transformers.MetaEOLModule"]
    config = json.loads((saved / "metaeol_config.json").read_text())
    assert config["model"] == str(stories.model_name)
    assert config["prompts"]["templates"] == stories.prompt_set.to_dict()["templates"]
    assert (config["layer"], config["pooling"], config["dtype"], config["max_sentence_tokens"]) == (
        5, "last", "float32", 512)
    assert config["fingerprint"]["prompts_sha256"] and config["fingerprint"]["weights"].startswith("local-")
    assert not list(saved.glob("*.safetensors")) and not list(saved.glob("*.bin"))


def test_load_by_path_gives_the_same_vectors(saved, reference):
    loaded = SentenceTransformer(str(saved), trust_remote_code=True, device="cpu")
    assert isinstance(loaded[0], MetaEOLModule)
    assert_same_vectors(loaded.encode(SENTENCES), reference)


@pytest.mark.skipif(int(st.__version__.split(".")[0]) < 6, reason="5.x trusts local module classes")
def test_load_without_trust_remote_code_is_refused(saved):
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(saved), device="cpu")


def test_load_warns_when_the_referenced_weights_changed(saved, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("modules.json", "config_sentence_transformers.json"):
        (copy / name).write_text((saved / name).read_text())
    config = json.loads((saved / "metaeol_config.json").read_text())
    config["fingerprint"]["weights"] = "local-00000000"
    (copy / "metaeol_config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"differ from the saved ones in \['weights'\]"):
        SentenceTransformer(str(copy), trust_remote_code=True, device="cpu")


def test_encode_options(model, stories, reference):
    normalized = model.encode(SENTENCES, normalize_embeddings=True)
    assert_same_vectors(normalized, stories.encode(SENTENCES, normalize_embeddings=True))
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-6)
    tensor = model.encode(SENTENCES, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert_same_vectors(tensor.numpy(), reference)
    binary = model.encode(SENTENCES, precision="binary")
    assert binary.dtype == np.int8 and binary.shape == (len(SENTENCES), 64 // 8)
    np.testing.assert_array_equal(binary, stories.encode(SENTENCES, precision="binary"))
    int8 = model.encode(SENTENCES, precision="int8")
    assert int8.dtype == np.int8 and int8.shape == reference.shape
    single = model.encode(SENTENCES[0])
    assert single.shape == (64,)
    assert_same_vectors(single[None], reference[:1])


def test_prompt_is_prepended_to_the_sentence(model, stories):
    assert_same_vectors(model.encode(["x"], prompt="Query: "), stories.encode(["Query: x"]))


def test_max_seq_length_is_the_sentence_token_limit(stories):
    module = MetaEOLModule(stories)
    model = SentenceTransformer(modules=[module], device="cpu")
    assert model.max_seq_length == 512
    model.max_seq_length = 3
    long = SENTENCES[4]
    cut = stories.tokenizer.decode(stories.tokenizer(long, add_special_tokens=False)["input_ids"][:3])
    assert module.get_config_dict()["max_sentence_tokens"] == 3
    assert not np.allclose(model.encode([long]), stories.encode([long]))
    assert _cosines(model.encode([long]), model.encode([cut]))[0] > 0.9999


def test_multi_process_pool(saved, reference):
    loaded = SentenceTransformer(str(saved), trust_remote_code=True, device="cpu")
    pool = loaded.start_multi_process_pool(["cpu"])
    try:
        embeddings = loaded.encode(SENTENCES, pool=pool, chunk_size=2, batch_size=2)
    finally:
        loaded.stop_multi_process_pool(pool)
    assert_same_vectors(embeddings, reference)


def test_non_text_input_is_refused(model):
    with pytest.raises(TypeError, match="text only"):
        model[0].preprocess(["a sentence", 3])


def test_encoder_and_settings_together_are_refused(stories):
    with pytest.raises(ValueError, match="either a MetaEOL encoder"):
        MetaEOLModule(stories, layer=2)


def test_boosters_survive_save_load_and_dtype_moves(stories_gguf, stories, tmp_path):
    from metaeol import MetaEOL
    from metaeol.boosters import ContrastivePrompting, TokenPrepending

    boosters = dict(token_prepending=TokenPrepending(1, 3), contrastive=ContrastivePrompting(2, 0.5))
    boosted = MetaEOL(str(stories_gguf), **boosters)  # its own weights: .half() below converts them
    want = boosted.encode(SENTENCES)
    assert _cosines(want, stories.encode(SENTENCES)).min() < 0.9999  # the boosters do move these vectors
    model = SentenceTransformer(modules=[MetaEOLModule(boosted)], device="cpu")
    model.save_pretrained(str(tmp_path / "boosted"))
    saved = json.loads((tmp_path / "boosted" / "metaeol_config.json").read_text())
    assert saved["token_prepending"]["end_layer"] == 3 and saved["contrastive"]["layer"] == 2
    loaded = SentenceTransformer(str(tmp_path / "boosted"), trust_remote_code=True, device="cpu")
    assert_same_vectors(loaded.encode(SENTENCES), want)
    model.half()
    moved = model[0]._metaeol()
    assert (moved.token_prepending, moved.contrastive) == (boosters["token_prepending"], boosters["contrastive"])
    same_weights = MetaEOL(model[0].auto_model, tokenizer=model[0].tokenizer, **boosters)
    np.testing.assert_array_equal(model.encode(SENTENCES[:3]), same_weights.encode(SENTENCES[:3]))
