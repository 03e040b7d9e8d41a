"""Boosters: the prefix engine equals full prompts, batches do not matter, off is today's
encoder, and each mechanism matches a direct re-implementation of the official forward."""

import dataclasses

import numpy as np
import pytest
import torch

from _threads import single_thread
from conftest import SENTENCES
from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.boosters.token_prepending import insert_placeholders
from metaeol.layers import decoder_blocks
from metaeol.store import VectorStore

TP = TokenPrepending(1, 3, placement="sentence")  # the placement whose rows these tests build by hand


one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float((np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def assert_close(a: np.ndarray, b: np.ndarray, rel: float = 1e-5) -> None:
    """Equal up to float32 rounding of differently batched sums, relative to the largest value."""
    assert np.abs(a - b).max() <= rel * max(np.abs(a).max(), np.abs(b).max())


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Different beyond the rounding that ``assert_close`` forgives."""
    return np.abs(a - b).max() > 100 * 1e-5 * max(np.abs(a).max(), np.abs(b).max())


def boosted(model: MetaEOL, **kwargs) -> MetaEOL:
    """An encoder sharing ``model``'s weights (no reload), with other settings."""
    kwargs = {"tokenizer": model.tokenizer, "token_prepending": TP, **kwargs}
    return MetaEOL(model.model, **kwargs)


@pytest.fixture(scope="module", params=["sentence", "official"])
def placement(request):
    return request.param


@pytest.fixture(scope="module")
def plain_states(stories, placement):
    tp = dataclasses.replace(TP, placement=placement)
    return boosted(stories, engine="plain", layer=[2, -1], token_prepending=tp).encode_templates(SENTENCES)


@pytest.mark.parametrize("attention", ["broadcast", "concat"])
def test_prefix_engine_equals_full_prompts(stories, plain_states, placement, attention):
    tp = dataclasses.replace(TP, placement=placement)
    encoder = boosted(stories, layer=[2, -1], prefix_attention=(attention,), token_prepending=tp)
    got = encoder.encode_templates(SENTENCES, batch_size=3)
    engine = encoder._engine(encoder.layers, 1)
    assert engine.prefix_mode == attention
    assert min_cosine(got, plain_states) >= 0.99999
    # rows reuse the stored prefix up to their placeholder: only tails were computed
    assert engine.stats.tokens < sum(len(r) for r in _rows(encoder, SENTENCES)[0])


def _rows(encoder: MetaEOL, sentences):
    rows, templates = encoder.prompt_tokens.prompts(encoder.prepare(sentences))
    return insert_placeholders(rows, templates, encoder._template_prefixes, -1)


def test_placeholder_sits_where_the_prompt_leaves_its_template_prefix(stories):
    encoder = boosted(stories)
    rows, templates = encoder.prompt_tokens.prompts(encoder.prepare(SENTENCES))
    boosted_rows, positions = _rows(encoder, SENTENCES)
    for row, new, t, k in zip(rows, boosted_rows, templates, positions):
        prefix = encoder._template_prefixes[t]
        assert new[:k] == row[:k] == prefix[:k] and new[k] == -1 and new[k + 1:] == row[k:]
        assert k < len(row) and (k == len(prefix) or k == len(row) - 1 or row[k] != prefix[k])


def test_matches_a_direct_implementation_of_the_official_forward(stories):
    """The official code's loop: placeholder embedding at its position; entering blocks
    start..end-1 its state is replaced by the last token's; read hidden_states[layer]."""
    encoder = boosted(stories, prompts="prompteol", engine="plain", layer=[2, -1])
    sentence = "The cat sat on the mat."
    (row,), (k,) = _rows(encoder, [sentence])
    model = encoder.model
    vector = TP.vector(model.get_input_embeddings(), encoder.embedding_dim)
    with torch.inference_mode():
        row[k] = 0  # any id: its input vector is replaced
        hidden = model.get_input_embeddings()(torch.tensor([row], device=model.device))
        hidden[0, k] = vector
        positions = torch.arange(len(row), device=model.device).unsqueeze(0)
        rotary = model.rotary_emb(hidden, positions)
        states = []
        for b, block in enumerate(decoder_blocks(model)):
            states.append(hidden[0, -1].clone())
            if TP.start_layer <= b < TP.end_layer:
                hidden[0, k] = hidden[0, -1]
            out = block(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)
            hidden = out[0] if isinstance(out, tuple) else out
        final = model.norm(hidden)[0, -1]
    expected = torch.stack([states[2], final]).float().cpu().numpy()
    for engine in ("plain", "prefix"):
        got = boosted(stories, prompts="prompteol", engine=engine, layer=[2, -1]).encode([sentence])[0]
        assert min_cosine(got, expected) >= 0.99999


def test_batch_size_and_neighbours_do_not_matter(stories, placement):
    encoder = boosted(stories, token_prepending=dataclasses.replace(TP, placement=placement))
    together = encoder.encode(SENTENCES, batch_size=64)
    assert_close(encoder.encode(SENTENCES, batch_size=1), together)
    assert_close(encoder.encode(SENTENCES[::-1])[::-1], together)
    alone = np.stack([encoder.encode([s])[0] for s in SENTENCES[:3]])
    assert_close(alone, together[:3])


def test_off_is_todays_encoder_with_no_hooks(stories):
    seen = []

    def count_hooks(module, args):
        seen.append(len(stories.model.get_input_embeddings()._forward_hooks))

    handle = decoder_blocks(stories.model)[0].register_forward_pre_hook(count_hooks)
    try:
        today = MetaEOL(stories.model, tokenizer=stories.tokenizer).encode(SENTENCES)
        off = MetaEOL(stories.model, tokenizer=stories.tokenizer, token_prepending=None).encode(SENTENCES)
        assert seen and set(seen) == {0}
        seen.clear()
        on = boosted(stories, engine="plain").encode(SENTENCES)
        assert seen and set(seen) == {1}  # every boosted pass (the prefix passes of the prefix engine run without)
    finally:
        handle.remove()
    assert np.array_equal(off, today)
    assert not stories.model.get_input_embeddings()._forward_hooks  # nothing left behind
    assert differs(on, today)


def test_placeholder_vector_options(stories):
    vector = TP.vector(stories.model.get_input_embeddings(), stories.embedding_dim)
    seeded = boosted(stories).encode(SENTENCES[:3])
    given = boosted(stories, token_prepending=dataclasses.replace(TP, placeholder=vector)).encode(SENTENCES[:3])
    assert_close(given, seeded)
    other_seed = boosted(stories, token_prepending=dataclasses.replace(TP, seed=1)).encode(SENTENCES[:3])
    mean = boosted(stories, token_prepending=dataclasses.replace(TP, placeholder="mean")).encode(SENTENCES[:3])
    assert differs(other_seed, seeded) and differs(mean, seeded)
    # replaced from block 0 on, the placeholder's own vector is never used
    zero_a = boosted(stories, token_prepending=TokenPrepending(0, 2, seed=0)).encode(SENTENCES[:3])
    zero_b = boosted(stories, token_prepending=TokenPrepending(0, 2, seed=1)).encode(SENTENCES[:3])
    np.testing.assert_array_equal(zero_a, zero_b)


def test_token_prepending_moves_real_vectors(smollm2):
    """On trained weights (random ones barely attend to one token) the booster changes the
    vectors for real, not just beyond rounding."""
    sentences = SENTENCES[:3]
    assert min_cosine(boosted(smollm2).encode(sentences), smollm2.encode(sentences)) < 0.999


def test_settings_enter_cache_key_and_description(stories, tmp_path):
    plain = MetaEOL(stories.model, tokenizer=stories.tokenizer)
    assert plain.cache_key == f"{plain.model_key}|pooling=last,clean=True,max_sentence_tokens=512"
    assert plain.describe()["token_prepending"] is None
    on = boosted(stories)
    assert on.cache_key == plain.cache_key + ",boost=tp(1:3,random:0)"
    assert on.describe()["token_prepending"] == {"start_layer": 1, "end_layer": 3, "placeholder": "random:0",
                                                  "placement": "sentence"}
    keys = {boosted(stories, token_prepending=tp).cache_key for tp in (
        TP, TokenPrepending(1, 4), TokenPrepending(1, 3, seed=1), TokenPrepending(1, 3, placeholder="mean"),
        TokenPrepending(1, 3, placeholder=[0.5] * 64), TokenPrepending(1, 3, placeholder=[0.25] * 64))}
    assert len(keys) == 6
    store = VectorStore(tmp_path / "v.sqlite")
    cached_plain = MetaEOL(stories.model, tokenizer=stories.tokenizer, store=store).encode(SENTENCES[:3])
    cached_on = boosted(stories, store=store).encode(SENTENCES[:3])
    np.testing.assert_array_equal(cached_plain, plain.encode(SENTENCES[:3]))
    assert_close(cached_on, on.encode(SENTENCES[:3]))


@pytest.mark.parametrize("make, message", [
    (lambda: TokenPrepending(3, 3), "start_layer < end_layer"),
    (lambda: TokenPrepending(-1, 3), "start_layer < end_layer"),
    (lambda: TokenPrepending(1.5, 3), "start_layer must be an int"),
    (lambda: TokenPrepending(1, 3, placeholder="zeros"), "one of"),
    (lambda: TokenPrepending(1, 3, placeholder=[]), "1-D sequence of finite floats"),
    (lambda: TokenPrepending(1, 3, placeholder=[float("nan")] * 4), "finite"),
    (lambda: TokenPrepending(1, 3, placeholder=["a", "b"]), "finite floats"),
    (lambda: TokenPrepending.parse("1-7"), "START:END"),
    (lambda: TokenPrepending.parse("1:2:3"), "START:END"),
])
def test_bad_settings_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_settings_are_checked_against_the_model(stories):
    with pytest.raises(ValueError, match="beyond the model's 5 blocks"):
        boosted(stories, token_prepending=TokenPrepending(1, 6))
    with pytest.raises(ValueError, match="has 3 values; the model's hidden size is 64"):
        boosted(stories, token_prepending=TokenPrepending(1, 3, placeholder=[1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="needs pooling='last'"):
        boosted(stories, pooling="mean")
    with pytest.raises(TypeError, match="TokenPrepending or None"):
        boosted(stories, token_prepending=(1, 3))
    assert TokenPrepending.parse("2:5") == TokenPrepending(2, 5)


def test_smollm2_prefix_engine_equals_full_prompts(smollm2):
    """Both boosters at once (either one breaking exactness fails it), on four templates."""
    boosters = {"token_prepending": TokenPrepending(1, 7), "contrastive": ContrastivePrompting(4, 0.5), "tasks": "PI,IE"}
    sentences = ["A man is playing a guitar.", 'He said "hello" to her?']
    full = boosted(smollm2, engine="plain", layer=[8, -1], **boosters).encode_templates(sentences)
    encoder = boosted(smollm2, layer=[8, -1], **boosters)
    got = encoder.encode_templates(sentences, batch_size=1)
    assert encoder._engine(encoder.layers, 1).prefix_mode is not None
    assert min_cosine(got, full) >= 0.99999


def test_ck_prompt_sets_match_the_official_prompts():
    from metaeol.prompts import load_prompt_set

    # prompt_method "ck" of zifengcheng/CP (evaluate_intervention.py), with {s} for *sent 0*
    official_ck = [
        'The essence of a sentence is often captured by its main subjects and actions, while descriptive terms '
        'provide additional but less central details. With this in mind , this sentence : "{s}" means in one word:"',
        'After thinking step by step , this sentence : "{s}" means in one word:"',
    ]
    ck = load_prompt_set("ck")
    assert [t.text for t in ck] == official_ck
    assert [t.text for t in ck] == [load_prompt_set(name).templates[0].text for name in ("ke", "pcoteol")]
    combined = load_prompt_set("metaeol-ck")
    assert [t.text for t in combined] == [t.text for t in load_prompt_set("metaeol")] + official_ck


CP = ContrastivePrompting(1, 0.5)


@pytest.mark.parametrize("boosters", [{"contrastive": CP}, {"contrastive": CP, "token_prepending": TP}],
                         ids=["cp", "cp+tp"])
@pytest.mark.parametrize("attention", ["broadcast", "concat"])
def test_contrastive_prefix_engine_equals_full_prompts(stories, boosters, attention):
    kwargs = {"token_prepending": None, "layer": [2, -1], **boosters}
    full = boosted(stories, engine="plain", **kwargs).encode_templates(SENTENCES)
    encoder = boosted(stories, prefix_attention=(attention,), **kwargs)
    got = encoder.encode_templates(SENTENCES, batch_size=3)
    assert encoder._engine([CP.layer + 1], 1, auxiliary=True).prefix_mode == attention
    assert min_cosine(got, full) >= 0.99999
    assert_close(encoder.encode_templates(SENTENCES[::-1], batch_size=1)[::-1], got)
    assert min_cosine(got, stories.encode_templates(SENTENCES, layers=[2, -1])) < 0.999


def test_contrastive_matches_a_direct_implementation_of_the_official_forward(stories):
    """The official `scaled` / `att_head` recipe: B = the auxiliary prompt's o_proj input at
    its last token in block `layer`; in the main prompt's pass, that block's o_proj input A
    at the last token becomes scale * (A - B)."""
    sentence = "The cat sat on the mat."
    model, tokenizer = stories.model, stories.tokenizer
    o_proj = decoder_blocks(model)[CP.layer].self_attn.o_proj
    captured = []
    handle = o_proj.register_forward_pre_hook(lambda m, args: captured.append(args[0][0, -1].clone()))
    with torch.inference_mode():
        model(**tokenizer([CP.auxiliary.replace("{s}", sentence)], return_tensors="pt"))
    handle.remove()

    def steer(module, args):
        x = args[0].clone()
        x[0, -1] = CP.scale * (x[0, -1] - captured[0])
        return (x,)

    handle = o_proj.register_forward_pre_hook(steer)
    prompt = 'This sentence : "{s}" means in one word:"'.replace("{s}", sentence)
    with torch.inference_mode():
        out = model(**tokenizer([prompt], return_tensors="pt"), output_hidden_states=True)
    handle.remove()
    expected = torch.stack([out.hidden_states[2][0, -1], out.hidden_states[-1][0, -1]]).numpy()
    for engine in ("plain", "prefix"):
        encoder = boosted(stories, prompts="prompteol", engine=engine, layer=[2, -1], token_prepending=None,
                          contrastive=CP)
        assert min_cosine(encoder.encode([sentence])[0], expected) >= 0.99999


def test_contrastive_settings(stories):
    encoder = boosted(stories, token_prepending=None, contrastive=CP)
    assert encoder.cache_key.endswith(",boost=" + CP.key) and CP.key.startswith("cp(1,0.5,")
    assert encoder.describe()["contrastive"] == {"layer": 1, "scale": 0.5, "auxiliary": CP.auxiliary}
    both = boosted(stories, contrastive=CP)
    assert both.cache_key.endswith(f",boost={TP.key}+{CP.key}")
    assert ContrastivePrompting(1, 0.5, auxiliary='Noise in "{s}" in one word:"').key != CP.key
    assert ContrastivePrompting.parse("4:0.25") == ContrastivePrompting(4, 0.25)
    for make, message in [
        (lambda: ContrastivePrompting(-1), "block index >= 0"),
        (lambda: ContrastivePrompting(1, float("inf")), "finite number"),
        (lambda: ContrastivePrompting(1, auxiliary="no placeholder"), "exactly one {s}"),
        (lambda: ContrastivePrompting.parse("4"), "LAYER:SCALE"),
        (lambda: boosted(stories, contrastive=ContrastivePrompting(5)), "beyond the model's 5 blocks"),
        (lambda: boosted(stories, token_prepending=None, contrastive=CP, pooling="mean"), "contrastive needs pooling"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()
