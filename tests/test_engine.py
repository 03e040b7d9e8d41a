"""Engine paths agree, batches do not matter, and out-of-memory never loses a row."""

import numpy as np
import pytest
import torch

from conftest import SENTENCES
from metaeol import MetaEOL
from metaeol.engine import BatchLimits, Engine, plan_batches
from metaeol.layers import decoder_blocks, resolve_layers


def close(a, b, rel=1e-5):
    return np.abs(a - b).max() <= rel * max(np.abs(a).max(), np.abs(b).max())


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    model, tokenizer = tiny_llama
    return MetaEOL(model, tokenizer=tokenizer)


def test_resolve_layers():
    assert resolve_layers(-1, 4) == [4]
    assert resolve_layers([0, 2, -2], 4) == [0, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(5, 4)
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(-6, 4)


def test_plan_batches_respects_limits_and_covers_every_row_once():
    lengths = [5, 9, 3, 9, 1, 7, 2, 8]
    groups = [0, 1, 0, 1, 0, 1, 0, 1]
    for by_group in (None, groups):
        batches = plan_batches(lengths, BatchLimits(max_rows=3, max_tokens=20), by_group)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            assert len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= 20
    grouped = [groups[i] for b in plan_batches(lengths, BatchLimits(3, 20), groups) for i in b]
    assert grouped == sorted(grouped)
    mixed = plan_batches(lengths, BatchLimits(max_rows=4, max_tokens=100))
    assert [sorted(lengths[i] for i in b) for b in mixed] == [[7, 8, 9, 9], [1, 2, 3, 5]]  # least padding


def test_plan_batches_gives_far_shorter_rows_a_pass_when_the_padding_saved_pays_for_it():
    limits = BatchLimits(max_rows=256, max_tokens=1024)  # a pass costs 64 padded tokens more
    lengths = [2] * 40 + [20] * 4
    mixed = plan_batches(lengths, limits)  # one pass: 44 x 20 + 64; two: 4 x 20 + 40 x 2 + 128
    assert [sorted({lengths[i] for i in b}) for b in mixed] == [[20], [2]]
    close = plan_batches([10, 9, 10, 9, 8], limits)  # two passes would save less than one pass costs
    assert close == [[0, 2, 1, 3, 4]]


def test_packed_passes_count_tokens_and_keep_their_padded_layout_within_bounds():
    limits = BatchLimits(max_rows=256, max_tokens=40)  # a pass costs 2 tokens more
    lengths = [20, 2, 2, 2, 2, 2]
    packed = plan_batches(lengths, limits, packed=True)
    assert [sorted(lengths[i] for i in b) for b in packed] == [[2] * 5 + [20]]  # 30 tokens, 120 padded
    assert len(plan_batches(lengths, limits)) == 2  # padded: 6 x 20 > 40
    wide = [20] + [2] * 10  # 40 tokens, but 220 padded > PACKED_PADDING_FACTOR x 40
    passes = plan_batches(wide, limits, packed=True)
    assert len(passes) == 2 and sorted(i for b in passes for i in b) == list(range(len(wide)))
    assert all(len(b) * max(wide[i] for i in b) <= 4 * 40 for b in passes)


def test_packed_passes_compute_no_padding_and_equal_padded_ones(tiny_llama):
    sentences = SENTENCES + ["A much longer sentence than the others, so that its rows would pad the short ones a lot."]
    expected = encoder_with(*tiny_llama, "broadcast").encode(sentences, batch_size=64)
    encoder = encoder_with(*tiny_llama, "packed")
    encoder.encode(sentences[:1])  # the mode's verification passes are padded
    before = encoder.engine_stats()
    got = encoder.encode(sentences, batch_size=64)
    stats = encoder.engine_stats() - before
    assert encoder._engine(encoder.layers, 1).prefix_mode == "packed"
    assert stats.padded_tokens == stats.tokens > 0
    assert close(got, expected)


def test_an_encoder_knows_when_its_passes_are_padding_free(tiny_llama):
    from metaeol.boosters.contrastive import ContrastivePrompting

    encoder = MetaEOL(*tiny_llama[:1], tokenizer=tiny_llama[1])
    assert not encoder.padding_free  # not known before the engine ran
    encoder.encode(SENTENCES[:2])
    assert encoder.padding_free
    for other in (MetaEOL(*tiny_llama[:1], tokenizer=tiny_llama[1], prefix_attention=("broadcast",)),
                  MetaEOL(*tiny_llama[:1], tokenizer=tiny_llama[1], contrastive=ContrastivePrompting(1, 0.5))):
        other.encode(SENTENCES[:2])
        assert not other.padding_free


def test_packing_is_refused_when_packed_and_padded_passes_differ(tiny_llama):
    """Blocks that mix the rows of a pass (here: adding their mean over the batch) give packed
    passes other numbers than padded ones: the engine attends with ``broadcast`` instead."""
    model, tokenizer = tiny_llama
    block = decoder_blocks(model)[0]
    handle = block.register_forward_hook(lambda module, args, out: (
        (out[0] + out[0].mean(0, keepdim=True), *out[1:]) if isinstance(out, tuple) else out + out.mean(0, keepdim=True)))
    try:
        encoder = MetaEOL(model, tokenizer=tokenizer)
        encoder.encode(SENTENCES[:2], batch_size=1)
        assert encoder._engine(encoder.layers, 1).prefix_mode == "broadcast"
    finally:
        handle.remove()


def encoder_with(model, tokenizer, path: str, layers: int | list[int] = -1) -> MetaEOL:
    """An encoder whose engine for ``layers`` runs ``path``: 'packed', 'broadcast' or 'concat'
    prefix attention, or 'plain'."""
    if path == "plain":
        return MetaEOL(model, tokenizer=tokenizer, engine="plain", layer=layers)
    return MetaEOL(model, tokenizer=tokenizer, layer=layers, prefix_attention=(path,))


@pytest.mark.parametrize("path", ["packed", "broadcast", "concat"])
def test_prefix_engine_equals_plain_engine(tiny_llama, path):
    layers = [-1, 0, 2]
    plain = encoder_with(*tiny_llama, "plain", layers).encode_templates(SENTENCES)
    encoder = encoder_with(*tiny_llama, path, layers)
    got = encoder.encode_templates(SENTENCES, batch_size=3)
    assert encoder._engine(encoder.layers, 1).prefix_mode == path
    assert got.shape == (len(SENTENCES), 8, 3, 48)
    assert close(got, plain)


@pytest.mark.parametrize("path", ["packed", "broadcast", "concat"])
def test_rows_of_interleaved_templates_share_a_pass(tiny_llama, path):
    """One pass holding rows of several templates in any order, with different tail lengths."""
    from metaeol.layers import HiddenStateTap

    encoder = encoder_with(*tiny_llama, path)
    engine = encoder._engine(encoder.layers, 1)
    prompts = [(t, s) for s in SENTENCES[:3] for t in (0, 5, 5, 2)]
    rows = encoder.prompt_tokens.tokenize([encoder.prompt_set.templates[t].fill(s) for t, s in prompts])
    templates = [t for t, _ in prompts]
    expected = engine.run(rows, templates)  # verifies the mode, then runs in planned batches
    with torch.inference_mode(), HiddenStateTap(engine.model, engine.layer_indices) as tap:
        together = engine._forward(tap, rows, templates)
    assert engine.prefix_mode == path
    assert close(together.numpy(), expected.numpy())


def test_broadcast_attention_never_copies_the_prefix_per_row(tiny_llama, monkeypatch):
    from metaeol.engine import PrefixCache

    plain = encoder_with(*tiny_llama, "plain").encode(SENTENCES)

    def per_row_copy(*args, **kwargs):
        raise AssertionError("per-row prefix cache used")

    monkeypatch.setattr(PrefixCache, "__init__", per_row_copy)
    encoder = encoder_with(*tiny_llama, "broadcast")
    assert close(encoder.encode(SENTENCES), plain)
    assert encoder._engine(encoder.layers, 1).prefix_mode == "broadcast"


def test_concat_attention_is_used_when_broadcast_is_unsupported(tiny_llama, monkeypatch):
    from metaeol.prefix_attention import UnsupportedAttention

    def unsupported(*args):
        raise UnsupportedAttention("no broadcast here")

    plain = encoder_with(*tiny_llama, "plain").encode(SENTENCES)
    monkeypatch.setattr(Engine, "_broadcast_groups", unsupported)
    encoder = MetaEOL(*tiny_llama[:1], tokenizer=tiny_llama[1])
    assert close(encoder.encode(SENTENCES), plain)
    assert encoder._engine(encoder.layers, 1).prefix_mode == "concat"


def test_attention_that_prefix_reuse_cannot_reproduce_falls_back_to_full_prompts(stories_folder, caplog):
    """A sliding window shorter than the prompts: neither prefix path may silently differ."""
    from transformers import AutoTokenizer, MistralConfig, MistralModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(stories_folder)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=8)
    model = MistralModel(config).eval()
    plain = encoder_with(model, tokenizer, "plain").encode(SENTENCES)
    encoder = MetaEOL(model, tokenizer=tokenizer)
    with caplog.at_level("WARNING", logger="metaeol.engine"):
        got = encoder.encode(SENTENCES)
    assert "prefix reuse is not possible" in caplog.text
    assert "broadcast: sliding window 8" in caplog.text and "concat: " in caplog.text
    assert close(got, plain)
    assert encoder._engine(encoder.layers, 1).prefix_mode is None


