"""Non-finite vectors (a model or booster setting that overflows) are errors, never results:
the vector store refuses them and evaluation names them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaeol import MetaEOL
from metaeol.evaluation.runner import EvalData, run_evaluation
from metaeol.evaluation.data import load_task
from metaeol.finite import NonFiniteVectors, nonfinite_rows
from metaeol.store import VectorStore


@pytest.fixture(scope="module")
def overflowing(stories_folder):
    """A random 2-block Llama whose first MLP writes inf for every token: every vector is NaN."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(stories_folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaModel(config).eval()
    with torch.no_grad():
        model.layers[0].mlp.down_proj.bias = None
        model.layers[0].mlp.down_proj.weight.fill_(float("inf"))
    return MetaEOL(model, tokenizer=tokenizer, engine="plain")


def test_nonfinite_rows():
    vectors = np.ones((4, 2, 3), dtype=np.float32)
    vectors[1, 0, 2], vectors[3, 1, 0] = np.nan, -np.inf
    assert nonfinite_rows(vectors) == [1, 3] and nonfinite_rows(np.ones((0, 3))) == []


def test_the_store_never_keeps_nonfinite_vectors(overflowing, tmp_path):
    """encode() through a store gives the NaN rows as computed (embed reports them per row) but
    stores none of them; filling a store for the sweep refuses them."""
    from metaeol.cache import TemplateStateCache

    assert nonfinite_rows(overflowing.encode(["a man plays", "x"])) == [0, 1]  # the model does overflow
    overflowing.store = VectorStore(tmp_path / "v.db")
    try:
        assert nonfinite_rows(overflowing.encode(["a man plays", "x", "a man plays"])) == [0, 1, 2]
        assert sum(m["rows"] for m in overflowing.store.stats()["models"]) == 0  # nothing was stored
        cache = TemplateStateCache(overflowing.store, overflowing.cache_key, [t.sha256 for t in overflowing.prompt_set],
                                   lambda sentences, layers, templates: overflowing.encode_templates(
                                       sentences, layers, templates=templates))
        with pytest.raises(NonFiniteVectors, match=r"2 of 2 vectors are not finite .* first for sentence 0 'a man plays'"):
            cache.fill(["a man plays", "x"], overflowing.layers)
    finally:
        overflowing.store = None


def test_evaluation_names_nonfinite_vectors(overflowing, senteval_root):
    data = EvalData(senteval_root, {"STS-B": load_task("STS-B", senteval_root, split="dev", limit=4)}, "dev", 4, True, 0.0)
    with pytest.raises(NonFiniteVectors, match="vectors are not finite"):
        run_evaluation(overflowing, data)


def test_mteb_refuses_nonfinite_vectors(overflowing):
    mteb = pytest.importorskip("mteb")
    from torch.utils.data import DataLoader

    from metaeol.integrations.mteb import MetaEOLMTEB

    wrapped = MetaEOLMTEB(overflowing)
    loader = DataLoader([{"text": "a man plays"}, {"text": "x"}], batch_size=2)
    task = mteb.get_task("STSBenchmark").metadata
    with pytest.raises(NonFiniteVectors, match="2 of 2 vectors are not finite"):
        wrapped.encode(loader, task_metadata=task, hf_split="test", hf_subset="default")
