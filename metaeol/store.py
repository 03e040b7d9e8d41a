"""A per-template, per-layer vector store on disk (SQLite).

One row holds the last-token vector of one sentence under one prompt template at one
layer, for one model::

    (model key, template sha256, layer index, sentence sha256) -> vector

The model key names everything that changes the vectors besides the template and the
sentence (model id, revision, dtype and the encoder settings, as :attr:`MetaEOL.cache_key` gives it).  Any
prompt subset, meta-task subset or layer is then an average over stored rows, so an
ablation needs one model pass.

Guarantees
----------
* Each :meth:`VectorStore.put` is one SQLite transaction: it lands entirely or not at
  all, also when the process is killed half-way (the write-ahead log is rolled back on
  the next open).
* The database runs in WAL mode: readers in other threads or processes see the last
  committed state and are never blocked by a writer.
* Vectors are stored as raw little-endian BLOBs, float32 by default or float16 on
  request; :meth:`VectorStore.get` always returns float32.  A float16 row that would
  overflow (|x| > 65504) is stored as float32 instead, so nothing turns into ``inf``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["VectorStore", "sentence_hash", "STORAGE_DTYPES"]

SCHEMA_VERSION = 1
STORAGE_DTYPES = {"float32": 0, "float16": 1}
_CODE_TO_DTYPE = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
PAGE_SIZE = 16384
WAL_LIMIT = 64 * 2**20  # bytes the write-ahead log is trimmed back to
_CHUNK = 500  # ids per IN (...) query; well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    dim INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    sha TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS sentences (
    id INTEGER PRIMARY KEY,
    sha TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS vectors (
    model_id INTEGER NOT NULL REFERENCES models(id),
    sentence_id INTEGER NOT NULL REFERENCES sentences(id),
    template_id INTEGER NOT NULL REFERENCES templates(id),
    layer INTEGER NOT NULL,
    dtype INTEGER NOT NULL,
    created REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS vectors_key
    ON vectors (model_id, sentence_id, template_id, layer);
CREATE INDEX IF NOT EXISTS vectors_created ON vectors (created);
"""