def test_unknown_prefix_attention_is_a_clear_error(tiny_llama):
    for bad in ((), "broadcast", ("broadcast", "flash")):
        with pytest.raises(ValueError, match="prefix_attention must be a non-empty sequence"):
            MetaEOL(tiny_llama[0], tokenizer=tiny_llama[1], prefix_attention=bad)


def test_stats_count_computed_and_padded_tokens(tiny_llama):
    encoder = encoder_with(*tiny_llama, "plain")
    prompts = [t.fill(s) for s in encoder.prepare(SENTENCES) for t in encoder.prompt_set]
    encoder.encode(SENTENCES, batch_size=2)
    stats = encoder.engine_stats()
    assert stats.tokens == sum(len(ids) for ids in encoder.prompt_tokens.tokenize(prompts))
    assert stats.passes >= len(SENTENCES) * 8 / 16 and stats.padded_tokens >= stats.tokens
    assert stats.padding == 1 - stats.tokens / stats.padded_tokens and stats.seconds > 0
    encoder.encode(SENTENCES[:1], batch_size=2)
    again = encoder.engine_stats() - stats  # what the second call computed
    assert again.tokens == sum(len(ids) for ids in encoder.prompt_tokens.tokenize(prompts[:8]))
    assert again.passes >= 1 and again.seconds > 0


