"""The per-template, per-layer vector store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from metaeol.cli import main
from metaeol.store import VectorStore, sentence_hash

REPO = Path(__file__).resolve().parents[1]
T_HASHES = [sentence_hash(f"template {i} {{s}}") for i in range(3)]
LAYERS = [-1, 0, 2, 5]


def _sents(n: int, prefix: str = "s") -> list[str]:
    return [sentence_hash(f"{prefix}{i}") for i in range(n)]


def _vecs(n: int, t: int = 3, l: int = 4, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, t, l, d)).astype(np.float32)


def test_sentence_hash_is_sha256_of_exact_text() -> None:
    assert sentence_hash("a") == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    assert sentence_hash("a ") != sentence_hash("a")


def test_round_trip_is_exact(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v.db")
    sents = _sents(50)
    v = _vecs(50)
    v[0, 0, 0, :3] = [1e30, -1e-30, np.float32(np.pi)]  # extremes survive bit for bit
    store.put("m@r:fp32", T_HASHES, LAYERS, sents, v)
    out, found = store.get("m@r:fp32", T_HASHES, LAYERS, sents)
    assert out.dtype == np.float32 and found.all()
    assert np.array_equal(out, v)
    # any order / subset / repetition of sentences, templates and layers
    out, found = store.get("m@r:fp32", T_HASHES[::-1], [5, -1], [sents[7], sents[3], sents[7]])
    assert found.all()
    assert np.array_equal(out, v[[7, 3, 7]][:, ::-1][:, :, [3, 0]])
    # a second handle on the same file reads the same
    assert np.array_equal(VectorStore(tmp_path / "v.db").get("m@r:fp32", T_HASHES, LAYERS, sents)[0], v)


def test_put_replaces_and_model_keys_are_separate(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v.db")
    sents = _sents(4)
    store.put("a", T_HASHES, LAYERS, sents, _vecs(4, seed=1))
    store.put("b", T_HASHES, LAYERS, sents, _vecs(4, seed=2))
    store.put("a", T_HASHES, LAYERS, sents[:2], _vecs(2, seed=3))
    a, _ = store.get("a", T_HASHES, LAYERS, sents)
    assert np.array_equal(a[:2], _vecs(2, seed=3)) and np.array_equal(a[2:], _vecs(4, seed=1)[2:])
    assert np.array_equal(store.get("b", T_HASHES, LAYERS, sents)[0], _vecs(4, seed=2))
    with pytest.raises(ValueError, match="16-d"):
        store.put("a", T_HASHES, LAYERS, sents, _vecs(4, d=8))
    with pytest.raises(ValueError, match="shape"):
        store.put("a", T_HASHES, LAYERS, sents, _vecs(3))


def test_missing_rows(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v.db")
    sents = _sents(6)
    v = _vecs(6)
    store.put("m", T_HASHES, LAYERS, sents[:4], v[:4])
    store.put("m", T_HASHES[:1], [7], sents[4:5], v[4:5, :1, :1])  # partial: one template x layer
    out, found = store.get("m", T_HASHES, LAYERS + [7], sents)
    assert found.tolist() == [False] * 6  # layer 7 exists only for sentence 4
    out, found = store.get("m", T_HASHES, LAYERS, sents)
    assert found.tolist() == [True] * 4 + [False, False]
    assert store.complete_templates("m", T_HASHES, LAYERS, sents).all(axis=1).tolist() == found.tolist()
    assert store.complete_templates("m", T_HASHES, [7], sents)[:, 0].tolist() == [False] * 4 + [True, False]
    assert store.complete_templates("m", T_HASHES, [7], sents)[:, 1:].sum() == 0
    assert not store.complete_templates("other", T_HASHES, LAYERS, sents).any()
    with_unknown = store.complete_templates("m", T_HASHES + [sentence_hash("nope")], LAYERS, sents)
    assert with_unknown[:, :3].tolist() == [[True] * 3] * 4 + [[False] * 3] * 2 and not with_unknown[:, 3].any()
    assert np.array_equal(out[:4], v[:4]) and not out[4:].any()
    out, present = store.get_detailed("m", T_HASHES, [7], sents)
    assert present[:, :, 0].tolist()[4] == [True, False, False] and present.sum() == 1
    assert np.array_equal(out[4, 0, 0], v[4, 0, 0])
    # unknown model / template / sentence: zeros, not found, no error
    out, found = store.get("other", T_HASHES, LAYERS, sents)
    assert out.shape[:3] == (6, 3, 4) and not found.any()
    out, found = store.get("m", [sentence_hash("nope")], LAYERS, sents)
    assert out.shape == (6, 1, 4, 16) and not found.any() and not out.any()
    out, found = store.get("m", T_HASHES, LAYERS, [])
    assert out.shape == (0, 3, 4, 16) and found.shape == (0,)


def test_float16_storage(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "h.db", storage_dtype="float16")
    sents = _sents(20)
    v = _vecs(20) * 10
    v[1, 2, 3, 4] = 1e6  # would overflow float16: that row is kept as float32
    store.put("m", T_HASHES, LAYERS, sents, v)
    out, found = store.get("m", T_HASHES, LAYERS, sents)
    assert found.all() and out.dtype == np.float32
    with np.errstate(over="ignore"):
        expected = v.astype(np.float16).astype(np.float32)
    expected[1, 2, 3] = v[1, 2, 3]
    assert np.array_equal(out, expected)
    assert np.isfinite(out).all()
    m = store.stats()["models"][0]
    assert m["float16_rows"] == m["rows"] - 1
    # half the bytes of float32 (plus the one float32 row)
    assert m["payload_bytes"] == (m["rows"] - 1) * 16 * 2 + 16 * 4
    # a float32 handle on the same file reads float16 rows too
    assert np.array_equal(VectorStore(tmp_path / "h.db").get("m", T_HASHES, LAYERS, sents)[0], expected)
    with pytest.raises(ValueError, match="storage_dtype"):
        VectorStore(tmp_path / "x.db", storage_dtype="bfloat16")


def test_exception_in_the_middle_of_a_put_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    store = VectorStore(path)
    sents = _sents(30)
    store.put("m", T_HASHES, LAYERS, sents[:10], _vecs(10, seed=1))
    # The database itself aborts the put half-way: rows for layer 5 of sentence 20 fail
    # after the rows before them were already inserted inside the transaction.
    bad = sents[20]
    with sqlite3.connect(path) as raw:
        raw.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON vectors WHEN NEW.layer = 5 AND "
            f"NEW.sentence_id = (SELECT id FROM sentences WHERE sha = '{bad}') "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    before = store.stats()["rows"]
    with pytest.raises(sqlite3.IntegrityError, match="injected"):
        store.put("m", T_HASHES, LAYERS, sents, _vecs(30, seed=2))
    assert store.stats()["rows"] == before
    out, found = store.get("m", T_HASHES, LAYERS, sents)
    assert found.tolist() == [True] * 10 + [False] * 20
    assert np.array_equal(out[:10], _vecs(10, seed=1))  # not half-replaced by seed 2
    # the store keeps working afterwards
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TRIGGER boom")
    store.put("m", T_HASHES, LAYERS, sents, _vecs(30, seed=2))
    assert store.get("m", T_HASHES, LAYERS, sents)[1].all()


def test_exception_from_python_mid_put_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = VectorStore(tmp_path / "v.db")
    sents = _sents(8)
    real = VectorStore._intern

    def failing_intern(cls, conn, table, shas):  # model row and templates are already written
        if table == "sentences":
            raise KeyboardInterrupt
        return real(conn, table, shas)

    monkeypatch.setattr(VectorStore, "_intern", classmethod(failing_intern))
    with pytest.raises(KeyboardInterrupt):
        store.put("m", T_HASHES, LAYERS, sents, _vecs(8))
    monkeypatch.undo()
    stats = store.stats()
    assert stats["rows"] == 0 and stats["models"] == []
    store.put("m", T_HASHES, LAYERS, sents, _vecs(8))
    assert store.get("m", T_HASHES, LAYERS, sents)[1].all()


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from metaeol.store import VectorStore, sentence_hash
    store = VectorStore(sys.argv[1])
    t = [sentence_hash("t%d" % i) for i in range(4)]
    layers = list(range(8))
    for k in range(1000):
        sents = [sentence_hash("%d-%d" % (k, i)) for i in range(400)]
        v = np.full((400, 4, 8, 256), float(k), np.float32)   # 13 MB per put
        print("begin", k, flush=True)
        store.put("m", t, layers, sents, v)
        print("done", k, flush=True)
    """
)


