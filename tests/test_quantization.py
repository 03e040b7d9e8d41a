"""dtype="int8": int8 linear layers in the blocks (per-token activation scales, per-channel weight
scales, integer matmul), close to float32, exact across batches, and keyed apart everywhere."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from conftest import SENTENCES
from metaeol import MetaEOL, quantization
from metaeol.quantization import Int8Linear, QuantizedInputs, is_quantized, quantize_blocks


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def int8(stories_gguf):
    return MetaEOL(str(stories_gguf), dtype="int8")


def test_int8_linear_equals_the_integer_recipe():
    """Each output is sum_k q(x)_k q(w)_k times the token's and the channel's scale, computed exactly."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(40, 24)
    x = torch.randn(5, 7, 40)
    got = Int8Linear(linear)(x)
    rows = x.reshape(-1, 40).double()
    sx = rows.abs().amax(1, keepdim=True) / 127
    sw = linear.weight.detach().double().abs().amax(1, keepdim=True) / 127
    qx, qw = torch.round(rows / sx), torch.round(linear.weight.detach().double() / sw)
    want = (qx @ qw.T) * sx * sw.T + linear.bias.detach().double()
    torch.testing.assert_close(got.reshape(-1, 24).double(), want, rtol=1e-5, atol=1e-5)
    assert torch.nn.functional.cosine_similarity(got, linear(x), dim=-1).min() > 0.999


def test_only_block_linears_are_quantized(stories_gguf):
    encoder = MetaEOL(str(stories_gguf))
    assert not is_quantized(encoder.model)
    assert quantize_blocks(encoder.model) == 5 * 7  # q, k, v, o, gate, up, down in each of 5 blocks
    assert isinstance(encoder.model.embed_tokens, torch.nn.Embedding) and encoder.model.embed_tokens.weight.dtype == torch.float32


def test_int8_is_close_to_float32(stories, int8):
    assert int8.dtype_name == "int8" and int8.dtype == torch.float32
    assert _cosines(int8.encode(SENTENCES), stories.encode(SENTENCES)).min() > 0.998  # real stories260K: 0.9998; the random stand-in: 0.9989 (issue target: 0.99)


def test_int8_vectors_do_not_depend_on_the_batch(int8):
    whole = int8.encode(SENTENCES)
    np.testing.assert_array_equal(int8.encode(SENTENCES, batch_size=1), whole)
    np.testing.assert_array_equal(int8.encode(SENTENCES[::-1])[::-1], whole)


def test_prefix_and_plain_engines_agree_under_int8(stories_gguf, int8):
    """The engines differ by float rounding in attention, which int8 rounding can amplify by one
    quantization step: the vectors agree to cosine 0.9999, not to 1e-5 as in float32."""
    plain = MetaEOL(str(stories_gguf), dtype="int8", engine="plain")
    assert _cosines(int8.encode(SENTENCES), plain.encode(SENTENCES)).min() > 0.9999


def test_int8_has_its_own_keys(stories, int8):
    assert int8.settings.dtype == "int8" and int8.describe()["dtype"] == "int8"
    assert int8.cache_key != stories.cache_key and "|int8|" in int8.cache_key
    assert int8.settings.label != stories.settings.label and "_int8_" in int8.settings.label


def test_int8_config_rebuilds_int8(int8):
    from metaeol.settings import build_encoder

    rebuilt = build_encoder(int8.settings.to_config())
    assert rebuilt.dtype_name == "int8" and rebuilt.cache_key == int8.cache_key


def test_int8_refuses_other_devices_and_dtypes(stories_gguf, int8):
    with pytest.raises(ValueError, match="int8 runs on CPU only"):
        MetaEOL(str(stories_gguf), dtype="int8", device="meta")  # any device but the CPU
    with pytest.raises(ValueError, match="int8 layers, which compute in float32"):
        MetaEOL(int8.model, tokenizer=int8.tokenizer, dtype="bfloat16")


def test_layers_sharing_an_input_quantize_it_once_with_the_same_result():
    """q, k and v (gate and up) read one tensor: a block quantizes it once, and each layer's output
    is bit-for-bit what a layer of its own computes."""
    torch.manual_seed(0)
    linears = [torch.nn.Linear(40, n, bias=False) for n in (24, 8, 8)]
    shared = QuantizedInputs()
    x = torch.randn(3, 5, 40)
    alone = [Int8Linear(linear)(x) for linear in linears]
    together = [Int8Linear(linear, shared)(x) for linear in linears]
    for a, b in zip(alone, together):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    first = shared.get(x)
    assert shared.get(x)[0] is first[0]  # the same tensor: answered from the entry
    assert not torch.equal(shared.get(x + 1)[0], first[0])  # another tensor is quantized anew


def test_a_block_quantizes_each_distinct_input_once_and_keeps_nothing(stories_gguf, monkeypatch):
    encoder = MetaEOL(str(stories_gguf), dtype="int8")
    calls = []
    original = quantization._quantize_rows
    monkeypatch.setattr(quantization, "_quantize_rows", lambda rows: calls.append(rows.shape) or original(rows))
    ids = encoder.tokenizer("a small test", return_tensors="pt").input_ids
    with torch.no_grad():
        encoder.model(ids)
    assert len(calls) == 5 * 4  # per block: attention input (q, k, v), o, MLP input (gate, up), down
    layers = [m for m in encoder.model.modules() if isinstance(m, Int8Linear)]
    assert len({id(m.inputs) for m in layers}) == 5  # one QuantizedInputs per block
    assert all(m.inputs._entry is None for m in layers)  # freed with the tensors they came from


def test_int8_layers_copy_and_pickle_while_an_input_is_held():
    layer = Int8Linear(torch.nn.Linear(16, 4))
    x = torch.randn(2, 16)
    layer(x)  # x is alive, so the entry is held
    assert layer.inputs._entry is not None
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone.inputs._entry is None
        torch.testing.assert_close(clone(x), layer(x), rtol=0, atol=0)
