"""`metaeol embed` under concurrent and interrupted runs, edited inputs and awkward files."""

import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tqdm.auto
from click.testing import CliRunner

from _embed_checks import BOM_INPUTS, HOLD, one_line_error
from metaeol import readers
from metaeol.cli import main
from metaeol.embed_job import run_embed_job
from metaeol.readers import InputError, fingerprint, read_rows

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["A man plays a guitar.", "Someone plays music", "The cat sat on the mat.", "Dogs bark", "x"]


def cli_env():
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def embed_cmd(src, out, model, *extra):
    """``metaeol embed`` in a subprocess, in the exact dtype on any device (see conftest)."""
    return [sys.executable, "-m", "metaeol.cli", "embed", str(src), "-o", str(out), "-m", str(model),
            "--dtype", "float32", *extra]


# -- 1. one run at a time per output ----------------------------------------------------------


def test_a_concurrent_run_is_refused_and_a_killed_runs_lock_is_taken_over(stories, stories_gguf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out, lock = tmp_path / "out.npy", tmp_path / "out.npy.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert json.loads(lock.read_text())["pid"] == holder.pid
        cmd = embed_cmd(src, out, stories_gguf)
        for extra in ([], ["--overwrite", "--normalize"]):  # neither may write while another run holds the output
            refused = subprocess.run(cmd + extra, env=cli_env(), capture_output=True, text=True, timeout=300)
            assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
            assert f"is being written by another run (pid {holder.pid} on " in refused.stderr
            assert "started 20" in refused.stderr and not out.exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert lock.exists()  # a killed run leaves its lock file behind
    rerun = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"taking over the lock of a run that ended without releasing it (pid {holder.pid}" in rerun.stderr
    assert not lock.exists()
    assert np.allclose(np.load(out), stories.encode(TEXTS), atol=1e-5)


def test_the_lock_is_per_output_and_reentrant_only_in_its_own_thread(tmp_path):
    import threading

    from metaeol.output_lock import OutputLocked, output_lock

    out = tmp_path / "o.npy"
    errors = []
    with output_lock(out), output_lock(out), output_lock(tmp_path / "other.npy"):
        thread = threading.Thread(target=lambda: errors.append(_try_lock(out)))
        thread.start()
        thread.join()
    assert isinstance(errors[0], OutputLocked) and "another thread" in str(errors[0])
    assert not (tmp_path / "o.npy.lock").exists()
    with output_lock(out):  # released: can be taken again
        assert (tmp_path / "o.npy.lock").exists()


def _try_lock(out):
    from metaeol.output_lock import output_lock

    try:
        with output_lock(out):
            return None
    except Exception as err:  # noqa: BLE001 - returned to the test thread
        return err


# -- 2. resume keyed on content -----------------------------------------------------------------


def test_same_size_edit_with_the_same_mtime_is_not_resumed(stories, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.npy"
    with pytest.raises(KeyboardInterrupt):
        run_embed_job(stories, src, out, chunk_size=2, on_chunk=lambda n: (_ for _ in ()).throw(KeyboardInterrupt))
    stat = src.stat()
    edited = "\n".join(["A man tunes a guitar.", *TEXTS[1:]]) + "\n"  # same length as before
    src.write_text(edited)
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert src.stat().st_size == stat.st_size
    with pytest.raises(InputError, match=r"changed: input content\); rerun with the same input"):
        run_embed_job(stories, src, out, chunk_size=2)
    run_embed_job(stories, src, out, chunk_size=2, overwrite=True)
    assert np.allclose(np.load(out), stories.encode(edited.splitlines()), atol=1e-5)


# -- 3. byte-order marks ------------------------------------------------------------------------


@pytest.mark.parametrize("name, body", BOM_INPUTS)
def test_a_utf8_bom_is_not_part_of_the_first_row(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert list(read_rows(path, "text")) == [(0, "Hello there."), (1, "Bye.")]


def test_a_bom_txt_embeds_like_the_plain_text(stories, tmp_path):
    src = tmp_path / "bom.txt"
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(TEXTS).encode())
    out = tmp_path / "bom.npy"
    run_embed_job(stories, src, out)
    assert np.allclose(np.load(out), stories.encode(TEXTS), atol=1e-5)


# -- 4. the whole input is checked before anything is computed ----------------------------------


def test_invalid_utf8_is_reported_up_front_with_line_and_byte(stories, tmp_path):
    lines = [f"line {i}" for i in range(1, 26)]
    good = "".join(line + "\n" for line in lines).encode()
    src = tmp_path / "in.txt"
    src.write_bytes(good + b"caf\xe9 au lait\n")
    out = tmp_path / "out.npy"
    calls = []
    with pytest.raises(InputError, match=rf"invalid continuation byte at line 26 \(byte {len(good) + 3}\)"):
        run_embed_job(stories, src, out, chunk_size=2, on_chunk=calls.append)
    assert calls == [] and not (tmp_path / "out.npy.parts").exists() and not out.exists()


def test_the_check_is_exact_across_read_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_BLOCK", 5)  # multi-byte characters straddle the blocks
    path = tmp_path / "in.txt"
    body = "héllo wörld\n€uro ☃\n".encode()
    path.write_bytes(body)
    assert fingerprint(path) == __import__("hashlib").sha256(body).hexdigest()
    path.write_bytes(body + "ab€".encode()[:-1])  # the file ends inside a character
    with pytest.raises(InputError, match=rf"unexpected end of data at line 3 \(byte {len(body) + 2}\)"):
        fingerprint(path)
    path.write_bytes(body + b"ok\n\x80")
    with pytest.raises(InputError, match=rf"invalid start byte at line 4 \(byte {len(body) + 3}\)"):
        fingerprint(path)


def test_binary_and_utf16_files_are_refused_with_a_reason(tmp_path):
    nul = tmp_path / "nul.jsonl"
    head = b'{"text": "a"}\n{"text": "b'
    nul.write_bytes(head + b'\x00"}\n')
    with pytest.raises(InputError, match=rf"a NUL byte \(binary data\?\) at line 2 \(byte {len(head)}\)"):
        fingerprint(nul)
    utf16 = tmp_path / "u16.txt"
    utf16.write_bytes("hello\n".encode("utf-16"))
    with pytest.raises(InputError, match="at line 1 \\(byte 0\\); the file looks like UTF-16"):
        fingerprint(utf16)


# -- 5. unwritable outputs are one-line errors --------------------------------------------------


def test_an_unwritable_output_is_a_one_line_error(stories_gguf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["embed", str(src), "-o", str(blocker / "out.npy"), "-m", str(stories_gguf)])
    one_line_error(result, f"{blocker} is a file, not a folder")


def _unwritable_folder(tmp_path):
    """A folder this process may not write into: a read-only folder of our own, or, when root
    (who writes anywhere chmod allows), a kernel-owned one such as /sys."""
    if os.name == "posix" and os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    for folder in (Path("/sys"), Path("/proc/sys")):
        try:
            (folder / "metaeol-probe").touch()
        except PermissionError:
            return folder
        except OSError:
            continue
    pytest.fail("no folder here refuses writes with a permission error")


def test_a_read_only_output_folder_is_a_one_line_error(stories_gguf, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    folder = _unwritable_folder(tmp_path)
    try:
        result = CliRunner().invoke(main, ["embed", str(src), "-o", str(folder / "o.npy"), "-m", str(stories_gguf)])
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o755)
    one_line_error(result, "Permission denied", str(folder))


# -- 6. the progress bar counts whole rows against the input's total ----------------------------


def test_progress_counts_whole_rows_of_a_known_total(stories_gguf, tmp_path, monkeypatch):
    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    result = CliRunner().invoke(main, ["embed", str(src), "-o", str(tmp_path / "o.npy"), "-m", str(stories_gguf),
                                       "--chunk-size", "2"])
    assert result.exit_code == 0, result.output
    (bar,) = [b for b in bars if b.desc == "Embedding"]
    assert (bar.n, bar.total) == (5, 5) and isinstance(bar.n, int)
    assert " 5/5 " in bar.fp.getvalue().splitlines()[-1].split("\r")[-1]


# -- 7. an input edited during the run never ends in a wrong output ------------------------------


def test_an_edit_during_the_run_fails_it_and_a_restored_input_resumes(stories, tmp_path):
    texts = [f"Row {i} of the file." for i in range(6)]
    src = tmp_path / "in.jsonl"
    padding = " " * 5000  # each line outgrows a read buffer: the job reads the file as it is edited
    src.write_text("".join(json.dumps({"text": t}) + padding + "\n" for t in texts))
    original = src.read_bytes()
    out = tmp_path / "out.npy"

    def edit_after_the_first_chunk(rows):
        src.write_bytes(original.replace(b"Row 4", b"Row 9"))  # same size, a later chunk

    with pytest.raises(InputError, match=r"in.jsonl changed while the job was running: rows 4-5 are not the rows "
                                         r"it checked; the 2 chunks finished before are kept"):
        run_embed_job(stories, src, out, chunk_size=2, on_chunk=edit_after_the_first_chunk)
    assert not out.exists()
    parts = sorted(p.name for p in (tmp_path / "out.npy.parts").glob("part-*.npy"))
    assert parts == ["part-000000.npy", "part-000001.npy"]
    src.write_bytes(original)  # restored: the chunks made before the edit are resumed
    report = run_embed_job(stories, src, out, chunk_size=2)
    assert (report.chunks_resumed, report.chunks_done) == (2, 1)
    assert np.allclose(np.load(out), stories.encode(texts), atol=1e-5)


def test_an_edit_while_the_input_is_checked_is_refused(stories, tmp_path, monkeypatch):
    from metaeol import embed_job

    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")

    def fingerprint_then_edit(path):
        digest = fingerprint(path)
        src.write_text("a\nbc\n")
        return digest

    monkeypatch.setattr(embed_job, "fingerprint", fingerprint_then_edit)
    with pytest.raises(InputError, match="in.txt changed while it was being read; rerun once it no longer changes"):
        run_embed_job(stories, src, tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()


# -- 8. awkward inputs ---------------------------------------------------------------------------


def test_a_csv_field_longer_than_the_csv_modules_limit_is_embedded(stories, tmp_path):
    long_text = "word " * 40_000  # 200,000 characters: over the csv module's default 131,072
    src = tmp_path / "in.csv"
    src.write_text(f'id,text\n1,short\n2,"{long_text}"\n3,end\n')
    report = run_embed_job(stories, src, tmp_path / "out.npy")
    assert (report.rows, report.bad_rows, report.truncated) == (3, 0, 1)
    assert np.isfinite(np.load(tmp_path / "out.npy")).all()


def test_the_output_may_not_replace_the_input(stories, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a", "b"]}), src)
    before = src.read_bytes()
    with pytest.raises(InputError, match="data.parquet is the input; choose another output"):
        run_embed_job(stories, src, tmp_path / "." / "data.parquet", overwrite=True)
    assert src.read_bytes() == before


@pytest.mark.parametrize("options, message", [
    ({"chunk_size": "10"}, "chunk_size must be a whole number of at least 1, got '10'"),
    ({"chunk_size": 2.5}, "chunk_size must be a whole number of at least 1, got 2.5"),
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1, got 0"),
    ({"chunk_size": True}, "chunk_size must be a whole number of at least 1, got True"),
])
def test_wrong_types_are_clear_errors(stories, tmp_path, options, message):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    with pytest.raises(InputError, match=re.escape(message)):
        run_embed_job(stories, src, tmp_path / "out.npy", **options)
    from metaeol.ray.shards import plan_input

    with pytest.raises(InputError, match="shard_size must be a whole number of at least 1, got '10'"):
        plan_input(src, "text", "10")


@pytest.mark.parametrize("name", ["out.npy", "out.parquet"])
def test_a_kill_in_the_final_step_never_leaves_an_output_without_its_errors(stories, tmp_path, monkeypatch, name):
    from metaeol import embed_job

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a"}\n{"text": null}\n{"text": "b"}\n')
    out, errors = tmp_path / name, tmp_path / f"{name}.errors.jsonl"
    replace = os.replace

    def killed_after_the_first_final_file(source, target):
        replace(source, target)
        if Path(target) in (out, errors):
            raise KeyboardInterrupt

    monkeypatch.setattr(embed_job.os, "replace", killed_after_the_first_final_file)
    with pytest.raises(KeyboardInterrupt):
        run_embed_job(stories, src, out, chunk_size=2)
    monkeypatch.undo()
    assert not out.exists()  # the errors file lands first: an output is never without it
    report = run_embed_job(stories, src, out, chunk_size=2)  # the rerun finishes from the parts
    assert (report.chunks_resumed, report.bad_rows) == (2, 1)
    assert [json.loads(line)["row"] for line in errors.read_text().splitlines()] == [1]