def sentence_hash(text: str) -> str:
    """sha256 (hex) of the UTF-8 text, exactly as given (no clean-up, no stripping)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock up front), COMMIT on success, ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _chunks(seq: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class VectorStore:
    """Per-template, per-layer last-token vectors in one SQLite file.

    Safe to share between threads (each thread gets its own connection) and between
    processes (WAL mode; writers queue on a lock with a generous timeout).
    """

    def __init__(self, path: str | Path, storage_dtype: str = "float32", timeout: float = 120.0) -> None:
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
        self.path = Path(path)
        self.storage_dtype = storage_dtype
        self.timeout = timeout
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        with conn:
            conn.executescript(_SCHEMA)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: store schema version {version}, this code reads {SCHEMA_VERSION}")

    # -- connections ---------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # never reuse a connection across fork
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
            # Large pages pack kilobyte-sized vector BLOBs with little slack (4 KiB pages
            # waste almost half the file on 2.3 KiB rows). Only takes effect on a new file.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is crash-safe in WAL mode (a killed process never corrupts the file;
            # only a power cut can lose the last commits).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's object dies)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- id lookups ----------------------------------------------------------------
    @staticmethod
    def _lookup(conn: sqlite3.Connection, table: str, shas: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(shas))
        for part in _chunks(unique):
            marks = ",".join("?" * len(part))
            found.update(conn.execute(f"SELECT sha, id FROM {table} WHERE sha IN ({marks})", part).fetchall())
        return found

    @classmethod
    def _intern(cls, conn: sqlite3.Connection, table: str, shas: Sequence[str]) -> dict[str, int]:
        conn.executemany(f"INSERT OR IGNORE INTO {table} (sha) VALUES (?)", ((s,) for s in dict.fromkeys(shas)))
        return cls._lookup(conn, table, shas)

    # -- reads ---------------------------------------------------------------------
    def get(
        self,
        model_key: str,
        template_hashes: Sequence[str],
        layers: Sequence[int],
        sentence_hashes: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [N, T, L, D] float32 with zeros where missing, found mask [N] bool:
        True when every template x layer is present for that sentence)."""
        vectors, present = self.get_detailed(model_key, template_hashes, layers, sentence_hashes)
        return vectors, present.all(axis=(1, 2))

    def complete_templates(
        self,
        model_key: str,
        template_hashes: Sequence[str],
        layers: Sequence[int],
        sentence_hashes: Sequence[str],
    ) -> np.ndarray:
        """present [N, T] bool: True where the sentence holds the template at every layer
        (:meth:`get`'s found mask is its ``all(axis=1)``), without reading any vector."""
        n, t = len(sentence_hashes), len(template_hashes)
        layer_list = sorted({int(x) for x in layers})
        if not layer_list:
            return np.ones((n, t), dtype=bool)
        present = np.zeros((n, t), dtype=bool)
        conn = self._conn()
        conn.execute("BEGIN")  # one snapshot for the chunked queries
        try:
            row = conn.execute("SELECT id FROM models WHERE key = ?", (model_key,)).fetchone()
            tmpl_ids = self._lookup(conn, "templates", template_hashes)
            sent_ids = self._lookup(conn, "sentences", sentence_hashes)
            if row is None or not tmpl_ids or not sent_ids:
                return present
            t_marks, l_marks = ",".join("?" * len(tmpl_ids)), ",".join("?" * len(layer_list))
            complete: set[tuple[int, int]] = set()
            for part in _chunks(list(set(sent_ids.values()))):
                query = (
                    "SELECT sentence_id, template_id FROM vectors WHERE model_id = ? "
                    f"AND sentence_id IN ({','.join('?' * len(part))}) AND template_id IN ({t_marks}) "
                    f"AND layer IN ({l_marks}) GROUP BY sentence_id, template_id HAVING COUNT(*) = ?"
                )
                args = [row[0], *part, *tmpl_ids.values(), *layer_list, len(layer_list)]
                complete.update(conn.execute(query, args))
        finally:
            conn.execute("COMMIT")
        for i, s in enumerate(sentence_hashes):
            for j, h in enumerate(template_hashes):
                present[i, j] = (sent_ids.get(s), tmpl_ids.get(h)) in complete
        return present

    def get_detailed(
        self,
        model_key: str,
        template_hashes: Sequence[str],
        layers: Sequence[int],
        sentence_hashes: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`get` but the mask is per cell: present [N, T, L] bool.
        D is 0 when the model key is unknown to the store."""
        n, t, l = len(sentence_hashes), len(template_hashes), len(layers)
        conn = self._conn()
        conn.execute("BEGIN")  # one consistent snapshot for all the chunked queries
        try:
            row = conn.execute("SELECT id, dim FROM models WHERE key = ?", (model_key,)).fetchone()
            if row is None:
                return np.zeros((n, t, l, 0), np.float32), np.zeros((n, t, l), bool)
            model_id, dim = row
            tmpl_ids = self._lookup(conn, "templates", template_hashes)
            sent_ids = self._lookup(conn, "sentences", sentence_hashes)
            vectors = np.zeros((n, t, l, dim), np.float32)
            present = np.zeros((n, t, l), bool)
            # Map database ids back to positions (a hash may be requested more than once).
            sent_pos: dict[int, list[int]] = {}
            for i, s in enumerate(sentence_hashes):
                if s in sent_ids:
                    sent_pos.setdefault(sent_ids[s], []).append(i)
            tmpl_pos: dict[int, list[int]] = {}
            for j, h in enumerate(template_hashes):
                if h in tmpl_ids:
                    tmpl_pos.setdefault(tmpl_ids[h], []).append(j)
            layer_pos: dict[int, list[int]] = {}
            for k, layer in enumerate(layers):
                layer_pos.setdefault(int(layer), []).append(k)
            if not sent_pos or not tmpl_pos:
                return vectors, present
            t_marks = ",".join("?" * len(tmpl_pos))
            l_marks = ",".join("?" * len(layer_pos))
            blobs: dict[int, list[bytes]] = {0: [], 1: []}
            where: dict[int, tuple[list[int], list[int], list[int]]] = {0: ([], [], []), 1: ([], [], [])}
            for part in _chunks(list(sent_pos)):
                s_marks = ",".join("?" * len(part))
                query = (
                    "SELECT sentence_id, template_id, layer, dtype, data FROM vectors "
                    f"WHERE model_id = ? AND sentence_id IN ({s_marks}) "
                    f"AND template_id IN ({t_marks}) AND layer IN ({l_marks})"
                )
                args = [model_id, *part, *tmpl_pos, *layer_pos]
                for sid, tid, layer, code, data in conn.execute(query, args):
                    ni, ti, li = where[code]
                    for a in sent_pos[sid]:
                        for b in tmpl_pos[tid]:
                            for c in layer_pos[layer]:
                                ni.append(a)
                                ti.append(b)
                                li.append(c)
                                blobs[code].append(data)
        finally:
            conn.execute("COMMIT")
        for code, parts in blobs.items():
            if not parts:
                continue
            arr = np.frombuffer(b"".join(parts), dtype=_CODE_TO_DTYPE[code]).reshape(len(parts), dim)
            ni, ti, li = where[code]
            vectors[ni, ti, li] = arr
            present[ni, ti, li] = True
        return vectors, present

    # -- writes --------------------------------------------------------------------
    def put(
        self,
        model_key: str,
        template_hashes: Sequence[str],
        layers: Sequence[int],
        sentence_hashes: Sequence[str],
        vectors: np.ndarray,
    ) -> None:
        """Store vectors [N, T, L, D] (replacing existing rows) in one transaction."""
        vectors = np.asarray(vectors)
        n, t, l = len(sentence_hashes), len(template_hashes), len(layers)
        if vectors.ndim != 4 or vectors.shape[:3] != (n, t, l):
            raise ValueError(f"vectors must have shape [{n}, {t}, {l}, D], got {list(vectors.shape)}")
        dim = int(vectors.shape[3])
        if dim == 0:
            raise ValueError("vectors have dimension 0")
        f32 = np.ascontiguousarray(vectors, dtype="<f4").reshape(n * t * l, dim)
        codes = np.zeros(n * t * l, dtype=np.int64)
        if self.storage_dtype == "float16":
            with np.errstate(over="ignore"):
                f16 = f32.astype("<f2")
            # Rows that would overflow to inf stay float32: never store a wrong value.
            overflow = ~np.isfinite(f16).all(axis=1) & np.isfinite(f32).all(axis=1)
            codes[:] = 1
            codes[overflow] = 0
        else:
            f16 = None
        layers = [int(x) for x in layers]
        now = time.time()
        conn = self._conn()
        with _write_transaction(conn):
            row = conn.execute("SELECT id, dim FROM models WHERE key = ?", (model_key,)).fetchone()
            if row is None:
                model_id = conn.execute("INSERT INTO models (key, dim) VALUES (?, ?)", (model_key, dim)).lastrowid
            else:
                model_id, stored_dim = row
                if stored_dim != dim:
                    raise ValueError(f"model key {model_key!r} holds {stored_dim}-d vectors, got {dim}-d")
            tmpl_ids = self._intern(conn, "templates", template_hashes)
            sent_ids = self._intern(conn, "sentences", sentence_hashes)
            t_ids = [tmpl_ids[h] for h in template_hashes]
            s_ids = [sent_ids[s] for s in sentence_hashes]

            def rows() -> Iterator[tuple[Any, ...]]:
                r = 0
                for a in range(n):
                    for b in range(t):
                        for c in range(l):
                            code = int(codes[r])
                            data = (f16[r] if code == 1 else f32[r]).tobytes()
                            yield (model_id, s_ids[a], t_ids[b], layers[c], code, now, data)
                            r += 1

            conn.executemany(
                "INSERT OR REPLACE INTO vectors (model_id, sentence_id, template_id, layer, dtype, created, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows(),
            )
        self._trim_wal(conn)

    def _trim_wal(self, conn: sqlite3.Connection) -> None:
        """After a large write, copy the WAL into the database and truncate it, waiting at
        most a second for readers; if they hold on, the next write trims it instead."""
        wal = Path(str(self.path) + "-wal")
        try:
            if wal.stat().st_size <= WAL_LIMIT:
                return
        except OSError:
            return
        conn.execute("PRAGMA busy_timeout=1000")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")

    # -- housekeeping --------------------------------------------------------------
    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL and shared-memory files."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def rename_model(self, old_key: str, new_key: str) -> int:
        """Move the vectors of ``old_key`` to ``new_key`` (merged into it when it exists: its own
        vectors win where both hold one). Returns the number of rows moved."""
        conn = self._conn()
        with _write_transaction(conn):
            old = conn.execute("SELECT id, dim FROM models WHERE key = ?", (old_key,)).fetchone()
            if old is None:
                raise KeyError(f"no model key {old_key!r} in {self.path}")
            new = conn.execute("SELECT id, dim FROM models WHERE key = ?", (new_key,)).fetchone()
            if new is None:
                conn.execute("UPDATE models SET key = ? WHERE id = ?", (new_key, old[0]))
                moved = conn.execute("SELECT COUNT(*) FROM vectors WHERE model_id = ?", (old[0],)).fetchone()[0]
            elif new[1] != old[1]:
                raise ValueError(f"{old_key!r} holds {old[1]}-d vectors, {new_key!r} {new[1]}-d ones")
            else:
                moved = conn.execute("UPDATE OR IGNORE vectors SET model_id = ? WHERE model_id = ?",
                                     (new[0], old[0])).rowcount
                conn.execute("DELETE FROM vectors WHERE model_id = ?", (old[0],))
                conn.execute("DELETE FROM models WHERE id = ?", (old[0],))
        return moved

    def stats(self) -> dict[str, Any]:
        """Path, size on disk and, per model key: rows, sentences, templates, layers,
        dimension, payload bytes, and first/last write times (unix seconds)."""
        conn = self._conn()
        models = []
        query = (
            "SELECT m.key, m.dim, COUNT(v.rowid), COUNT(DISTINCT v.sentence_id), COUNT(DISTINCT v.template_id), "
            "COUNT(DISTINCT v.layer), COALESCE(SUM(LENGTH(v.data)), 0), SUM(v.dtype = 1), MIN(v.created), "
            "MAX(v.created) FROM models m LEFT JOIN vectors v ON v.model_id = m.id GROUP BY m.id ORDER BY m.key"
        )
        for key, dim, rows, sents, tmpls, nlayers, payload, f16_rows, first, last in conn.execute(query):
            models.append(
                {
                    "model_key": key,
                    "dim": dim,
                    "rows": rows,
                    "sentences": sents,
                    "templates": tmpls,
                    "layers": nlayers,
                    "payload_bytes": payload,
                    "float16_rows": f16_rows or 0,
                    "first_written": first,
                    "last_written": last,
                }
            )
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes(),
            "rows": sum(m["rows"] for m in models),
            "models": models,
        }

    def prune(self, model_key: str | None = None, older_than_days: float | None = None) -> int:
        """Delete rows of ``model_key`` (all keys when None) written more than
        ``older_than_days`` ago (any age when None); both None empties the store.
        Returns the number of vector rows removed; the file is compacted (VACUUM)."""
        conn = self._conn()
        clauses, args = [], []
        if model_key is not None:
            clauses.append("model_id = (SELECT id FROM models WHERE key = ?)")
            args.append(model_key)
        if older_than_days is not None:
            clauses.append("created < ?")
            args.append(time.time() - float(older_than_days) * 86400.0)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with _write_transaction(conn):
            removed = conn.execute(f"DELETE FROM vectors{where}", args).rowcount
            conn.execute("DELETE FROM models WHERE id NOT IN (SELECT DISTINCT model_id FROM vectors)")
            conn.execute("DELETE FROM sentences WHERE id NOT IN (SELECT DISTINCT sentence_id FROM vectors)")
            conn.execute("DELETE FROM templates WHERE id NOT IN (SELECT DISTINCT template_id FROM vectors)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed
