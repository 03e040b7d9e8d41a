"""metaeol.ray on a real local Ray cluster (2 CPUs, two actors, stories260K): exactly once, equal to
single-process encode, resumable after the driver is killed, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from _bytes import flip_last_byte  # noqa: E402
from _embed_checks import HOLD, one_line_error  # noqa: E402
from metaeol.cli import main  # noqa: E402
from metaeol.ray import embed_dataset, run_ray_embed_job  # noqa: E402
from metaeol.readers import InputError  # noqa: E402
from metaeol.vector_arrays import EMBEDDING_TYPE  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOPICS = ["a guitar", "the rain", "a red car", "old books", "the sea", "fresh bread", "a quiet dog", "the moon"]
TEXTS = [f"Sentence {i} is about {TOPICS[i % len(TOPICS)]}." for i in range(24)] + ["", "x", 'He said "hi"?']
SHARD = 3


@pytest.fixture(scope="module")
def cluster():
    """One local two-CPU cluster shared by the module (starting Ray takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_embed_dataset_every_row_once_equal_to_encode(cluster, stories, stories_gguf, tmp_path):
    items = [{"row_id": i, "text": t} for i, t in enumerate(TEXTS)] + [{"row_id": len(TEXTS), "text": None}]
    ds = ray.data.from_items(items, override_num_blocks=4)
    embed_dataset(ds, model=str(stories_gguf), num_actors=2, batch_size=5, dtype="float32").write_parquet(str(tmp_path / "out"))

    files = sorted((tmp_path / "out").glob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files).sort_by("row_id")
    assert table.column("row_id").to_pylist() == list(range(len(items)))  # every row exactly once
    assert table.schema.field("embedding").type == EMBEDDING_TYPE  # readable by every pyarrow (tests/test_vector_arrays.py)
    assert table.column("text_sha256").to_pylist() == [sha(t) for t in TEXTS] + [None]
    vectors = table.column("embedding").to_pylist()
    assert vectors[-1] is None and "missing or null" in table.column("error")[-1].as_py()
    assert table.column("error").null_count == len(TEXTS)
    got = np.array(vectors[:-1], dtype=np.float32)
    assert cosines(got, stories.encode(TEXTS)).min() >= 0.99999
    config = json.loads(pq.read_schema(files[0]).metadata[b"metaeol"])
    assert config["encoder"]["model"] == stories.describe()["model"]
    assert config["embedding_shape"] == [stories.embedding_dim]


def test_embed_dataset_rejects_bad_input(cluster, stories_gguf):
    model = str(stories_gguf)
    with pytest.raises(InputError, match="no column 'text'"):
        embed_dataset(ray.data.from_items([{"sentence": "a"}]), model=model)
    with pytest.raises(InputError, match="column 'text' holds int64, not text"):
        embed_dataset(ray.data.from_items([{"text": 3}]), model=model)
    with pytest.raises(InputError, match="empty"):
        embed_dataset(ray.data.from_items([]), model=model)
    with pytest.raises(InputError, match="output column"):
        embed_dataset(ray.data.from_items([{"text": "a", "embedding": 1}]), model=model)


def write_input(path: Path) -> list:
    """A jsonl file of TEXTS with three bad rows mixed in; returns each row's text (None if bad)."""
    lines = [json.dumps({"text": t}) for t in TEXTS]
    lines[4:4] = ["{broken", json.dumps({"text": None}), json.dumps({"text": 7})]
    path.write_text("\n".join(lines) + "\n")
    return TEXTS[:4] + [None] * 3 + TEXTS[4:]


def test_a_shard_half_written_by_a_dying_actor_is_removed_at_the_end(cluster, stories_gguf, tmp_path, monkeypatch):
    # A killed driver's actors can outlive it for a moment: one that dies mid-write after the
    # resumed job started leaves a partial file the start-of-job cleanup no longer sees.
    from metaeol.ray import job

    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_input(src)
    run_shards = job._run_shards

    def run_while_a_straggler_writes(*args, **kwargs):
        failed = run_shards(*args, **kwargs)
        (out / ".shard-000000.parquet.0123abcd.tmp").write_bytes(b"PAR1 half a shard")
        return failed

    monkeypatch.setattr(job, "_run_shards", run_while_a_straggler_writes)
    report = run_ray_embed_job(src, out, model=str(stories_gguf), shard_size=SHARD * 4, num_actors=2, dtype="float32")
    assert report.shards_done == report.shards
    assert not list(out.glob(".*tmp"))


KILL_AFTER_TWO_SHARDS = """
import os, signal, sys
from metaeol.ray import run_ray_embed_job

done = []
def on_shard(rows):
    done.append(rows)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

run_ray_embed_job(sys.argv[1], sys.argv[2], model=sys.argv[3], shard_size={shard}, num_actors=2,
                  address=sys.argv[4], on_shard=on_shard, dtype="float32", layer=-1, encode_batch_size=32)
"""


def test_file_job_killed_and_resumed_equals_uninterrupted(cluster, stories, stories_gguf, tmp_path):
    src = tmp_path / "in.jsonl"
    rows = write_input(src)
    n_shards = -(-len(rows) // SHARD)
    model = str(stories_gguf)

    ref = run_ray_embed_job(src, tmp_path / "ref", model=model, shard_size=SHARD, num_actors=2, dtype="float32")
    assert (ref.rows, ref.shards, ref.shards_done, ref.bad_rows) == (len(rows), n_shards, n_shards, 3)
    expected = pq.read_table(tmp_path / "ref")
    assert expected.column("row_id").to_pylist() == list(range(len(rows)))
    assert expected.column("text_sha256").to_pylist() == [sha(t) if t is not None else None for t in rows]
    errors = expected.column("error").to_pylist()
    assert [e is not None for e in errors] == [t is None for t in rows]
    assert "invalid JSON" in errors[4] and "holds int" in errors[6]
    good = [i for i, t in enumerate(rows) if t is not None]
    vectors = expected.column("embedding").to_pylist()
    assert all(vectors[i] is None for i, t in enumerate(rows) if t is None)
    got = np.array([vectors[i] for i in good], dtype=np.float32)
    assert cosines(got, stories.encode([rows[i] for i in good])).min() >= 0.99999

    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_AFTER_TWO_SHARDS.format(shard=SHARD)), str(src), str(out), model,
         cluster],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*.parquet")}
    assert 2 <= len(finished) < n_shards
    assert json.loads((out / "_metaeol.json").read_text())["status"] == "running"

    # Resume through the CLI (same settings spelled as options): the finished shards are kept as they are.
    result = CliRunner().invoke(main, ["embed", "--ray", "--num-actors", "2", "--chunk-size", str(SHARD),
                                       "-m", model, "--dtype", "float32", str(src), str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    resumed = int(result.output.split(" shards computed, ")[1].split(" resumed")[0])
    assert len(finished) <= resumed < n_shards
    assert "3 rows were not text" in result.output
    assert all(((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) == stat
               for name, stat in finished.items())
    assert not list(out.glob(".*tmp"))

    table = pq.read_table(out)
    for column in ("row_id", "text_sha256", "error"):
        assert table.column(column).equals(expected.column(column))
    np.testing.assert_allclose(np.array([v for v in table.column("embedding").to_pylist() if v is not None]),
                               got, rtol=1e-5, atol=1e-6)
    assert json.loads((out / "_metaeol.json").read_text()) == json.loads((tmp_path / "ref" / "_metaeol.json").read_text())
    with pytest.raises(InputError, match="other settings; pass --overwrite"):
        run_ray_embed_job(src, out, model=model, shard_size=SHARD, normalize=True)


def test_file_job_bad_input(cluster, stories_gguf, tmp_path):
    model = str(stories_gguf)
    (tmp_path / "in.csv").write_text("id,sentence\n1,hello\n")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "nokey.jsonl").write_text('{"sentence": "a"}\n')
    cases = [
        ("in.csv", "no column 'text'"),
        ("ints.parquet", "column 'text' holds int64, not text"),
        ("empty.jsonl", "no rows to embed"),
        ("nokey.jsonl", "the first record has no text under 'text'"),
    ]
    for name, message in cases:
        result = CliRunner().invoke(main, ["embed", "--ray", "-m", model, str(tmp_path / name), str(tmp_path / "o")])
        assert result.exit_code == 1 and message in result.output, (name, result.output)
    assert not (tmp_path / "o").exists()

    missing = tmp_path / "nope" / "model.gguf"  # found missing by the actors, which load the model
    result = CliRunner().invoke(main, ["embed", "--ray", "-m", str(missing), "-c", "sentence",
                                       str(tmp_path / "in.csv"), str(tmp_path / "o")])
    # One line of ours (Ray itself streams the failed actor's log to the driver before it).
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: embedding on Ray failed (ModelLoadError: model path '{missing}' does not exist); "
                      "the 0 finished shards are kept: fix the cause and rerun the same command to resume"]

    (tmp_path / "notours").mkdir()
    (tmp_path / "notours" / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="not empty and has no _metaeol.json"):
        run_ray_embed_job(tmp_path / "in.csv", tmp_path / "notours", column="sentence", model=model)
    assert (tmp_path / "notours" / "keep.txt").read_text() == "user data"

    result = CliRunner().invoke(main, ["embed", "--num-actors", "2", str(tmp_path / "in.csv"), "-o", "x.npy"])
    assert result.exit_code == 2 and "--num-actors only apply with --ray" in result.output


def test_file_job_row_errors_lock_and_final_step(cluster, overflowing_folder, tmp_path, monkeypatch):
    from metaeol.finite import NOT_FINITE
    from metaeol.ray import job

    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    texts = ["Hello there.", "an ~ overflows", None, "Bye.", "~", "x"]
    src.write_text("".join(json.dumps({"text": t}) + "\n" if t else '{"text": "ab\\ud800c"}\n' for t in texts))
    cmd = ["embed", "--ray", "--chunk-size", "2", "-m", str(overflowing_folder), str(src), str(out)]
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 0, result.output
    assert "1 rows were not text" in result.output
    assert "2 rows gave non-finite embeddings (NaN/inf): null embeddings, with an 'error'" in result.output
    table = pq.read_table(out)
    surrogate = "column 'text' holds a lone surrogate '\\ud800' at character 2, not valid Unicode text"
    assert table.column("error").to_pylist() == [None, NOT_FINITE, surrogate, None, NOT_FINITE, None]
    assert [v is None for v in table.column("embedding").to_pylist()] == [False, True, True, False, True, False]
    assert table.column("text_sha256").to_pylist() == [sha(t) if t else None for t in texts]
    manifest = json.loads((out / "_metaeol.json").read_text())
    assert (manifest["status"], manifest["bad_rows"], manifest["nonfinite_rows"]) == ("complete", 1, 2)
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # One run per output directory: a second one is refused while the first holds it, even with --overwrite.
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--overwrite"]):
            one_line_error(CliRunner().invoke(main, cmd + extra), f"is being written by another run (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == files

    # The final step refuses shard files it did not plan (another run's), naming them.
    (out / "shard-000009.parquet").write_bytes((out / "shard-000000.parquet").read_bytes())
    one_line_error(CliRunner().invoke(main, cmd), "holds shard files this job did not plan (shard-000009.parquet)")
    (out / "shard-000009.parquet").unlink()

    # A failing final step is one line, and the finished shards are kept for the rerun.
    def broken(output_dir, manifest):
        raise KeyError("encoder")

    with monkeypatch.context() as patch:
        patch.setattr(job, "_write_manifest", broken)
        one_line_error(CliRunner().invoke(main, cmd), f"the final step of {out} failed (KeyError: 'encoder'); "
                       "its 3 finished shards are kept: rerun the same command to finish")
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 0 and "(0 shards computed, 3 resumed)" in result.output, result.output
    assert pq.read_table(out).equals(table)


def test_file_job_input_edited_during_the_run(cluster, stories, stories_gguf, tmp_path, monkeypatch):
    from metaeol.ray import job

    texts = [f"Row {i} of the file." for i in range(8)]
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    original = src.read_bytes()
    plan_input = job.plan_input

    def plan_then_edit(*args):  # the file is edited (same size) once the job has planned it
        plan = plan_input(*args)
        src.write_bytes(original.replace(b"Row 5", b"Row 9"))
        return plan

    cmd = ["embed", "--ray", "--chunk-size", "2", "-m", str(stories_gguf), "--dtype", "float32", str(src), str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(job, "plan_input", plan_then_edit)
        one_line_error(CliRunner().invoke(main, cmd), "in.jsonl changed since the job was planned: rows 4-5 (shard 2) "
                       "are not the rows it planned on; 1 shard(s) not written, the 3 finished are kept")
    assert sorted(p.name for p in out.glob("shard-*")) == [f"shard-00000{i}.parquet" for i in (0, 1, 3)]
    assert json.loads((out / "_metaeol.json").read_text())["status"] == "running"
    src.write_bytes(original)  # restored: the rerun computes only the missing shard
    result = CliRunner().invoke(main, cmd)
    assert result.exit_code == 0 and "(1 shards computed, 3 resumed)" in result.output, result.output
    table = pq.read_table(out)
    assert table.column("text_sha256").to_pylist() == [sha(t) for t in texts]
    assert cosines(np.array(table.column("embedding").to_pylist()), stories.encode(texts)).min() >= 0.99999


def test_a_rerun_with_replaced_weights_or_another_placeholder_is_not_a_resume(cluster, stories_gguf, tmp_path):
    """The job key reads what the settings record reads: local weights changed in place (same path)
    or a placeholder vector of the same shape are other settings, never a silent "resume"."""
    import shutil

    from metaeol.boosters import TokenPrepending

    model = tmp_path / "model.gguf"
    shutil.copy(stories_gguf, model)
    src, out = tmp_path / "in.txt", tmp_path / "out"
    src.write_text("one sentence\nanother one\n")
    vector = np.zeros(64, dtype=np.float32)
    tp = TokenPrepending(1, 3, placeholder=vector)
    run_ray_embed_job(src, out, model=str(model), shard_size=1, token_prepending=tp)
    again = run_ray_embed_job(src, out, model=str(model), shard_size=1, token_prepending=tp)
    assert again.shards_resumed == 2  # the same settings resume
    other = vector.copy()
    other[-1] = 1.0
    with pytest.raises(InputError, match="other settings; pass --overwrite"):
        run_ray_embed_job(src, out, model=str(model), shard_size=1, token_prepending=TokenPrepending(1, 3, placeholder=other))
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: the same weights
    assert run_ray_embed_job(src, out, model=str(model), shard_size=1, token_prepending=tp).shards_resumed == 2
    flip_last_byte(model)  # the file's weights changed in place (its last tensor's last byte)
    with pytest.raises(InputError, match="other settings; pass --overwrite"):
        run_ray_embed_job(src, out, model=str(model), shard_size=1, token_prepending=tp)