def test_killed_writer_leaves_store_valid_and_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        lines = []
        while True:  # let two puts land, then kill the third one while it is running
            line = proc.stdout.readline()
            assert line, "writer died"
            lines.append(line.split())
            if lines[-1] == ["begin", "2"]:
                break
        time.sleep(0.15)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert os.path.exists(str(path) + "-wal")  # killed with its log behind
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = VectorStore(path)
    t = [sentence_hash("t%d" % i) for i in range(4)]
    complete = 0
    for k in range(4):
        sents = [sentence_hash("%d-%d" % (k, i)) for i in range(400)]
        out, present = store.get_detailed("m", t, list(range(8)), sents)
        assert present.all() or not present.any(), f"put {k} half-written"
        if present.all():
            assert (out == k).all()
            complete += 1
    assert complete >= 2
    assert store.stats()["rows"] == complete * 400 * 4 * 8
    store.put("m", t, [0], [sentence_hash("after")], np.ones((1, 4, 1, 256), np.float32))  # still writable


def test_concurrent_readers_see_whole_puts(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    writer = VectorStore(path)
    shared = VectorStore(path)  # one handle used from several threads
    batches = [_sents(40, prefix=f"b{k}-") for k in range(12)]
    errors: list[BaseException] = []
    seen = {"reads": 0, "partial_batches": 0}
    stop = threading.Event()

    def read(store: VectorStore) -> None:
        try:
            while not stop.is_set():
                for k, sents in enumerate(batches):
                    out, present = store.get_detailed("m", T_HASHES, LAYERS, sents)
                    if present.any() and not present.all():
                        seen["partial_batches"] += 1
                    if present.all():
                        assert (out == k).all()
                    seen["reads"] += 1
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    readers = [threading.Thread(target=read, args=(s,)) for s in (VectorStore(path), shared, shared)]
    for r in readers:
        r.start()
    for k, sents in enumerate(batches):
        writer.put("m", T_HASHES, LAYERS, sents, np.full((40, 3, 4, 64), k, np.float32))
    stop.set()
    for r in readers:
        r.join(timeout=60)
    assert not errors, errors
    assert seen["partial_batches"] == 0 and seen["reads"] > 0
    assert all(writer.get("m", T_HASHES, LAYERS, s)[1].all() for s in batches)


_READER_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from metaeol.store import VectorStore, sentence_hash
    store = VectorStore(sys.argv[1])
    t = [sentence_hash("t")]
    reads = full = 0
    while True:
        done = store.get("m", t, [0], [sentence_hash("last")])[1].all()
        for k in range(10):
            out, present = store.get_detailed("m", t, [0, 1], [sentence_hash("%d-%d" % (k, i)) for i in range(50)])
            assert present.all() or not present.any(), "partial put visible"
            if present.all():
                assert (out == k).all()
                full += 1
            reads += 1
        if done:
            break
    print(reads, full)
    """
)


def test_reader_process_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    store = VectorStore(path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER_PROCESS, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )
    t = [sentence_hash("t")]
    for k in range(10):
        sents = [sentence_hash("%d-%d" % (k, i)) for i in range(50)]
        store.put("m", t, [0, 1], sents, np.full((50, 1, 2, 128), k, np.float32))
    store.put("m", t, [0], [sentence_hash("last")], np.zeros((1, 1, 1, 128), np.float32))
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    reads, full = map(int, out.split())
    assert reads >= 10 and full >= 10


def test_prune_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = VectorStore(tmp_path / "v.db")
    empty = store.size_bytes()
    assert empty > 0
    v = _vecs(200, d=256)
    old_time = time.time() - 10 * 86400
    monkeypatch.setattr(time, "time", lambda: old_time)
    store.put("old", T_HASHES, LAYERS, _sents(200), v)
    monkeypatch.undo()
    store.put("new", T_HASHES, LAYERS, _sents(200), v)
    store.put("new", T_HASHES, LAYERS, _sents(100, prefix="x"), v[:100])
    payload = 2 * v.nbytes + v[:100].nbytes
    full = store.size_bytes()
    assert payload < full < 1.5 * payload + 2**20
    stats = store.stats()
    assert stats["size_bytes"] == full and stats["rows"] == 500 * 12
    by_key = {m["model_key"]: m for m in stats["models"]}
    assert by_key["new"]["sentences"] == 300 and by_key["old"]["sentences"] == 200
    assert by_key["new"]["payload_bytes"] == v.nbytes + v[:100].nbytes
    assert by_key["old"]["templates"] == 3 and by_key["old"]["layers"] == 4 and by_key["old"]["dim"] == 256

    assert store.prune(older_than_days=5) == 200 * 12
    assert [m["model_key"] for m in store.stats()["models"]] == ["new"]
    assert store.get("new", T_HASHES, LAYERS, _sents(200))[1].all()
    assert store.size_bytes() < full * 0.75
    assert store.prune(model_key="nope") == 0
    assert store.prune(model_key="new", older_than_days=1) == 0
    assert store.prune(model_key="new") == 300 * 12
    assert store.stats()["models"] == [] and store.size_bytes() < full / 10
    with sqlite3.connect(store.path) as raw:  # orphans are gone too
        assert raw.execute("SELECT COUNT(*) FROM sentences").fetchone()[0] == 0


def test_cli_info_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    store = VectorStore(path)
    store.put("model-a@main:float32", T_HASHES, LAYERS, _sents(10), _vecs(10))
    store.put("model-b@main:float32", T_HASHES, LAYERS, _sents(10), _vecs(10))
    store.close()
    runner = CliRunner()
    res = runner.invoke(main, ["store", "info", "--path", str(path)])
    assert res.exit_code == 0, res.output
    assert "model-a@main:float32: 120 vectors" in res.output and "240 vectors" in res.output
    assert "no encoder reads these" not in res.output
    with VectorStore(path) as old:  # a key from before weights ids by content
        old.put("model-c@local|float32|pooling=last", T_HASHES, LAYERS, _sents(1), _vecs(1))
    res = runner.invoke(main, ["store", "info", "--path", str(path)])
    assert res.output.count("no encoder reads these") == 1
    res = runner.invoke(main, ["store", "prune", "--path", str(path), "--model", "model-c@local|float32|pooling=last"])
    assert res.exit_code == 0 and "removed 12 vectors" in res.output
    res = runner.invoke(main, ["store", "info", "--path", str(path), "--json"])
    assert res.exit_code == 0 and '"rows": 240' in res.output
    res = runner.invoke(main, ["store", "prune", "--path", str(path)])
    assert res.exit_code != 0 and "--all" in res.output
    res = runner.invoke(main, ["store", "prune", "--path", str(path), "--model", "model-a@main:float32"])
    assert res.exit_code == 0 and "removed 120 vectors" in res.output
    res = runner.invoke(main, ["store", "prune", "--path", str(path), "--all"])
    assert res.exit_code == 0 and "removed 120 vectors" in res.output
    res = runner.invoke(main, ["store", "info", "--path", str(tmp_path / "missing.db")])
    assert res.exit_code != 0 and "no store" in res.output


def test_adopt_rekeys_outdated_keys(tmp_path: Path) -> None:
    path, commit = tmp_path / "v.db", "a" * 40
    hub, local = f"org/m@{commit}|float32|pooling=last", "org/m@local|float32|pooling=last"
    today = f"org/m@{commit[:12]}|float32|pooling=last"
    with VectorStore(path) as store:
        store.put(hub, T_HASHES, LAYERS, _sents(4), _vecs(4, seed=1))
        store.put(today, T_HASHES, LAYERS, _sents(2), _vecs(2, seed=2))  # already under today's key: these win
        store.put(local, T_HASHES, LAYERS, _sents(1), _vecs(1))
    res = CliRunner().invoke(main, ["store", "adopt", "--path", str(path)])
    assert res.exit_code == 0, res.output
    assert f"{hub} -> {today}: {2 * 12} vectors" in res.output  # the two sentences both hold stay as they were
    assert f"kept {local}" in res.output  # local weights need --model
    with VectorStore(path) as store:
        assert [m["model_key"] for m in store.stats()["models"]] == [today, local]
        vectors, found = store.get(today, T_HASHES, LAYERS, _sents(4))
        assert found.all()
        np.testing.assert_array_equal(vectors[:2], _vecs(2, seed=2))
        np.testing.assert_array_equal(vectors[2:], _vecs(4, seed=1)[2:])
        store.put("other@" + "b" * 12 + "|float32", T_HASHES, LAYERS, _sents(1), _vecs(1, d=8))
        with pytest.raises(ValueError, match="16-d vectors"):
            store.rename_model(local, "other@" + "b" * 12 + "|float32")
    res = CliRunner().invoke(main, ["store", "adopt", "--path", str(path), "--model", str(tmp_path / "missing")])
    assert res.exit_code != 0 and "names no local weights" in res.output


def test_get_and_put_scale(tmp_path: Path) -> None:
    """10^5 rows of 576-d float32 (SmolLM2's width): put and get each well under a few seconds."""
    store = VectorStore(tmp_path / "v.db")
    n, t, layers, d = 1000, 10, list(range(10)), 576
    v = np.random.default_rng(0).standard_normal((n, t, len(layers), d)).astype(np.float32)
    sents, tmpls = _sents(n), _sents(t, prefix="t")
    start = time.perf_counter()
    store.put("m", tmpls, layers, sents, v)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    out, found = store.get("m", tmpls, layers, sents)
    get_s = time.perf_counter() - start
    assert found.all() and np.array_equal(out, v)
    assert put_s < 15 and get_s < 15, (put_s, get_s)
