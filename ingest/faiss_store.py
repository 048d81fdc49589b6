"""A collection on disk: SQLite holds the truth, FAISS and BM25 snapshots make it fast. No pickle.
This is the `faiss` backend of ingest.stores (the store interface; the default): `FaissBackend`.

Layout of a collection folder:
    manifest.json    embedder, dimension, metric, normalisation, chunking, format version
    chunks.sqlite    documents, chunks (text, metadata, vector, BM25 term ids), vocabulary, meta
    state.json       which snapshot files belong to which generation of the SQLite data
    index-G.faiss    FAISS index written at generation G (IndexIDMap2 over the chosen index kind)
    bm25-G.npz       BM25 term counts written at generation G (numpy arrays, no pickle)
    dead-G.npy       row ids deleted since those two were written (tombstones; absent when none)
    .lock            the writers' file lock

This module is the SQLite side: the schema, reads, each writer's transactions, and when to write
which snapshot file. ingest/snapshot.py is the FAISS and BM25 side: the structures, and how their
files (and state.json) are written, checked and read.

Every document is replaced in one SQLite transaction, which bumps the generation. Snapshot files are
written to temporary names and renamed, state.json last. A reader whose state.json is older than the
SQLite generation (a writer was killed in between) rebuilds the snapshot from SQLite in memory, so it
never sees a half-written index; the next writer persists the repair.

What a write costs: a delete alone writes the list of deleted row ids and state.json, nothing
else (the index and BM25 files keep the rows as tombstones, which searches skip). An add updates
the index and the BM25 counts in memory, without reading the other rows again, and writes both
files whole, dropping the tombstones (HNSW and IVF indexes cannot drop rows under FAISS's id map:
they keep them until they are a quarter of the index, then are rebuilt from SQLite, as is an IVF
index that has outgrown its training).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from lectern.errors import IndexMismatch, NotEnoughDisk
from lectern.ingest.atomic import atomic_write_bytes, free_bytes, out_of_disk
from lectern.ingest.snapshot import (
    Snapshot,
    can_remove,
    empty_index,
    load_files,
    needs_rebuild,
    publish,
    read_state,
    read_tombstones,
    write_files,
    write_tombstones,
)
from lectern.ingest.stores import (
    DocumentRow,
    Manifest,
    NewChunk,
    Scored,
    SearchRequest,
    Store,
    StoredChunk,
    take_writer_lock,
)

if TYPE_CHECKING:  # scipy, under bm25, loads only when BM25 is built or read: `lectern list` needs neither
    from lectern.ingest.bm25 import Vocabulary

# What atomic_open leaves when a writer is killed between writing and renaming: ".<name>.<random>.tmp".
_TEMPORARIES = ("index-*.faiss", "bm25-*.npz", "dead-*.npy", "state.json", "manifest.json")
WORK: Counter[str] = Counter()
ROWS_AT_ONCE = 4096  # rows read back from SQLite at a time to build or update a snapshot
"""Work this process did on collections (rows read back from SQLite, snapshot bytes written, full
rebuilds): tests and benchmarks count these instead of timing."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS documents(
    source TEXT PRIMARY KEY, content_hash TEXT NOT NULL, title TEXT, format TEXT, pages INTEGER,
    chunks INTEGER, bytes INTEGER, warnings TEXT, ingested_at REAL);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, source TEXT NOT NULL, page INTEGER,
    heading TEXT, start INTEGER, "end" INTEGER, ordinal INTEGER, text TEXT NOT NULL, context TEXT,
    vector BLOB NOT NULL, terms BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source, ordinal);
