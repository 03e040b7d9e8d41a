"""`metaeol bench`: speed and bound per dtype on built-in sentences (stories260K, no data root)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from metaeol.benchmark import computed_tokens, linear_flops_per_token, sample_sentences
from metaeol.cli import main


def test_bench_reports_every_dtype_as_json(stories_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("METAEOL_DATA", str(tmp_path / "no-data"))  # needs no evaluation data
    result = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "--dtype", "float32,int8", "-n", "8",
                                       "--bound-seconds", "0.1", "--device", "cpu", "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stderr may carry a GGUF conversion progress bar
    rows = report["results"]
    assert [r["dtype"] for r in rows] == ["float32", "int8"]
    for r in rows:
        assert r["sentences"] == 8 and r["sentences_per_s"] > 0 and r["prompt_tokens_per_s"] > r["sentences_per_s"]
        assert r["bound_tflops"] > 0 and r["bound_rows"] in (512, 2048, 8192)
        assert abs(r["fraction_of_bound"] - r["sentences_per_s"] / r["bound_sentences_per_s"]) < 1e-9
        assert r["peak_memory_gib"] > 0
    assert rows[0]["min_cosine_to_first"] is None and 0.998 < rows[1]["min_cosine_to_first"] <= 1.0


def test_bench_table_and_bad_dtype(stories_gguf):
    result = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "-n", "4", "--bound-seconds", "0.1"])
    assert result.exit_code == 0, result.output
    assert "of bound" in result.output and "\nfloat32 " in result.output  # auto: float32 in tests (conftest)
    bad = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "--dtype", "float32,int4"])
    assert bad.exit_code == 2 and "give distinct dtypes from auto, float32, bfloat16, float16, int8" in bad.output


def test_flops_count_the_computed_tokens(stories):
    sentences = sample_sentences(6)
    assert len(set(sample_sentences(64))) == 64 and len(sample_sentences(70)) == 70
    per_token = linear_flops_per_token(stories.model)
    assert per_token == 5 * 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 172)  # stories260K's 5 blocks
    full = sum(len(r) for r in stories.prompt_tokens.tokenize(
        [t.fill(s) for s in stories.prepare(sentences) for t in stories.prompt_set]))
    prefix = sum(len(p) for p in stories._engine(stories.layers, 1).prefixes)
    assert prefix < computed_tokens(stories, sentences) < full  # each prefix once, then the tails only


def test_rounds_interleave_the_dtypes_and_keep_each_best(stories_gguf, monkeypatch):
    """Every round loads and times every dtype in turn; a dtype keeps its fastest round and its best bound."""
    import metaeol.benchmark as benchmark

    calls, times = [], iter([5.0, 4.0, 1.0, 8.0, 3.0, 2.0])  # float32, int8, float32, int8, float32, int8
    time_encode = benchmark._time_encode

    def timed(encoder, texts, batch_size):
        calls.append(encoder.dtype_name)
        return (next(times), *time_encode(encoder, texts, batch_size)[1:])

    bounds = iter([(0.1, 512), (0.3, 2048), (0.2, 512), (0.1, 512), (0.05, 8192), (0.2, 8192)])
    monkeypatch.setattr(benchmark, "_time_encode", timed)
    monkeypatch.setattr(benchmark, "dense_rate", lambda model, device, seconds: next(bounds))
    rows = benchmark.run_benchmark(str(stories_gguf), ["float32", "int8"], sentences=4, rounds=3, device="cpu")
    assert calls == ["float32", "int8"] * 3
    assert [(r.dtype, r.seconds, r.bound_tflops, r.bound_rows) for r in rows] == [
        ("float32", 1.0, 0.2, 512), ("int8", 2.0, 0.3, 2048)]
    assert rows[0].sentences_per_s == 4.0 and rows[1].sentences_per_s == 2.0


def test_int8_on_another_device_is_refused_before_any_dtype_runs(stories_gguf, monkeypatch):
    from metaeol import benchmark

    monkeypatch.setattr(benchmark, "MetaEOL", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ValueError, match="int8 runs on CPU only, not on meta"):
        benchmark.run_benchmark(str(stories_gguf), ["float32", "int8"], sentences=4, device="meta")


def test_bench_rounds_option(stories_gguf):
    result = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "-n", "4", "--bound-seconds", "0.1",
                                       "--rounds", "2", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rounds"] == 2
    bad = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "--rounds", "0"])
    assert bad.exit_code == 2 and "--rounds" in bad.output


def test_bench_times_each_pass_size_with_every_dtype(stories_gguf):
    """One row per dtype and pass size; vectors do not depend on the pass size."""
    result = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "-n", "8", "--bound-seconds", "0.1",
                                       "--dtype", "float32,int8", "--pass-tokens", "32,256", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert [(r["dtype"], r["max_batch_tokens"]) for r in rows] == [
        ("float32", 32), ("float32", 256), ("int8", 32), ("int8", 256)]
    assert rows[1]["min_cosine_to_first"] > 0.99999 and rows[2]["min_cosine_to_first"] > 0.998
    table = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "-n", "4", "--bound-seconds", "0.1"])
    assert "pass tok" in table.output and "\nfloat32        512 " in table.output  # the CPU default
    for bad in ("0,512", "512,512", "a"):
        refused = CliRunner().invoke(main, ["bench", "-m", str(stories_gguf), "--pass-tokens", bad])
        assert refused.exit_code == 2 and "--pass-tokens" in refused.output and "distinct whole numbers" in refused.output
