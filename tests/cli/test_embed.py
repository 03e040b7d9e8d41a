"""`metaeol embed`: formats, bad rows, resumable chunks."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from metaeol.cli import main
from metaeol.embed_job import run_embed_job
from metaeol.readers import InputError

TEXTS = ["A man plays a guitar.", "Someone plays music", "", "The cat sat on the mat.", "Dogs bark"]


@pytest.fixture()
def txt(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_txt_to_npy_matches_the_library(stories, stories_gguf, txt, tmp_path):
    out = tmp_path / "out.npy"
    result = run(["embed", str(txt), "-o", str(out), "-m", str(stories_gguf), "--chunk-size", "2"])
    assert result.exit_code == 0, result.output
    got = np.load(out)
    assert got.shape == (5, 64)
    assert np.allclose(got, stories.encode(TEXTS), atol=1e-5)
    assert not (tmp_path / "out.npy.parts").exists()


def test_jsonl_with_bad_rows_to_parquet(stories, stories_gguf, tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": "Hello there."}), "{not json", json.dumps({"text": None}),
             json.dumps({"text": 7}), json.dumps({"text": "Bye."})]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.parquet"
    result = run(["embed", str(src), "-o", str(out), "-m", str(stories_gguf), "--chunk-size", "2"])
    assert result.exit_code == 0, result.output
    assert "3 rows were not text" in result.output
    table = pq.read_table(out)
    assert table.column("row_id").to_pylist() == [0, 1, 2, 3, 4]
    vectors = table.column("embedding").to_pylist()
    assert [v is None for v in vectors] == [False, True, True, True, False]
    assert np.allclose(np.array([vectors[0], vectors[4]]), stories.encode(["Hello there.", "Bye."]), atol=1e-5)
    errors = [json.loads(l) for l in (tmp_path / "out.parquet.errors.jsonl").read_text().splitlines()]
    assert [e["row"] for e in errors] == [1, 2, 3]
    assert "invalid JSON" in errors[0]["error"]


def test_csv_and_parquet_inputs_with_named_column(stories, stories_gguf, tmp_path):
    csv_path = tmp_path / "in.csv"
    csv_path.write_text('id,sentence\n1,"A, quoted ""text"""\n2,plain\n')
    pq.write_table(pa.table({"sentence": ['A, quoted "text"', "plain"]}), tmp_path / "in.parquet")
    outs = []
    for name in ("in.csv", "in.parquet"):
        out = tmp_path / f"{name}.npy"
        result = run(["embed", str(tmp_path / name), "-o", str(out), "-m", str(stories_gguf), "-c", "sentence"])
        assert result.exit_code == 0, result.output
        outs.append(np.load(out))
    assert np.allclose(outs[0], outs[1], atol=1e-6)
    result = run(["embed", str(csv_path), "-o", str(tmp_path / "x.npy"), "-m", str(stories_gguf), "-c", "nope"])
    assert result.exit_code == 1 and "no column 'nope'" in result.output


