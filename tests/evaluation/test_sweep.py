"""The sweep: one encoding pass through the store, every configuration scored from it."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _threads import single_thread
from metaeol.cache import TemplateStateCache
from metaeol.cli import main
from metaeol.evaluation.data import Pairs
from metaeol.evaluation.sts import spearman_x100
from metaeol.evaluation.sweep import build_configs, combined_prompt_set, run_sweep, task_grams
from metaeol.evaluation.sweep_report import write_outputs
from metaeol.layers import expand_layers
from metaeol.prompts import load_prompt_set
from metaeol.store import VectorStore

D = 24
one_thread = pytest.fixture(single_thread)


class FakeEncoder:
    """Deterministic stand-in with the encoder's contract: bag-of-words vectors plus a
    template- and layer-specific distortion; counts what it encodes."""

    def __init__(self, prompt_set, num_layers: int = 4) -> None:
        self.prompt_set = prompt_set
        self.num_layers = num_layers
        self.model_key = self.cache_key = "fake/model@0:float32"
        self.encoded: list[str] = []

    def describe(self) -> dict:
        return {"model": "fake", "model_key": self.model_key}

    @staticmethod
    def _word(w: str) -> np.ndarray:
        return np.random.default_rng(zlib.crc32(w.encode())).standard_normal(D)

    def encode_templates(self, sentences, layers, batch_size=16, show_progress_bar=False, templates=None):
        self.encoded.extend(sentences)
        templates = range(len(self.prompt_set.templates)) if templates is None else templates
        out = np.zeros((len(sentences), len(templates), len(layers), D), np.float32)
        for n, s in enumerate(sentences):
            base = sum(self._word(w) for w in s.lower().split())
            for i, t in enumerate(templates):
                tmpl = self.prompt_set.templates[t]
                for k, layer in enumerate(layers):
                    depth = self.num_layers if layer == -1 else layer
                    noise = np.random.default_rng(zlib.crc32(f"{s}|{tmpl.name}|{depth}".encode())).standard_normal(D)
                    out[n, i, k] = base + noise * (1.0 + abs(depth - 2)) + 3.0 * (t + 1)
        return out


def _task(n: int, seed: int) -> Pairs:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(40)]
    s1, s2, gold = [], [], []
    for _ in range(n):
        a = list(rng.choice(vocab, 6))
        keep = int(rng.integers(0, 6))  # never identical: exact cosine ties would make ranks fragile
        b = a[:keep] + list(rng.choice(vocab, 6 - keep))
        s1.append(" ".join(a))
        s2.append(" ".join(b))
        gold.append(keep / 6 * 5)
    return Pairs(tuple(s1), tuple(s2), np.array(gold))


def _cache(enc, store) -> TemplateStateCache:
    return TemplateStateCache(store, enc.cache_key, [t.sha256 for t in enc.prompt_set.templates],
                              lambda sentences, layers, templates: enc.encode_templates(sentences, layers,
                                                                                          templates=templates))


@pytest.fixture()
def sets():
    ablated, baseline = load_prompt_set("metaeol"), load_prompt_set("prompteol")
    return ablated, baseline, combined_prompt_set(ablated, baseline)


def test_layer_specs() -> None:
    assert expand_layers("all", 5) == [1, 2, 3, 4, -1]
    assert expand_layers("-1, 2", 5) == [-1, 2]
    assert expand_layers("5", 5) == [5]  # hidden_states[5]: the final output, as everywhere
    with pytest.raises(ValueError, match="out of range"):
        expand_layers("6", 5)
    with pytest.raises(ValueError, match="separated by commas"):
        expand_layers("x", 5)


def test_configs_cover_prompt_counts_and_meta_task_combinations(sets) -> None:
    ablated, _, _ = sets
    cfg = build_configs(ablated, n_random_orders=3, seed=7)
    assert cfg.subsets["all"] == tuple(range(8)) and cfg.subsets["baseline"] == (8,)
    assert list(cfg.prompt_orders) == ["authors", "reverse", "random1", "random2", "random3"]
    assert cfg.subsets["reverse:2"] == (6, 7)
    assert len(cfg.meta_task_subsets) == 15 and cfg.meta_task_subsets["TC+IE"] == (0, 1, 6, 7)
    assert build_configs(ablated, 3, 7).prompt_orders == cfg.prompt_orders  # seeded
    assert build_configs(ablated, 3, 8).prompt_orders != cfg.prompt_orders


def test_gram_cosines_equal_cosines_of_means(tmp_path: Path, sets) -> None:
    _, _, combined = sets
    enc = FakeEncoder(combined)
    store = VectorStore(tmp_path / "s.db")
    task = _task(30, 0)
    _cache(enc, store).fill(list(task.sent1 + task.sent2), [2])
    grams, grams16 = task_grams(store, enc.model_key, [t.sha256 for t in combined.templates], 2, task,
                                chunk_pairs=7, also_float16=True)
    a = enc.encode_templates(list(task.sent1), [2])[:, :, 0].astype(np.float64)
    b = enc.encode_templates(list(task.sent2), [2])[:, :, 0].astype(np.float64)
    for subset in [(0,), (1, 5), tuple(range(8))]:
        ma, mb = a[:, subset].mean(1), b[:, subset].mean(1)
        want = (ma * mb).sum(1) / np.linalg.norm(ma, axis=1) / np.linalg.norm(mb, axis=1)
        np.testing.assert_allclose(grams.cosines(subset), want, rtol=1e-10)
        np.testing.assert_allclose(grams16.cosines(subset), want, atol=1e-3)


def test_sweep_encodes_once_and_writes_outputs(tmp_path: Path, sets) -> None:
    ablated, baseline, combined = sets
    enc = FakeEncoder(combined)
    store = VectorStore(tmp_path / "s.db")
    tasks = {"stsb-dev": _task(60, 1), "stsb-test": _task(40, 2)}
    layers = expand_layers("all", enc.num_layers)
    res = run_sweep(enc, store, tasks, layers, ablated=ablated, baseline=baseline, select_on="stsb-dev",
                    seed=3, n_random_orders=4, max_chunk_bytes=20_000)
    unique = len({s for t in tasks.values() for s in t.sent1 + t.sent2})
    assert len(enc.encoded) == unique  # each sentence encoded once, all layers and templates together
    assert res["timing"]["sentences_encoded"] == unique and res["timing"]["sentences_from_store"] == 0
    assert res["store"]["rows_this_model"] == unique * 9 * len(layers)
    # the fake is built so that layer 2 is the least noisy
    assert res["selection"]["best_layer"]["metaeol"]["layer"] == 2
    assert "overfits" in res["selection"]["warning"]
    # averaging prompts helps on the fake (independent noise per template)
    curve = res["prompt_count"]["out"]["authors"]["scores"]["stsb-dev"]
    assert curve[-1] > curve[0]
    assert res["prompt_count"]["out"]["authors"]["scores"]["stsb-dev"][-1] == pytest.approx(
        res["by_layer"]["metaeol"]["stsb-dev"][-1])
    assert len(res["meta_tasks"]["out"]) == 15
    assert 0 <= res["float16_effect"]["max_abs_diff"] < 3  # 60 pairs: one rank swap moves ~0.1-0.7
    # scores match a direct computation from re-encoded vectors
    t = tasks["stsb-dev"]
    i = layers.index(2)
    a8 = enc.encode_templates(list(t.sent1), [2])[:, :8].astype(np.float64).mean(1)[:, 0]
    b8 = enc.encode_templates(list(t.sent2), [2])[:, :8].astype(np.float64).mean(1)[:, 0]
    cos8 = (a8 * b8).sum(1) / np.linalg.norm(a8, axis=1) / np.linalg.norm(b8, axis=1)
    assert res["by_layer"]["metaeol"]["stsb-dev"][i] == pytest.approx(spearman_x100(cos8, t.targets), abs=1e-9)

    paths = write_outputs(res, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["selection"]["best_layer"]["metaeol"]["layer"] == 2
    md = paths["markdown"].read_text()
    assert "Warning" in md and "Score vs layer" in md and "Meta-task subsets" in md
    for key in ("plot_layers", "plot_prompts", "plot_meta_tasks"):
        assert paths[key].stat().st_size > 10_000

    # a second sweep on the same inputs costs no encoding
    enc2 = FakeEncoder(combined)
    res2 = run_sweep(enc2, store, tasks, layers, ablated=ablated, baseline=baseline, select_on="stsb-dev", seed=3,
                     n_random_orders=4)
    assert enc2.encoded == [] and res2["timing"]["sentences_from_store"] == unique
    assert res2["grid"] == res["grid"]


def test_sweep_rejects_mismatched_encoder(tmp_path: Path, sets) -> None:
    ablated, baseline, _ = sets
    enc = FakeEncoder(ablated)
    with pytest.raises(ValueError, match="baseline"):
        run_sweep(enc, VectorStore(tmp_path / "s.db"), {"a": _task(5, 0)}, [-1], ablated=ablated, baseline=baseline,
                  select_on="a")


def test_cache_costs_no_model_time_the_second_time(tmp_path: Path, sets) -> None:
    _, _, combined = sets
    store = VectorStore(tmp_path / "c.db")
    enc = FakeEncoder(combined)
    cache = _cache(enc, store)
    sents = ["a b c", "d e", "a b c", "f"]
    first = cache(sents, [4, 2])
    assert enc.encoded == ["a b c", "d e", "f"]  # unique sentences only
    np.testing.assert_array_equal(first, enc.encode_templates(sents, [4, 2]))
    enc.encoded.clear()
    again = cache(sents, [2, 4])
    assert enc.encoded == []
    np.testing.assert_array_equal(again, first[:, :, ::-1])
    more = cache(sents + ["g"], [2])
    assert enc.encoded == ["g"] and more.shape == (5, 9, 1, D)
    np.testing.assert_array_equal(more[:4], first[:, :, 1:])


def test_sweep_with_a_real_tiny_llama(tmp_path: Path, tiny_llama, sets) -> None:
    """End to end with the real encoder: stored vectors are the encoder's, the MetaEOL score
    at the final layer is the one `encode` gives, and a second sweep runs no model."""
    from metaeol import MetaEOL

    model, tokenizer = tiny_llama
    ablated, baseline, combined = sets
    enc = MetaEOL(model, prompts=combined, tokenizer=tokenizer)
    task = _task(12, 5)
    layers = expand_layers("all", enc.num_layers)
    store = VectorStore(tmp_path / "v.db")
    res = run_sweep(enc, store, {"toy-dev": task}, layers, ablated=ablated, baseline=baseline, select_on="toy-dev",
                    n_random_orders=2, batch_size=4)
    assert res["timing"]["sentences_encoded"] == 24 and res["store"]["rows_this_model"] == 24 * 9 * len(layers)
    direct = enc.encode_templates(list(task.sent1[:3]), layers=[-1, 2])
    cached = MetaEOL(model, prompts=combined, tokenizer=tokenizer, store=store)
    np.testing.assert_allclose(cached.encode_templates(list(task.sent1[:3]), layers=[-1, 2]), direct,
                               rtol=1e-4, atol=1e-5)
    plain = MetaEOL(model, prompts="metaeol", tokenizer=tokenizer)
    a, b = plain.encode(list(task.sent1)), plain.encode(list(task.sent2))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert res["by_layer"]["metaeol"]["toy-dev"][-1] == pytest.approx(spearman_x100(cos, task.targets), abs=1e-6)

    class NoModel:
        prompt_set, num_layers, model_key, cache_key = enc.prompt_set, enc.num_layers, enc.model_key, enc.cache_key
        describe = enc.describe

        def encode_templates(self, *args, **kwargs):
            raise AssertionError("the store should have answered")

    again = run_sweep(NoModel(), store, {"toy-dev": task}, layers, ablated=ablated, baseline=baseline, select_on="toy-dev",
                      n_random_orders=2)
    assert again["grid"] == res["grid"] and again["timing"]["sentences_from_store"] == 24


def test_sweep_cli_on_stories260k(tmp_path: Path, stories_gguf, senteval_root, one_thread) -> None:
    """`metaeol sweep` end to end on STS data and the stories260K model."""
    from click.testing import CliRunner

    from metaeol.cli import main

    data = senteval_root
    out = tmp_path / "out"
    args = ["sweep", "--model", str(stories_gguf), "--tasks", "SICK-R", "--layer", "2,-1", "--sample", "8",
            "--random-orders", "2", "--data", str(data), "--output", str(out), "--batch-size", "4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "best layer on STS-B-dev" in res.output and "overfits" in res.output
    data_out = json.loads((out / "sweep.json").read_text())
    assert set(data_out["tasks"]) == {"SICK-R-test", "STS-B-dev"}  # the selection split is added
    assert data_out["layers"] == [2, -1] and (out / "layers.png").is_file() and (out / "vectors.db").is_file()
    again = CliRunner().invoke(main, args + ["--no-plots"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "sweep.json").read_text())["timing"]["sentences_encoded"] == 0
    bad = CliRunner().invoke(main, ["sweep", "--model", str(stories_gguf), "--tasks", "nope", "--output", str(out)])
    assert bad.exit_code != 0 and "unknown task" in bad.output


LEGACY_PAIRS = [("A man is playing a guitar.", "Someone plays music.", 4.2), ("A cat sleeps.", "The stock market fell.", 0.2),
                ("A woman slices an onion.", "A chef chops vegetables.", 3.1),
                ("Kids play football.", "Children are playing soccer.", 4.6)]


def test_a_store_written_before_the_architecture_change_is_still_read(tmp_path: Path, stories_gguf, sets) -> None:
    """tests/data/legacy_sweep_store.db was written by metaeol 0.1.0's sweep (stories260K,
    layers 2 and -1, the pairs above), whose key named local weights ``@local``; once
    ``metaeol store adopt --model`` gives it today's key (the weights id by content), today's
    sweep must find every vector in it, under the same template hashes, sentence hashes and
    layer keys, and score the same."""
    import shutil
    import sqlite3

    from metaeol import MetaEOL

    data = Path(__file__).resolve().parents[1] / "data"
    expected = json.loads((data / "legacy_sweep_expect.json").read_text())
    db = tmp_path / "legacy.db"
    shutil.copy(data / "legacy_sweep_store.db", db)
    old_path = expected["store_key"].split("@")[0]
    with sqlite3.connect(db) as conn:  # the key names the model file by its path on the machine that wrote it
        conn.execute("UPDATE models SET key = replace(key, ?, ?)", (old_path, str(stories_gguf)))
    ablated, baseline, combined = sets
    enc = MetaEOL(str(stories_gguf), prompts=combined)
    outdated = expected["store_key"].replace(old_path, str(stories_gguf))
    assert enc.cache_key != outdated and enc.cache_key == outdated.replace("@local|", f"@{enc.weights_id}|")
    res = CliRunner().invoke(main, ["store", "adopt", "--path", str(db), "--model", str(stories_gguf)])
    assert res.exit_code == 0 and f"{outdated} -> {enc.cache_key}: 144 vectors" in res.output, res.output

    class StoreOnly:
        prompt_set, num_layers, model_key, cache_key = enc.prompt_set, enc.num_layers, enc.model_key, enc.cache_key
        describe = enc.describe

        def encode_templates(self, *args, **kwargs):
            raise AssertionError("every vector should come from the legacy store")

    pairs = Pairs(tuple(a for a, _, _ in LEGACY_PAIRS), tuple(b for _, b, _ in LEGACY_PAIRS),
                  np.array([g for *_, g in LEGACY_PAIRS]))
    with VectorStore(db) as store:
        res = run_sweep(StoreOnly(), store, {"STS-B-dev": pairs}, expected["layers"], ablated=ablated,
                        baseline=baseline, select_on="STS-B-dev", n_random_orders=1)
    assert res["timing"]["sentences_from_store"] == 8 and res["timing"]["sentences_encoded"] == 0
    for method in ("metaeol", "prompteol"):
        np.testing.assert_allclose(res["by_layer"][method]["STS-B-dev"], expected["by_layer"][method]["STS-B-dev"],
                                   atol=1e-9)
