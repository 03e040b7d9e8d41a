"""The weights id follows the weights' contents: replaced weights never come back from the store
under the old id, and identical weights keep their id wherever they lie."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from _bytes import flip_last_byte

from metaeol import MetaEOL
from metaeol.file_digest import file_sha256
from metaeol.settings import VectorSettings
from metaeol.weights_identity import parameters_id, source_weights_id

SENTENCES = ["A man is playing a guitar.", "Is it raining?"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAEOL_CACHE", str(tmp_path / "cache"))


def _save_random_llama(folder, tokenizer, seed: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture
def tokenizer(stories_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(stories_folder)


def test_replaced_local_weights_are_not_served_from_the_store(tmp_path, tokenizer):
    folder, store = tmp_path / "model", tmp_path / "vectors.db"
    _save_random_llama(folder, tokenizer, seed=0)
    before = MetaEOL(str(folder), store=str(store))
    old = before.encode(SENTENCES)
    _save_random_llama(folder, tokenizer, seed=1)  # a new checkpoint written over the old one
    after = MetaEOL(str(folder), store=str(store))
    assert after.weights_id != before.weights_id and after.cache_key != before.cache_key
    assert not VectorSettings.is_outdated_key(after.cache_key)
    fresh = MetaEOL(str(folder)).encode(SENTENCES)
    np.testing.assert_array_equal(after.encode(SENTENCES), fresh)
    assert not np.allclose(fresh, old)


def test_identical_weights_keep_their_id_when_copied_moved_or_touched(tmp_path, stories_folder):
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(stories_folder, copy)  # new paths, inodes and times; the same bytes
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    os.utime(weights, (1_000_000_000, 1_000_000_000))
    original = source_weights_id(str(stories_folder), None)
    assert original.startswith("local-") and source_weights_id(str(copy), None) == original
    flip_last_byte(weights)  # one byte of the weights changes
    assert source_weights_id(str(copy), None) != original


def test_a_gguf_is_identified_by_its_contents(tmp_path, stories_gguf):
    copy = tmp_path / "renamed-folder" / stories_gguf.name
    copy.parent.mkdir()
    shutil.copyfile(stories_gguf, copy)
    assert source_weights_id(str(copy), None) == source_weights_id(str(stories_gguf), None)


def test_a_file_is_read_once_while_it_is_unchanged(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"weights")
    real = file_sha256(path)
    cache_file = tmp_path / "cache" / "file-hashes.json"
    cache = json.loads(cache_file.read_text())
    assert list(cache.values()) == [real]
    cache_file.write_text(json.dumps({key: "0" * 64 for key in cache}))
    assert file_sha256(path) == "0" * 64  # answered from the cache, not by reading the file
    times = path.stat().st_atime_ns, path.stat().st_mtime_ns
    path.write_bytes(b"weightz")  # the same size, inode and (set back) modification time
    os.utime(path, ns=times)
    assert file_sha256(path) not in (real, "0" * 64)
    assert len(json.loads(cache_file.read_text())) == 1  # the stale entry of this path is dropped


def test_a_passed_model_is_identified_by_its_parameters(tiny_llama):
    model, tokenizer = tiny_llama
    first = MetaEOL(model, tokenizer=tokenizer)
    assert first.weights_id == parameters_id(model) and first.weights_id.startswith("params-")
    assert MetaEOL(model, tokenizer=tokenizer).cache_key == first.cache_key
    changed = type(model)(model.config).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.norm.weight[0] += 1.0
    other = MetaEOL(changed, tokenizer=tokenizer)
    assert other.weights_id != first.weights_id and other.cache_key != first.cache_key


def _fake_hub_cache(root, hub_id: str, commits: list[str], main: str) -> None:
    repo = root / f"models--{hub_id.replace('/', '--')}"
    for commit in commits:
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(main)


def test_a_hub_model_is_identified_by_the_commit_its_branch_points_to(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    old, new = "a" * 40, "b" * 40
    _fake_hub_cache(tmp_path / "hub", "org/model", [old, new], main=old)
    assert source_weights_id("org/model", None) == source_weights_id("org/model", "main") == old[:12]
    assert source_weights_id("org/model", new) == new[:12]
    (tmp_path / "hub" / "models--org--model" / "refs" / "main").write_text(new)  # main moved on
    assert source_weights_id("org/model", None) == new[:12]
    assert source_weights_id("org/unseen", None) == "unknown"


def test_a_gguf_is_converted_again_only_when_its_contents_change(tmp_path, stories_gguf):
    from metaeol.loading import _file_key

    copy = tmp_path / "copy" / stories_gguf.name
    copy.parent.mkdir()
    shutil.copyfile(stories_gguf, copy)
    assert _file_key(copy) == _file_key(stories_gguf)  # another path: the conversion is reused
    stat = copy.stat()
    flip_last_byte(copy)  # the same size and (set back) modification time, other bytes
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _file_key(copy) != _file_key(stories_gguf)