def test_embedding_does_not_depend_on_batch_or_neighbours(tiny):
    together = tiny.encode(SENTENCES, batch_size=64)
    for batch_size in (1, 3):
        assert close(tiny.encode(SENTENCES, batch_size=batch_size), together)
    alone = np.stack([tiny.encode([s])[0] for s in SENTENCES])
    assert close(alone, together)
    shuffled = tiny.encode(SENTENCES[::-1])[::-1]
    assert close(shuffled, together)


def test_several_layers_in_one_call_match_single_layer_calls(tiny):
    multi = MetaEOL(tiny.model, tokenizer=tiny.tokenizer, layer=[1, -1]).encode(SENTENCES)
    assert multi.shape == (len(SENTENCES), 2, 48)
    for i, layer in enumerate([1, -1]):
        single = MetaEOL(tiny.model, tokenizer=tiny.tokenizer, layer=layer).encode(SENTENCES)
        assert close(multi[:, i], single)


def test_blocks_above_the_highest_layer_are_not_run(tiny):
    calls = []
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(decoder_blocks(tiny.model))]
    try:
        MetaEOL(tiny.model, tokenizer=tiny.tokenizer, layer=2).encode(SENTENCES[:2])
    finally:
        for h in hooks:
            h.remove()
    assert calls and max(calls) == 1  # hidden_states[2] is the output of block index 1


def test_prefix_reuse_is_exact_when_the_tokenizer_merges_across_the_boundary(tiny):
    # A sentence starting with letters glued to the opening quote changes the last
    # prefix token for some tokenizers; the engine must notice on tokens.
    engine = tiny._engine(tiny.layers, batch_rows=8)
    prefix = engine.prefixes[0]
    row = prefix[:-1] + [prefix[-1] + 1, 5, 6]
    assert engine.reused_tokens(row, 0) == len(prefix) - 1
    assert engine.reused_tokens(prefix[:3], 0) == 2  # always leaves a token to compute


