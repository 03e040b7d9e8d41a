"""A stories260K-shaped Llama GGUF with random weights, for a clone without ../shared.

Same architecture as the real file (5 blocks, width 64, 8 heads / 4 KV heads, 512-token
SentencePiece-style vocabulary with byte fallback, BOS 1, EOS 2, unset padding stored as
-1), so every test that uses stories260K runs unchanged; only its weights are random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB = 512
WIDTH, FFN, BLOCKS, HEADS, KV_HEADS = 64, 172, 5, 8, 4
UNSET = 0xFFFFFFFF  # how the real file stores an unset special-token id


def _vocabulary() -> list[str]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    letters = "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ"
    pieces = ["▁"] + [f"▁{c}" for c in letters] + list(letters) + list("0123456789.,!?'\"-:;()")
    bigrams = ["th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of", "ed",
               "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le", "ve", "co",
               "me", "de", "hi", "ri", "ro", "ic", "ne", "ea", "ra", "ce", "li", "ch", "ll", "be", "ma", "si"]
    pieces += [f"▁{b}" for b in bigrams] + bigrams
    for p in pieces:
        if p not in tokens and len(tokens) < VOCAB:
            tokens.append(p)
    filler = 0
    while len(tokens) < VOCAB:  # unused but well-formed pieces up to the vocabulary size
        tokens.append(f"▁w{filler}")
        filler += 1
    return tokens


def write_standin_gguf(path: Path, seed: int = 0) -> Path:
    """Write the stand-in model to ``path`` and return it."""
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    tokens = _vocabulary()
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("stories260K-standin")
    writer.add_context_length(2048)
    writer.add_embedding_length(WIDTH)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_block_count(BLOCKS)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259))
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_uint32("tokenizer.ggml.seperator_token_id", UNSET)
    writer.add_pad_token_id(UNSET)

    def tensor(name: str, *shape: int, scale: float = 0.1) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    tensor("token_embd.weight", VOCAB, WIDTH, scale=1.0)
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, np.float32))
    tensor("output.weight", VOCAB, WIDTH)
    kv = WIDTH // HEADS * KV_HEADS
    for b in range(BLOCKS):
        # sharper attention than the other weights' scale gives: a trained model's last token
        # attends to a few tokens, and near-uniform attention would give every sentence almost
        # the same vector (cosines 0.998-0.9997), where rounding alone can reorder STS scores
        tensor(f"blk.{b}.attn_q.weight", WIDTH, WIDTH, scale=0.3)
        tensor(f"blk.{b}.attn_k.weight", kv, WIDTH, scale=0.3)
        tensor(f"blk.{b}.attn_v.weight", kv, WIDTH)
        tensor(f"blk.{b}.attn_output.weight", WIDTH, WIDTH)
        writer.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(WIDTH, np.float32))
        tensor(f"blk.{b}.ffn_gate.weight", FFN, WIDTH)
        tensor(f"blk.{b}.ffn_down.weight", WIDTH, FFN)
        tensor(f"blk.{b}.ffn_up.weight", FFN, WIDTH)
        writer.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(WIDTH, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