def test_clear_errors(stories_gguf, txt, tmp_path):
    cases = [
        (["embed", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o.npy"), "-m", str(stories_gguf)], "no such file"),
        (["embed", str(txt), "-o", str(tmp_path / "o.csv"), "-m", str(stories_gguf)], "unsupported output type"),
        (["embed", str(txt), "-o", str(tmp_path / "o.npy"), "-m", str(tmp_path / "nope.gguf")], "does not exist"),
        (["embed", str(txt), "-o", str(tmp_path / "o.npy"), "-m", str(stories_gguf), "-p", "nope"], "unknown prompt set"),
        (["embed", str(txt), "-o", str(tmp_path / "o.npy"), "-m", str(stories_gguf), "-l", "99"], "out of range"),
    ]
    for args, message in cases:
        result = run(args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    result = run(["embed", str(latin), "-o", str(tmp_path / "l.npy"), "-m", str(stories_gguf)])
    assert result.exit_code == 1 and "not valid UTF-8" in result.output


def test_interrupted_job_resumes_after_the_last_finished_chunk(stories, txt, tmp_path):
    out = tmp_path / "out.npy"
    seen = []

    def stop_after_two(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_embed_job(stories, txt, out, chunk_size=2, on_chunk=stop_after_two)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "out.npy.parts").glob("part-*.npy")) == ["part-000000.npy", "part-000001.npy"]
    report = run_embed_job(stories, txt, out, chunk_size=2)
    assert (report.chunks_resumed, report.chunks_done, report.rows) == (2, 1, 5)
    assert np.allclose(np.load(out), stories.encode(TEXTS), atol=1e-5)
    with pytest.raises(InputError, match="exists"):
        run_embed_job(stories, txt, out, chunk_size=2)


def test_resume_refuses_other_settings(stories, txt, tmp_path):
    out = tmp_path / "out.npy"
    with pytest.raises(KeyboardInterrupt):
        run_embed_job(stories, txt, out, chunk_size=2, on_chunk=lambda n: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(InputError, match="unfinished run with other input or settings"):
        run_embed_job(stories, txt, out, chunk_size=3)
    report = run_embed_job(stories, txt, out, chunk_size=3, overwrite=True)
    assert report.chunks_resumed == 0 and np.load(out).shape == (5, 64)


def test_killed_process_resumes_and_never_leaves_a_corrupt_output(stories, stories_gguf, tmp_path):
    src = tmp_path / "big.txt"
    src.write_text("\n".join(f"Sentence number {i} is here." for i in range(60)) + "\n")
    out = tmp_path / "big.npy"
    cmd = [sys.executable, "-m", "metaeol.cli", "embed", str(src), "-o", str(out), "-m", str(stories_gguf),
           "--chunk-size", "4", "-b", "1", "--dtype", "float32"]  # a subprocess: the exact dtype on any device
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "big.npy.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.npy"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if out.exists():  # it finished before the kill: nothing to resume, but the file must be whole
        pytest.skip("run finished before it could be killed")
    finished = len(list(parts.glob("part-*.npy")))
    assert finished >= 2 and not out.exists()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{finished} resumed" in result.stderr
    expected = stories.encode([f"Sentence number {i} is here." for i in range(60)])
    assert np.allclose(np.load(out), expected, atol=1e-5)


def test_several_layers_give_one_embedding_per_layer(stories, stories_gguf, txt, tmp_path):
    out = tmp_path / "layers.npy"
    result = run(["embed", str(txt), "-o", str(out), "-m", str(stories_gguf), "-l", "2,-1"])
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (5, 2, 64)


def test_a_lone_surrogate_is_a_bad_row(stories, stories_gguf, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Hello there."}\n{"text": "ab\\ud800c"}\n{"text": "Bye."}\n')  # valid JSON
    out = tmp_path / "out.parquet"
    result = run(["embed", str(src), "-o", str(out), "-m", str(stories_gguf)])
    assert result.exit_code == 0, result.output
    assert "1 rows were not text" in result.output
    table = pq.read_table(out)
    assert [v is None for v in table.column("embedding").to_pylist()] == [False, True, False]
    reason = "column 'text' holds a lone surrogate '\\ud800' at character 2, not valid Unicode text"
    assert table.column("error").to_pylist() == [None, reason, None]
    assert [json.loads(l) for l in (tmp_path / "out.parquet.errors.jsonl").read_text().splitlines()] == [
        {"row": 1, "error": reason}]
    good = np.array([v for v in table.column("embedding").to_pylist() if v is not None])
    assert np.allclose(good, stories.encode(["Hello there.", "Bye."]), atol=1e-5)


def test_a_non_finite_embedding_is_an_error_for_its_row(overflowing_folder, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Hello there.\nan ~ overflows\nBye.\n~\n")
    reason = "the embedding is not finite (NaN or inf): the model or a booster setting overflowed"
    for name, store in (("out.npy", []), ("out.parquet", ["--store", str(tmp_path / "v.db")])):
        out = tmp_path / name
        result = run(["embed", str(src), "-o", str(out), "-m", str(overflowing_folder), "--chunk-size", "3", *store])
        assert result.exit_code == 0, result.output
        assert f"2 rows gave non-finite embeddings (NaN/inf): NaN/null embeddings, listed in {out}.errors.jsonl" \
            in result.output and "were not text" not in result.output
        errors = [json.loads(l) for l in (tmp_path / f"{name}.errors.jsonl").read_text().splitlines()]
        assert errors == [{"row": 1, "error": reason}, {"row": 3, "error": reason}]
        if name == "out.npy":
            vectors = np.load(out)
            assert np.isnan(vectors[[1, 3]]).all() and np.isfinite(vectors[[0, 2]]).all()
        else:
            table = pq.read_table(out)
            assert [v is None for v in table.column("embedding").to_pylist()] == [False, True, False, True]
            assert table.column("error").to_pylist() == [None, reason, None, reason]
            from metaeol.store import VectorStore  # through a store too, and the NaN rows were not stored

            (model,) = VectorStore(tmp_path / "v.db").stats()["models"]
            assert model["sentences"] == 2


def test_pass_tokens_sets_the_engine_pass_and_leaves_the_vectors(stories, stories_gguf, txt, tmp_path, monkeypatch):
    embed_command = importlib.import_module("metaeol.cli.embed")  # the module: the package's `embed` is the command
    built = []
    make = embed_command.make_encoder
    monkeypatch.setattr(embed_command, "make_encoder", lambda options, **kw: built.append(make(options, **kw)) or built[-1])
    out = tmp_path / "out.npy"
    result = run(["embed", str(txt), "-o", str(out), "-m", str(stories_gguf), "--pass-tokens", "16"])
    assert result.exit_code == 0, result.output
    assert built[0].max_batch_tokens == 16 and stories.max_batch_tokens == 512
    assert np.allclose(np.load(out), stories.encode(TEXTS), atol=1e-5)
    bad = run(["embed", str(txt), "-o", str(out), "-m", str(stories_gguf), "--pass-tokens", "0"])
    assert bad.exit_code == 2 and "--pass-tokens" in bad.output
