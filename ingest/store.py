"""A collection on disk: SQLite holds the truth, FAISS and BM25 snapshots make it fast. No pickle.

Layout of a collection folder:
    manifest.json    embedder, dimension, metric, normalisation, chunking, format version
    chunks.sqlite    documents, chunks (text, metadata, vector, BM25 term ids), vocabulary, meta
    state.json       which snapshot files belong to which generation of the SQLite data
    index-G.faiss    FAISS index of generation G (IndexIDMap2 over the chosen index kind)
    bm25-G.npz       BM25 weights of generation G (numpy arrays, loaded with allow_pickle=False)
    .lock            the writers' file lock

Every document is replaced in one SQLite transaction, which bumps the generation. Snapshot files are
written to temporary names and renamed, state.json last. A reader whose state.json is older than the
SQLite generation (a writer was killed in between) rebuilds the snapshot from SQLite in memory, so it
never sees a half-written index; the next writer persists the repair.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ingest.atomic import atomic_open, atomic_write_bytes
from ingest.bm25 import TOKENIZER, BM25Matrix, Vocabulary
from ingest.errors import ChunkingMismatch, IndexLocked, IndexMismatch

FORMAT_VERSION = 1
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


@dataclass(frozen=True)
class Manifest:
    embedder: dict[str, Any]
    dimension: int
    chunking: dict[str, Any]
    index: dict[str, Any]
    profile: str | None = None
    metric: str = "inner_product"
    normalized: bool = True
    bm25_tokenizer: str = TOKENIZER
    format_version: int = FORMAT_VERSION
    created: float = field(default_factory=time.time)

    def check_compatible(self, embedder: dict[str, Any], dimension: int, where: Path) -> None:
        """Opening a collection with another embedder would return silent garbage: refuse."""
        if self.format_version != FORMAT_VERSION:
            raise IndexMismatch(
                f"{where}: format version {self.format_version}, this lectern reads {FORMAT_VERSION}"
            )
        if self.embedder.get("name") != embedder.get("name") or self.dimension != dimension:
            raise IndexMismatch(
                f"{where} was built with embedder {self.embedder.get('name')} ({self.dimension} dims), "
                f"not {embedder.get('name')} ({dimension} dims); use the same profile or a new collection"
            )
        if self.bm25_tokenizer != TOKENIZER:
            raise IndexMismatch(f"{where}: BM25 tokenizer {self.bm25_tokenizer}, expected {TOKENIZER}")

    def check_chunking(self, chunking: dict[str, Any], where: Path) -> None:
        """New documents must be cut like the ones already in: refuse other chunk sizes."""
        if self.chunking and self.chunking != chunking:
            raise ChunkingMismatch(where, self.chunking, chunking)


@dataclass(frozen=True)
class StoredChunk:
    id: int
    chunk_id: str
    source: str
    page: int | None
    heading: str | None
    start: int
    end: int
    ordinal: int
    text: str
    title: str | None


@dataclass(frozen=True)
class DocumentRow:
    source: str
    content_hash: str
    title: str | None
    format: str | None
    pages: int
    chunks: int
    bytes: int
    warnings: list[str]
    ingested_at: float


@dataclass
class NewChunk:
    chunk_id: str
    page: int | None
    heading: str | None
    start: int
    end: int
    ordinal: int
    text: str
    context: str
    terms: list[str]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Snapshot:
    """FAISS and BM25 of one generation, immutable once built: safe to share between readers."""

    def __init__(self, generation: int, index: Any, bm25: BM25Matrix) -> None:
        import faiss

        self.generation = generation
        self.index = index
        self.bm25 = bm25
        self.size = int(index.ntotal)
        self._faiss = faiss
        self._last: tuple[tuple[int, ...], np.ndarray] = ((), np.zeros(0, dtype=np.float32))

    def _bm25_scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """All BM25 scores for a query; the last one is kept, as hybrid fusion asks twice."""
        key = tuple(sorted(set(term_ids)))
        last = self._last
        if last[0] != key or not key:
            last = (key, self.bm25.scores(key))
            self._last = last  # one tuple store: safe to race, at worst recomputed
        return last[1]

    def dense(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        if self.size == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        params = None
        if allowed is not None:
            if len(allowed) == 0:
                return []
            selector = self._faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params = self._faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        scores, ids = self.index.search(q, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def lexical(
        self, term_ids: Sequence[int], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if self.size == 0 or not term_ids or k <= 0:
            return []
        scores = self._bm25_scores(term_ids)
        if allowed is not None:
            mask = np.isin(self.bm25.ids, allowed)
            scores = np.where(mask, scores, 0.0)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.bm25.ids[i]), float(scores[i])) for i in top]

    def bm25_scores_for(self, term_ids: Sequence[int], ids: Sequence[int]) -> dict[int, float]:
        """Exact BM25 scores of given chunks, for fusing with dense candidates."""
        if not term_ids or not ids:
            return {i: 0.0 for i in ids}
        scores = self._bm25_scores(term_ids)
        pos = np.searchsorted(self.bm25.ids, np.asarray(ids, dtype=np.int64))
        out: dict[int, float] = {}
        for i, p in zip(ids, pos, strict=True):
            ok = p < len(self.bm25.ids) and self.bm25.ids[p] == i
            out[i] = float(scores[p]) if ok else 0.0
        return out


class Collection:
    """One named collection folder. Open for reading with `Collection.open`; write with `writer()`."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.db = _connect(path / "chunks.sqlite")
        self.db.executescript(SCHEMA)
        self._snapshot: Snapshot | None = None

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

    # -- reading -------------------------------------------------------------------------------
    def generation(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.path / "state.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {"generation": -1}

    def snapshot(self) -> Snapshot:
        """The search structures for the current data, loaded once per generation."""
        gen = self.generation()
        if self._snapshot is not None and self._snapshot.generation == gen:
            return self._snapshot
        state = self._state()
        snap = None
        if state.get("generation") == gen:
            snap = self._load_snapshot(state)
        if snap is None:
            snap = self._build_snapshot(gen)
        self._snapshot = snap
        return snap

    def _load_snapshot(self, state: dict[str, Any]) -> Snapshot | None:
        import faiss

        try:
            faiss_bytes = (self.path / state["faiss"]).read_bytes()
            bm25_path = self.path / state["bm25"]
            if _sha256(faiss_bytes) != state.get("faiss_sha256") or _sha256_file(bm25_path) != state.get(
                "bm25_sha256"
            ):
                return None  # damaged in place: rebuild from SQLite, never trust
            index = faiss.deserialize_index(np.frombuffer(faiss_bytes, dtype=np.uint8))
            bm25 = BM25Matrix.load(str(bm25_path))
        except (OSError, RuntimeError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None  # a snapshot we cannot read is rebuilt, never trusted
        if index.d != self.manifest.dimension or not index.ntotal == len(bm25.ids) == self.count_chunks():
            return None
        return Snapshot(int(state["generation"]), index, bm25)

    def _new_index(self, vectors: np.ndarray, ids: np.ndarray) -> Any:
        import faiss

        base: Any

        kind = self.manifest.index.get("kind", "flat")
        dim = self.manifest.dimension
        n = len(ids)
        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(
                dim, int(self.manifest.index.get("hnsw_m", 32)), faiss.METRIC_INNER_PRODUCT
            )
            base.hnsw.efSearch = 128
        elif kind == "ivf" and n >= 1024:
            lists = int(self.manifest.index.get("ivf_lists") or max(16, int(4 * np.sqrt(n))))
            lists = min(lists, n // 39)
            quantizer = faiss.IndexFlatIP(dim)
            base = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
            base.train(vectors)
            base.nprobe = max(1, lists // 8)
        else:
            base = faiss.IndexFlatIP(dim)
        index = faiss.IndexIDMap2(base)
        if n:
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        return index

    def _build_snapshot(self, generation: int) -> Snapshot:
        rows = self.db.execute("SELECT id, vector, terms FROM chunks ORDER BY id").fetchall()
        dim = self.manifest.dimension
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = (
            np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            if rows
            else np.zeros((0, dim), dtype=np.float32)
        )
        vocab_size = int(self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM vocab").fetchone()[0])
        bm25 = BM25Matrix.build(ids, [r[2] for r in rows], vocab_size)
        return Snapshot(generation, self._new_index(vectors, ids), bm25)

    def term_ids(self, words: Sequence[str]) -> list[int]:
        if not words:
            return []
        unique = sorted(set(words))
        marks = ",".join("?" * len(unique))
        found = dict(
            self.db.execute(f"SELECT term, id FROM vocab WHERE term IN ({marks})", unique).fetchall()
        )
        return [int(found[w]) for w in words if w in found]

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
        """The only way to change a collection: one writer at a time, across processes."""
        lock = FileLock(str(self.path / ".lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise IndexLocked(f"{self.path} is being written by another process (lock held)") from None
        try:
            w = Writer(self)
            yield w
            w.persist()
        finally:
            lock.release()


class Writer:
    """Applies document replacements to SQLite (atomically each) and to an in-memory snapshot."""

    def __init__(self, collection: Collection) -> None:
        self.c = collection
        self.db = collection.db
        self.vocab = Vocabulary(self.db.execute("SELECT term, id FROM vocab").fetchall())
        self.snapshot = collection.snapshot()  # repaired here if a killed writer left it stale
        self._dirty = self.snapshot.generation != collection._state().get("generation")
        self._pending_vectors: dict[int, np.ndarray] = {}
        self._removed: list[int] = []

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

    def replace_document(self, doc: DocumentRow, chunks: Sequence[NewChunk], vectors: np.ndarray) -> None:
        """Exactly this source's chunks are replaced, in one transaction; ids are never reused."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        if len(vectors) and vectors.shape[1] != self.c.manifest.dimension:
            raise IndexMismatch(
                f"vectors have {vectors.shape[1]} dims, the collection {self.c.manifest.dimension}"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        term_arrays = [self.vocab.encode(ch.terms) for ch in chunks]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE source = ?", (doc.source,))]
            self.db.execute("DELETE FROM chunks WHERE source = ?", (doc.source,))
            if self.vocab.new:
                self.db.executemany("INSERT OR IGNORE INTO vocab(term, id) VALUES(?, ?)", self.vocab.new)
            first = self._next_id()
            rows = [
                (first + i, ch.chunk_id, doc.source, ch.page, ch.heading, ch.start, ch.end, ch.ordinal,
                 ch.text, ch.context, vectors[i].tobytes(), term_arrays[i].tobytes())
                for i, ch in enumerate(chunks)
            ]  # fmt: skip
            self.db.executemany(
                'INSERT INTO chunks(id, chunk_id, source, page, heading, start, "end", ordinal, text, context, '
                "vector, terms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self.db.execute(
                "INSERT OR REPLACE INTO documents VALUES(?,?,?,?,?,?,?,?,?)",
                (doc.source, doc.content_hash, doc.title, doc.format, doc.pages, len(chunks), doc.bytes,
                 json.dumps(doc.warnings), doc.ingested_at),
            )  # fmt: skip
            self.db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES('next_id', ?)", (str(first + len(chunks)),)
            )
            self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.vocab.new.clear()
        self._removed.extend(old)
        for i in range(len(chunks)):
            self._pending_vectors[first + i] = vectors[i]
        self._dirty = True

    def delete_document(self, source: str) -> int:
        """Remove one source's chunks: a few row deletes, no re-embedding, no rebuild of the rest."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE source = ?", (source,))]
            self.db.execute("DELETE FROM chunks WHERE source = ?", (source,))
            gone = self.db.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount
            if gone:
                self._bump()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if gone:
            self._removed.extend(old)
            self._dirty = True
        return len(old) if gone else -1

    def persist(self) -> None:
        """Write the snapshot files of the current generation, then point state.json at them."""
        if not self._dirty:
            return
        import faiss

        gen = self.c.generation()
        index = faiss.clone_index(self.snapshot.index)  # readers may hold the old one
        incremental = self.c.manifest.index.get("kind", "flat") == "flat" and self.snapshot.size > 0
        if incremental:
            if self._removed:
                index.remove_ids(np.array(self._removed, dtype=np.int64))  # type: ignore[arg-type]
            removed = set(self._removed)
            live = [i for i in self._pending_vectors if i not in removed]
            if live:
                index.add_with_ids(
                    np.vstack([self._pending_vectors[i] for i in live]), np.array(live, dtype=np.int64)
                )
            rows = self.db.execute("SELECT id, terms FROM chunks ORDER BY id").fetchall()
            vocab_size = len(self.vocab.ids)
            bm25 = BM25Matrix.build(
                np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], vocab_size
            )
            snap = Snapshot(gen, index, bm25)
        else:
            snap = self.c._build_snapshot(gen)
        faiss_name, bm25_name = f"index-{gen}.faiss", f"bm25-{gen}.npz"
        data = np.asarray(faiss.serialize_index(snap.index)).tobytes()
        atomic_write_bytes(self.c.path / faiss_name, data)
        with atomic_open(self.c.path / bm25_name) as fh:
            snap.bm25.save(fh)
        state = {
            "generation": gen,
            "faiss": faiss_name,
            "bm25": bm25_name,
            "faiss_sha256": _sha256(data),
            "bm25_sha256": _sha256_file(self.c.path / bm25_name),
            "written": time.time(),
        }
        atomic_write_bytes(self.c.path / "state.json", json.dumps(state).encode())
        for old in self.c.path.glob("index-*.faiss"):
            if old.name != faiss_name:
                old.unlink(missing_ok=True)
        for old in self.c.path.glob("bm25-*.npz"):
            if old.name != bm25_name:
                old.unlink(missing_ok=True)
        self.snapshot = snap
        self.c._snapshot = snap
        self._pending_vectors.clear()
        self._removed.clear()
        self._dirty = False