def test_out_of_memory_halves_the_batch_and_keeps_every_row(tiny, monkeypatch):
    expected = tiny.encode(SENTENCES)
    real_forward = Engine._forward

    def flaky(self, tap, rows, templates, *rest):
        if len(rows) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, tap, rows, templates, *rest)

    monkeypatch.setattr(Engine, "_forward", flaky)
    got = tiny.encode(SENTENCES, batch_size=64)
    assert got.shape == expected.shape and close(got, expected)


def test_other_runtime_errors_are_not_swallowed(tiny, monkeypatch):
    def broken(self, tap, rows, templates, *rest):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(Engine, "_forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        tiny.encode(SENTENCES[:2])


def test_model_that_cannot_reuse_prefixes_falls_back_with_a_message(tiny_llama, caplog, monkeypatch):
    model, tokenizer = tiny_llama
    plain = MetaEOL(model, tokenizer=tokenizer, engine="plain").encode(SENTENCES[:3])

    def no_cache(self, tap):
        raise TypeError("this model takes no cache")

    monkeypatch.setattr(Engine, "_build_prefix_kv", no_cache)
    encoder = MetaEOL(model, tokenizer=tokenizer)
    with caplog.at_level("WARNING", logger="metaeol.engine"):
        got = encoder.encode(SENTENCES[:3])
    assert "prefix reuse is not possible" in caplog.text and "takes no cache" in caplog.text
    assert close(got, plain)
    assert not encoder._engine(encoder.layers, 8).uses_prefix


def test_prefix_reuse_that_disagrees_is_caught(tiny_llama, caplog, monkeypatch):
    model, tokenizer = tiny_llama
    plain = MetaEOL(model, tokenizer=tokenizer, engine="plain").encode(SENTENCES[:3])
    real = Engine.reused_tokens

    def off_by_one(self, ids, template):  # pretends one more token is shared than really is
        return min(real(self, ids, template) + 1, len(ids) - 1)

    monkeypatch.setattr(Engine, "reused_tokens", off_by_one)
    encoder = MetaEOL(model, tokenizer=tokenizer)
    with caplog.at_level("WARNING", logger="metaeol.engine"):
        got = encoder.encode(SENTENCES[:3])
    assert "disagrees with full prompts" in caplog.text
    assert close(got, plain)


@pytest.mark.parametrize("architecture", ["Qwen2", "Gemma2", "GPTNeoX", "Qwen3"])
def test_broadcast_prefix_attention_across_architectures(stories_folder, architecture):
    """GQA, attention-logit soft-capping (Gemma2), fused QKV (GPT-NeoX), q/k norms (Qwen3)."""
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stories_folder)
    size = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if architecture != "GPTNeoX":
        size.update(num_key_value_heads=2, head_dim=8)
    config = getattr(transformers, f"{architecture}Config")(**size)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    plain = encoder_with(model, tokenizer, "plain").encode(SENTENCES)
    encoder = MetaEOL(model, tokenizer=tokenizer)
    assert close(encoder.encode(SENTENCES), plain)
    assert encoder._engine(encoder.layers, 1).prefix_mode == "packed"


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_other_threads_keep_the_models_own_attention_during_a_prefix_pass(stories_folder, implementation):
    import threading

    from transformers import AutoModel

    from metaeol.prefix_attention import broadcast_prefix

    model = AutoModel.from_pretrained(stories_folder, attn_implementation=implementation).eval()
    ids = torch.tensor([[1, 270, 417, 300, 12]])
    with torch.no_grad():
        expected = model(input_ids=ids).last_hidden_state
        seen = {}
        with broadcast_prefix(model, []):
            with broadcast_prefix(model, []):  # nested/concurrent passes
                pass
            worker = threading.Thread(target=lambda: seen.update(out=model(input_ids=ids).last_hidden_state))
            worker.start()
            worker.join()
            assert model.config._attn_implementation != implementation  # still switched for this pass
        assert model.config._attn_implementation == implementation
    assert torch.allclose(seen["out"], expected, atol=1e-6)
