"""MetaEOL as an MTEB model, against the real mteb package (offline: mock tasks and local STS-B)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mteb = pytest.importorskip("mteb", minversion="2")

from click.testing import CliRunner  # noqa: E402

from metaeol import MetaEOL  # noqa: E402
from metaeol.cli import main  # noqa: E402
from metaeol.evaluation.data import load_task  # noqa: E402
from metaeol.evaluation.sts import evaluate_sts  # noqa: E402
from metaeol.integrations.mteb import MetaEOLMTEB, local_stsb_task  # noqa: E402
from metaeol.boosters import ContrastivePrompting, TokenPrepending  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wrapped(stories):
    return MetaEOLMTEB(stories)


def _variant(stories, **kwargs) -> MetaEOL:
    """Another configuration on the already loaded stories260K weights (no reload)."""
    return MetaEOL(stories.model, tokenizer=stories.tokenizer, **kwargs)


def test_mock_run_passes_every_compatible_task(wrapped):
    results = mteb.mock_run(wrapped)
    ran = {name: status for name, status in results.items() if status is not None}
    failed = {name: status.exception for name, status in ran.items() if not isinstance(status, mteb.TaskResult)}
    assert not failed
    assert results.all_passed
    assert {"MockSTSTask", "MockRetrievalTask", "MockClassificationTask", "MockClusteringTask"} <= set(ran)


def test_model_meta_describes_the_configuration(stories, wrapped):
    meta = wrapped.mteb_model_meta
    assert meta.name == "metaeol/stories260K"
    assert meta.embed_dim == stories.embedding_dim == 64
    assert meta.similarity_fn_name.value == "cosine"
    assert meta.max_tokens == stories.max_sentence_tokens
    assert meta.n_parameters == sum(p.numel() for p in stories.model.parameters())
    assert "_L5_last_float32_t512" in meta.revision and "metaeol-" in meta.revision
    assert meta.loader_kwargs["layer"] == 5 and meta.loader_kwargs["prompts"]["name"] == "metaeol"


def test_every_vector_setting_changes_the_revision(stories):
    base = MetaEOLMTEB(_variant(stories)).mteb_model_meta
    variants = [
        dict(layer=2), dict(prompts="prompteol"), dict(tasks=["SA"]), dict(pooling="mean"),
        dict(max_sentence_tokens=16), dict(clean=False), dict(contrastive=ContrastivePrompting(1, 0.5)),
        dict(token_prepending=TokenPrepending(1, 3)),
    ]
    revisions = {MetaEOLMTEB(_variant(stories, **kw)).mteb_model_meta.revision for kw in variants}
    assert base.revision not in revisions and len(revisions) == len(variants)
    # the engine only changes how vectors are computed, not which
    assert MetaEOLMTEB(_variant(stories, engine="plain")).mteb_model_meta.revision == base.revision
    assert MetaEOLMTEB(MetaEOL(stories.model_name, dtype="bfloat16")).mteb_model_meta.revision != base.revision


def test_several_layers_are_refused(stories):
    with pytest.raises(ValueError, match="one layer"):
        MetaEOLMTEB(_variant(stories, layer=[1, 2]))


def test_local_stsb_score_equals_metaeol_eval(stories, wrapped, senteval_root):
    limit = 60
    result = mteb.evaluate(wrapped, [local_stsb_task(senteval_root, limit=limit)], cache=None, show_progress_bar=False)
    (task_result,) = result.task_results
    assert task_result.task_name == f"STSBenchmarkSentEval-first{limit}"
    ours = evaluate_sts(load_task("STS-B", senteval_root, limit=limit), stories.encode)
    assert ours["n"] == limit
    assert task_result.get_score() == pytest.approx(ours["score"], abs=1e-3)


class _Counting(MetaEOLMTEB):
    calls = 0

    def encode(self, inputs, **kwargs):
        type(self).calls += 1
        return super().encode(inputs, **kwargs)


def test_result_cache_keeps_configurations_apart(stories, tmp_path, senteval_root):
    cache = mteb.ResultCache(cache_path=tmp_path)
    task = local_stsb_task(senteval_root, limit=40)
    first, other = _Counting(_variant(stories)), _Counting(_variant(stories, layer=2))
    score = mteb.evaluate(first, [task], cache=cache, show_progress_bar=False).task_results[0].get_score()
    _Counting.calls = 0
    again = mteb.evaluate(first, [task], cache=cache, show_progress_bar=False).task_results[0].get_score()
    assert _Counting.calls == 0 and again == pytest.approx(score, abs=1e-6)  # same configuration: from the cache
    other_score = mteb.evaluate(other, [task], cache=cache, show_progress_bar=False).task_results[0].get_score()
    assert _Counting.calls > 0 and other_score != score  # another layer: computed, stored apart
    files = sorted(p.relative_to(tmp_path).parts[2] for p in tmp_path.rglob("STSBenchmarkSentEval-first40.json"))
    assert files == sorted([first.mteb_model_meta.revision, other.mteb_model_meta.revision])


def test_model_meta_load_model_rebuilds_the_same_encoder(stories, wrapped):
    rebuilt = wrapped.mteb_model_meta.load_model()
    assert rebuilt.mteb_model_meta.revision == wrapped.mteb_model_meta.revision
    sentences = ["A man is playing a guitar.", "Is it raining?"]
    np.testing.assert_array_equal(rebuilt.model.encode(sentences), stories.encode(sentences))


def test_mteb_cli_local_stsb(stories, stories_gguf, tmp_path, senteval_root):
    out = tmp_path / "results"
    result = CliRunner().invoke(main, [
        "mteb", "--local-stsb", "--limit", "30", "--data", str(senteval_root), "-m", str(stories_gguf),
        "--output", str(out), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "| STSBenchmarkSentEval-first30 | test | default |" in result.output
    (path,) = out.glob("results/metaeol__stories260K/*/STSBenchmarkSentEval-first30.json")
    main_score = json.loads(path.read_text())["scores"]["test"][0]["main_score"]
    ours = evaluate_sts(load_task("STS-B", senteval_root, limit=30), stories.encode)["score"]
    assert main_score == pytest.approx(ours, abs=1e-3)
    assert f"{100 * main_score:.2f} |" in result.output


def test_mteb_cli_rejects_unknown_task(tmp_path):
    result = CliRunner().invoke(main, ["mteb", "--tasks", "NoSuchTask", "--output", str(tmp_path)])
    assert result.exit_code == 2 and "NoSuchTask" in result.output and "--tasks" in result.output


def test_importing_metaeol_does_not_import_the_integrated_libraries():
    code = "import sys, metaeol, metaeol.cli; print(sorted(m for m in ('mteb', 'sentence_transformers') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