CREATE TABLE IF NOT EXISTS vocab(term TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


LOCK_WAIT_S = 30.0
"""How long a connection waits for another's lock on the collection's database."""


def _connect(path: Path) -> sqlite3.Connection:
    if not os.access(path.parent, os.W_OK):
        return _connect_read_only(path)
    conn = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None, check_same_thread=False)
    _write_ahead(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _write_ahead(conn: sqlite3.Connection) -> None:
    """WAL mode, which the database file keeps once set. Setting it takes the file alone, and while
    another connection writes (the one creating the collection) SQLite answers "database is locked"
    at once rather than wait: a reader opening a collection that an ingest is creating would fail.
    So a file already in WAL is left as it is, and the switch is tried again until the writer is
    done (at most LOCK_WAIT_S, as any other wait for the lock)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A collection on a read-only disk: SQLite read-only; immutable (no locks, no -shm to create)
    when even that needs a file the folder cannot take. No writer can be at work on such a disk."""
    uri = path.resolve().as_uri()
    for mode in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
    raise PermissionError(13, "the collection's database cannot be opened read-only", str(path))


class Collection:
    """One named collection folder. Open for reading with `Collection.open`; write with `writer()`."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.db = _connect(path / "chunks.sqlite")
        if os.access(path, os.W_OK):  # a read-only collection has its tables: nothing to create
            self.db.executescript(SCHEMA)
        self._snapshot: Snapshot | None = None
        self._reading = threading.RLock()

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def exists(cls, path: Path) -> bool:
        return (path / "manifest.json").is_file()

    @classmethod
    def create(cls, path: Path, manifest: Manifest) -> Collection:
        path.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path / ".lock"), timeout=30):
            if not cls.exists(path):
                data = json.dumps(asdict(manifest), indent=2, sort_keys=True).encode()
                atomic_write_bytes(path / "manifest.json", data)
        return cls.open(path)

    @classmethod
    def read_manifest(cls, path: Path) -> Manifest:
        return Manifest(**json.loads((path / "manifest.json").read_text(encoding="utf-8")))

    @classmethod
    def open(cls, path: Path) -> Collection:
        return cls(path, cls.read_manifest(path))

    def close(self) -> None:
        self.db.close()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def where(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One SQLite read transaction for a whole search: its generation, snapshot, ids and fetched
        rows all belong to one commit, though a writer replaces the rows under new ids meanwhile
        (a search during `ingest --force` fetched ids already gone, and missed passages). Threads
        sharing this connection (the server's requests) take turns; a nested call joins."""
        with self._reading:
            if self.db.in_transaction:
                yield
                return
            self.db.execute("BEGIN")
            try:
                yield
            finally:
                if self.db.in_transaction:
                    self.db.execute("COMMIT")

    # -- searching (ingest.stores.Store) ---------------------------------------------------------
    corrects_spelling = True

    def search(self, request: SearchRequest) -> Scored:
        """lectern's own ranking over this generation's snapshot, filters applied before the top-k cut
        (hybrid: ingest.fusion)."""
        snap = self.snapshot()
        f = request.filters
        allowed = None
        if f is not None and not f.empty:
            allowed = self.filter_ids(list(f.sources) or None, f.page_min, f.page_max)
        mode, n = request.mode, request.fetch_k
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        term_ids: list[int] = []
        if mode in ("dense", "hybrid"):
            assert request.qvec is not None
            dense = snap.dense(request.qvec, n, allowed)
        if mode in ("bm25", "hybrid"):
            term_ids = self.term_ids(request.terms)
            lexical = snap.lexical(term_ids, n, allowed)
        if mode == "dense":
            return [(i, s, s, None) for i, s in dense]
        if mode == "bm25":
            return [(i, s, None, s) for i, s in lexical]
        from lectern.ingest.fusion import fuse

        assert request.qvec is not None
        ids = term_ids
        lex = (lambda missing: snap.bm25_scores_for(ids, missing)) if term_ids else None
        return fuse(
            dense, lexical, request.qvec, self.vectors, lex, request.dense_weight, request.bm25_weight
        )

    def term_idf(self, words: Sequence[str]) -> tuple[dict[str, float], float]:
        """BM25's IDF of each of `words` the collection holds, and the IDF of a word it does not."""
        found = self.vocabulary(words)
        names = list(found)
        idf = self.snapshot().bm25.idf([found[n] for n in names] + [-1]).tolist()
        return dict(zip(names, idf[:-1], strict=True)), float(idf[-1])

    def export(self, source: str) -> tuple[list[NewChunk], np.ndarray]:
        """A document's chunks as written (context, BM25 terms) and their vectors, in order."""
        rows = self.db.execute(
            'SELECT chunk_id, page, heading, start, "end", ordinal, text, context, vector, terms '
            "FROM chunks WHERE source = ? ORDER BY ordinal",
            (source,),
        ).fetchall()
        term_arrays = [np.frombuffer(r[9], dtype=np.int32) for r in rows]
        wanted = sorted({int(t) for a in term_arrays for t in a})
        names: dict[int, str] = {}
        for lo in range(0, len(wanted), 500):
            part = wanted[lo : lo + 500]
            marks = ",".join("?" * len(part))
            names.update(
                self.db.execute(f"SELECT id, term FROM vocab WHERE id IN ({marks})", part).fetchall()
            )
        chunks = [
            NewChunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or "", [names[int(t)] for t in a])
            for r, a in zip(rows, term_arrays, strict=True)
        ]
        dim = self.manifest.dimension
        vectors = (
            np.vstack([np.frombuffer(r[8], dtype=np.float32) for r in rows])
            if rows
            else np.zeros((0, dim), dtype=np.float32)
        )
        return chunks, vectors

    # -- reading -------------------------------------------------------------------------------
    def generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    def snapshot(self) -> Snapshot:
        """The search structures for the current data, loaded once per generation."""
        gen = self.generation()
        if self._snapshot is not None and self._snapshot.generation == gen:
            return self._snapshot
        state = read_state(self.path)
        snap = None
        if state.get("generation") == gen:
            snap = self._load_snapshot(state)
        if snap is None:
            snap = self._build_snapshot(gen)
        self._snapshot = snap
        return snap

    def _load_snapshot(self, state: dict[str, Any], rows: int | None = None) -> Snapshot | None:
        """The snapshot state.json names, checked against SQLite (`rows` live chunks, by default the
        count now); None when it cannot be trusted."""
        return load_files(
            self.path, state, self.manifest.dimension, lambda: self.count_chunks() if rows is None else rows
        )

    def _build_snapshot(self, generation: int) -> Snapshot:
        """Everything from SQLite: every row read back, ROWS_AT_ONCE at a time, into an index built
        anew (counted in WORK). What is held is the index and the BM25 counts, not the rows."""
        WORK["rebuilds"] += 1
        vocab_size = int(self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM vocab").fetchone()[0])
        options = self.manifest.index
        index = empty_index(
            options.get("kind", "flat"), self.manifest.dimension, self.count_chunks(), options, self._sample
        )
        from lectern.ingest.bm25 import BM25Matrix

        bm25 = BM25Matrix.from_batches(self._indexed(index, self.rows()), vocab_size)
        return Snapshot(generation, index, bm25)

    def rows(
        self, since: int = 0, counted: str = "rows_read"
    ) -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
        """(ids, vectors, BM25 term arrays) of the rows with ids from `since` on, in id order,
        ROWS_AT_ONCE at a time (counted in WORK[counted])."""
        dim = self.manifest.dimension
        cursor = self.db.execute("SELECT id, vector, terms FROM chunks WHERE id >= ? ORDER BY id", (since,))
        while rows := cursor.fetchmany(ROWS_AT_ONCE):
            WORK[counted] += len(rows)
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vectors, [np.frombuffer(r[2], dtype=np.int32) for r in rows]

    @staticmethod
    def _indexed(
        index: Any, batches: Iterable[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]
    ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """Each batch's vectors added to `index`; its ids and term arrays passed on (to the BM25 counts)."""
        for ids, vectors, terms in batches:
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            yield ids, terms

    def _sample(self, rows: int) -> np.ndarray:
        """`rows` stored vectors spread evenly over the collection (an IVF index's training set)."""
        ids = np.array([r[0] for r in self.db.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)
        picked = (
            ids[np.linspace(0, len(ids) - 1, num=min(rows, len(ids)), dtype=np.int64)] if len(ids) else ids
        )
        found = self.vectors(picked.tolist())
        return (
            np.vstack([found[int(i)] for i in picked])
            if len(picked)
            else np.zeros((0, self.manifest.dimension), dtype=np.float32)
        )

    def vocabulary(self, words: Sequence[str]) -> dict[str, int]:
        """The term ids of those `words` the collection has seen."""
        unique = sorted(set(words))
        if not unique:
            return {}
        marks = ",".join("?" * len(unique))
        rows = self.db.execute(f"SELECT term, id FROM vocab WHERE term IN ({marks})", unique).fetchall()
        return {str(term): int(i) for term, i in rows}

    def term_ids(self, words: Sequence[str]) -> list[int]:
        found = self.vocabulary(words)
        return [found[w] for w in words if w in found]

    def fetch(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """Chunks by row id (those deleted since the snapshot are simply missing)."""
        out: dict[int, StoredChunk] = {}
        ids = list(ids)
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            marks = ",".join("?" * len(part))
            query = (
                'SELECT c.id, c.chunk_id, c.source, c.page, c.heading, c.start, c."end", c.ordinal, c.text, '
                f"d.title FROM chunks c LEFT JOIN documents d ON d.source = c.source WHERE c.id IN ({marks})"
            )
            for r in self.db.execute(query, part):
                out[int(r[0])] = StoredChunk(*r)
        return out

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by row id. A row deleted since the caller's snapshot is absent: keyed by id,
        never by position, so one missing row cannot shift the others onto the wrong chunks."""
        out: dict[int, np.ndarray] = {}
        ids = list(ids)
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            marks = ",".join("?" * len(part))
            for i, blob in self.db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", part):
                out[int(i)] = np.frombuffer(blob, dtype=np.float32)
        return out

    def filter_ids(
        self, sources: Sequence[str] | None = None, page_min: int | None = None, page_max: int | None = None
    ) -> np.ndarray | None:
        """Row ids that pass a metadata filter, or None for no filter (applied before the top-k cut)."""
        clauses: list[str] = []
        args: list[Any] = []
        if sources:
            clauses.append(f"source IN ({','.join('?' * len(sources))})")
            args.extend(sources)
        if page_min is not None:
            clauses.append("page >= ?")
            args.append(page_min)
        if page_max is not None:
            clauses.append("page <= ?")
            args.append(page_max)
        if not clauses:
            return None
        rows = self.db.execute(f"SELECT id FROM chunks WHERE {' AND '.join(clauses)} ORDER BY id", args)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def documents(self) -> list[DocumentRow]:
        rows = self.db.execute(
            "SELECT source, content_hash, title, format, pages, chunks, bytes, warnings, ingested_at "
            "FROM documents ORDER BY source"
        ).fetchall()
        return [
            DocumentRow(
                r[0], r[1], r[2], r[3], r[4] or 0, r[5] or 0, r[6] or 0, json.loads(r[7] or "[]"), r[8]
            )
            for r in rows
        ]

    def document(self, source: str) -> DocumentRow | None:
        return next((d for d in self.documents() if d.source == source), None)

    def content_hashes(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT source, content_hash FROM documents").fetchall())

    def chunks_of(self, source: str) -> list[StoredChunk]:
        rows = self.db.execute(
            "SELECT id FROM chunks WHERE source = ? ORDER BY ordinal", (source,)
        ).fetchall()
        found = self.fetch([r[0] for r in rows])
        return [found[r[0]] for r in rows if r[0] in found]

    def count_chunks(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        return {
            "documents": int(self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]),
            "chunks": self.count_chunks(),
            "generation": self.generation(),
            "embedder": self.manifest.embedder.get("name"),
            "profile": self.manifest.profile,
        }

    # -- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, timeout: float = 30.0) -> Iterator[Writer]:
        """The only way to change a collection: one writer at a time, across processes. A writer that
        has to wait says so (log "lectern", which the CLI prints) before it waits."""
        lock = FileLock(str(self.path / ".lock"), timeout=timeout)
        take_writer_lock(lock, self.path.name, self.path, timeout)
        try:
            remove_stale_temporaries(self.path)
            w = Writer(self)
            yield w
            w.persist()
        finally:
            lock.release()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete snapshot temporaries a killed writer left (only while holding the writers' lock: no
    live writer has any then). Returns what was removed."""
    gone: list[Path] = []
    for name in _TEMPORARIES:
        for tmp in folder.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


class Writer:
    """Applies document replacements to SQLite (atomically each), then `persist` brings the snapshot
    files up to date: see the module docstring for what each kind of change costs."""

    def __init__(self, collection: Collection) -> None:
        self.c = collection
        self.db = collection.db
        self._vocab: Vocabulary | None = None
        self._state = read_state(collection.path)
        self._start = collection.generation()
        self._files_current = self._state.get("generation") == self._start
        self._dirty = not self._files_current  # a killed writer left them stale: repaired on persist
        # rows added are read back from SQLite when the snapshot is brought up to date, not held here:
        # how many, and the first id given (ids only grow: every row from it on was added by this writer)
        self._added = 0
        self._first_added: int | None = None
        self._removed: dict[int, np.ndarray] = {}  # row id -> its stored term ids

    @property
    def vocab(self) -> Vocabulary:
        """The term ids, read on the first add only (a delete never needs them)."""
        if self._vocab is None:
            rows = self.db.execute("SELECT term, id FROM vocab").fetchall()
            WORK["vocab_rows_read"] += len(rows)
            from lectern.ingest.bm25 import Vocabulary

            self._vocab = Vocabulary(rows)
        return self._vocab

    def _bump(self) -> int:
        gen = self.c.generation() + 1
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('generation', ?)", (str(gen),))
        return gen

    def _next_id(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='next_id'").fetchone()
        if row:
            return int(row[0])
        top = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
        return int(top) + 1

    def _take(self, source: str) -> dict[int, np.ndarray]:
        """Delete this source's chunks (inside the caller's transaction); their ids and term ids."""
        rows = self.db.execute("SELECT id, terms FROM chunks WHERE source = ?", (source,)).fetchall()
        self.db.execute("DELETE FROM chunks WHERE source = ?", (source,))
        return {int(i): np.frombuffer(t, dtype=np.int32) for i, t in rows}

    def replace_document(self, doc: DocumentRow, chunks: Sequence[NewChunk], vectors: np.ndarray) -> None:
        """Exactly this source's chunks are replaced, in one transaction; ids are never reused."""
        self.replace_document_parts(doc, [(chunks, vectors)])

    def replace_document_parts(
        self, doc: DocumentRow, parts: Iterable[tuple[Sequence[NewChunk], np.ndarray]]
    ) -> int:
        """Like replace_document, with the chunks and their vectors arriving in parts (a long file
        chunked and embedded a batch at a time), all in one transaction: a kill leaves the old
        document. `doc.chunks` is set to the number written, which is returned."""
        first = n = 0
        old: dict[int, np.ndarray] = {}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = self._take(doc.source)
            first = self._next_id()
            for chunks, vectors in parts:
                if len(chunks) != len(vectors):
                    raise ValueError("one vector per chunk")
                if len(vectors) and vectors.shape[1] != self.c.manifest.dimension:
                    raise IndexMismatch(
                        f"vectors have {vectors.shape[1]} dims, the collection {self.c.manifest.dimension}"
                    )
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                term_arrays = [self.vocab.encode(ch.terms) for ch in chunks]
                if self.vocab.new:
                    self.db.executemany("INSERT OR IGNORE INTO vocab(term, id) VALUES(?, ?)", self.vocab.new)
                    self.vocab.new.clear()
                rows = [
                    (first + n + i, ch.chunk_id, doc.source, ch.page, ch.heading, ch.start, ch.end, ch.ordinal,
                     ch.text, ch.context, vectors[i].tobytes(), term_arrays[i].tobytes())
                    for i, ch in enumerate(chunks)
                ]  # fmt: skip
                self.db.executemany(
                    'INSERT INTO chunks(id, chunk_id, source, page, heading, start, "end", ordinal, text, '
                    "context, vector, terms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                n += len(chunks)
            self.db.execute(
                "INSERT OR REPLACE INTO documents VALUES(?,?,?,?,?,?,?,?,?)",
                (doc.source, doc.content_hash, doc.title, doc.format, doc.pages, n, doc.bytes,
                 json.dumps(doc.warnings), doc.ingested_at),
            )  # fmt: skip
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('next_id', ?)", (str(first + n),))
            self._bump()
            self.db.execute("COMMIT")
        except BaseException as error:
            self._rollback()
            self._vocab = None  # terms added in the rolled-back transaction are not in the table
            if out_of_disk(error):
                where = self.c.path
                raise NotEnoughDisk(f"writing {doc.source}", where, None, free_bytes(where)) from error
            raise
        self._removed.update(old)
        if n and self._first_added is None:
            self._first_added = first
        self._added += n
        self._dirty = True
        return n

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already: a COMMIT that fails because
        the disk is full rolls back by itself, and a second ROLLBACK would hide that error."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def delete_document(self, source: str) -> int:
        """Remove one source's chunks: a few row deletes, no re-embedding, no rebuild of the rest."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = self._take(source)
            gone = self.db.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount
            if gone:
                self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if gone:
            self._removed.update(old)
            self._dirty = True
        return len(old) if gone else -1

    def persist(self) -> None:
        """Bring the snapshot files to the current generation, then point state.json at them."""
        if not self._dirty:
            return
        gen = self.c.generation()
        added = self._added > len([i for i in self._removed if self._is_added(i)])  # some are still there
        gone = {i: t for i, t in self._removed.items() if not self._is_added(i)}
        if not added and self._files_current and self._tombstone(gen, gone):
            self._reset()
            return
        base = self._start_snapshot()
        snap = self.c._build_snapshot(gen) if base is None else self._updated(base, gen, added, gone)
        self._write(snap)
        self._reset()

    def _start_snapshot(self) -> Snapshot | None:
        """The structures as they were when this writer began, or None if only SQLite has them now."""
        held = self.c._snapshot
        if held is not None and held.generation == self._start:
            return held
        if not self._files_current:
            return None
        rows_then = self.c.count_chunks() - self._added + len(self._removed)
        return self.c._load_snapshot(self._state, rows_then)

    def _tombstone(self, gen: int, gone: dict[int, np.ndarray]) -> bool:
        """A delete alone: add the rows to the tombstone list and point state.json at it; the index and
        BM25 files are left as they are. False when the tombstones are due for a full write."""
        rows, old = self._state.get("rows"), read_tombstones(self.c.path, self._state)
        if rows is None or old is None:
            return False
        dead = np.union1d(old, np.fromiter(gone, dtype=np.int64, count=len(gone)))
        if len(dead) > 0.25 * int(rows):
            return False  # searches would wade through the dead: write the index anew, without them
        held = self.c._snapshot
        entries, written = write_tombstones(self.c.path, gen, dead)
        self._publish({**self._state, "generation": gen, **entries}, written)
        if held is not None and held.generation == self._start and held.persisted:
            self.c._snapshot = Snapshot(gen, held.index, held.bm25.without(gone), persisted=True)
        return True

    def _is_added(self, row: int) -> bool:
        return self._first_added is not None and row >= self._first_added

    def _updated(self, base: Snapshot, gen: int, added: bool, gone: dict[int, np.ndarray]) -> Snapshot:
        """`base` with the rows removed and added, in memory; rebuilt from SQLite when its kind needs it.
        The rows added are read back from SQLite a batch at a time (Collection.rows)."""
        import faiss

        from lectern.ingest.bm25 import BM25Matrix

        kind = self.c.manifest.index.get("kind", "flat")
        bm25 = base.bm25.without(gone)
        rows_added = self._added - len([i for i in self._removed if self._is_added(i)])
        if needs_rebuild(kind, base.index, bm25.n_live + rows_added, len(bm25.dead_ids)):
            return self.c._build_snapshot(gen)
        index = faiss.clone_index(base.index)  # readers may hold the old one
        drop = can_remove(index)
        if drop and len(bm25.dead_ids):
            index.remove_ids(np.ascontiguousarray(bm25.dead_ids, dtype=np.int64))  # type: ignore[arg-type]
        if added or (drop and len(bm25.dead_ids)):
            width = len(self._vocab.ids) if self._vocab is not None else bm25.tf.shape[1]
            batches = (  # the rows this writer added, and no other (WORK["rows_read"] stays 0)
                self.c.rows(self._first_added, "added_rows_read")
                if added and self._first_added is not None
                else []
            )
            new = BM25Matrix.from_batches(self.c._indexed(index, batches), width)
            bm25 = bm25.with_matrix(new, width, drop_dead=drop)
        return Snapshot(gen, index, bm25)

    def _write(self, snap: Snapshot) -> None:
        """Write the index, the BM25 counts and the tombstones in full, then state.json."""
        state, written = write_files(self.c.path, snap)
        self._publish(state, written)
        WORK["full_writes"] += 1
        snap.persisted = True
        self.c._snapshot = snap

    def _publish(self, state: dict[str, Any], written: int) -> None:
        """state.json last, then the files it no longer names are removed."""
        self._state, size = publish(self.c.path, state)
        WORK["snapshot_bytes_written"] += written + size

    def _reset(self) -> None:
        self._added, self._first_added = 0, None
        self._removed.clear()
        self._start = self.c.generation()
        self._files_current = True
        self._dirty = False


class FaissBackend:
    """Collection folders under `root`: the default backend (ingest.stores.Backend)."""

    kind = "faiss"

    def __init__(self, root: Path) -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FaissBackend) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        return Collection.exists(self.root / name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if self.exists(p.name))

    def where(self, name: str) -> str:
        return str(self.root / name)

    def read_manifest(self, name: str) -> Manifest:
        return Collection.read_manifest(self.root / name)

    def create(self, name: str, manifest: Manifest) -> Store:
        return Collection.create(self.root / name, manifest)

    def open(self, name: str) -> Store:
        return Collection.open(self.root / name)

    def drop(self, name: str) -> None:
        import shutil

        if self.exists(name):
            shutil.rmtree(self.root / name)
