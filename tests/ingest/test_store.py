"""Tests of ingest.faiss_store: manifest checks, atomic document replacement, snapshots and state.json."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lectern.errors import IndexMismatch
from lectern.ingest import atomic, bm25_terms
from lectern.ingest.collection import manifest_for
from lectern.ingest.faiss_store import Collection
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.settings import IngestSettings
from lectern.ingest.stores import FORMAT_VERSION, DocumentRow, Manifest, NewChunk

EMB = FakeEmbedder()


def make_chunks(source: str, texts: list[str], page: int | None = None) -> tuple[list[NewChunk], np.ndarray]:
    chunks = [
        NewChunk(f"{source}-{i}-{t}", page, None, 0, len(t), i, t, "", bm25_terms.terms(t))
        for i, t in enumerate(texts)
    ]
    return chunks, EMB.embed(texts)


def doc_row(source: str, n: int, digest: str = "h") -> DocumentRow:
    return DocumentRow(source, digest, source.title(), "text", 1, n, 10, [], time.time())


def put(col: Collection, source: str, texts: list[str], page: int | None = None, digest: str = "h") -> None:
    chunks, vectors = make_chunks(source, texts, page)
    with col.writer(timeout=2) as w:
        w.replace_document(doc_row(source, len(chunks), digest), chunks, vectors)


@pytest.fixture
def col(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Collection.create(tmp_path / "col", manifest_for(EMB, IngestSettings()))
    yield c
    c.close()


def test_manifest_is_json_and_describes_the_index(col: Collection) -> None:
    data = json.loads((col.path / "manifest.json").read_text())
    assert data["embedder"] == EMB.identity
    assert data["dimension"] == 64
    assert data["metric"] == "inner_product" and data["normalized"] is True
    assert data["chunking"] == {"chunk_tokens": 200, "overlap_tokens": 40}
    assert data["format_version"] == FORMAT_VERSION
    assert data["bm25_tokenizer"] == bm25_terms.TOKENIZER
    assert Collection.open(col.path).manifest == col.manifest


def test_manifest_compatibility_checks(col: Collection) -> None:
    m = col.manifest
    m.check_compatible(EMB.identity, 64, col.path)
    with pytest.raises(IndexMismatch, match="fake-32"):
        m.check_compatible(FakeEmbedder(32).identity, 32, col.path)
    with pytest.raises(IndexMismatch):
        m.check_compatible(EMB.identity, 65, col.path)
    with pytest.raises(IndexMismatch, match="format version"):
        replace(m, format_version=FORMAT_VERSION + 1).check_compatible(EMB.identity, 64, col.path)
    with pytest.raises(IndexMismatch, match="tokenizer"):
        replace(m, bm25_tokenizer="other").check_compatible(EMB.identity, 64, col.path)


def test_create_keeps_an_existing_manifest(col: Collection) -> None:
    other = Manifest(embedder={"name": "x"}, dimension=3, chunking={}, index={})
    again = Collection.create(col.path, other)
    try:
        assert again.manifest.dimension == 64
    finally:
        again.close()


def test_persist_writes_one_snapshot_per_generation(col: Collection) -> None:
    put(col, "a", ["apples grow on trees", "apples are red"])
    gen = col.generation()
    state = json.loads((col.path / "state.json").read_text())
    assert state["generation"] == gen
    assert (col.path / state["faiss"]).is_file() and (col.path / state["bm25"]).is_file()
    put(col, "b", ["bananas are yellow"])
    state2 = json.loads((col.path / "state.json").read_text())
    assert state2["generation"] == col.generation() > gen
    assert sorted(p.name for p in col.path.glob("index-*.faiss")) == [state2["faiss"]]  # old ones removed
    assert sorted(p.name for p in col.path.glob("bm25-*.npz")) == [state2["bm25"]]
    assert not list(col.path.glob(".*.faiss.*")) and not list(col.path.glob(".bm25.*"))  # no temp files left
    with np.load(col.path / state2["bm25"], allow_pickle=False) as z:  # no pickle in the snapshot
        assert len(z["ids"]) == 3


def test_snapshot_loaded_once_per_generation_and_seen_by_other_readers(col: Collection) -> None:
    put(col, "a", ["apples grow on trees"])
    reader = Collection.open(col.path)
    try:
        first = reader.snapshot()
        assert reader.snapshot() is first
        put(col, "b", ["bananas are yellow", "bananas are long"])
        second = reader.snapshot()
        assert second is not first and second.size == 3
        hits = second.lexical(reader.term_ids(bm25_terms.terms("bananas")), 5)
        assert {reader.fetch([i])[i].source for i, _ in hits} == {"b"}
    finally:
        reader.close()


def test_replace_document_is_atomic(col: Collection) -> None:
    put(col, "a", ["apples grow on trees", "apples are red"])
    put(col, "b", ["bananas are yellow"])
    before = col.chunks_of("a")
    chunks, vectors = make_chunks("a", ["apricots are orange"])
    chunks[0].chunk_id = col.chunks_of("b")[0].chunk_id  # collides with b's chunk: the insert fails
    with pytest.raises(sqlite3.IntegrityError), col.writer(timeout=2) as w:
        w.replace_document(doc_row("a", 1, "new"), chunks, vectors)
    assert col.chunks_of("a") == before  # all old, nothing half-new
    assert col.content_hashes()["a"] == "h"
    put(col, "a", ["apricots are orange"], digest="new")  # the writer still works afterwards
    assert [c.text for c in col.chunks_of("a")] == ["apricots are orange"]


def test_replace_document_checks_its_inputs(col: Collection) -> None:
    chunks, vectors = make_chunks("a", ["one", "two"])
    with col.writer(timeout=2) as w:
        with pytest.raises(ValueError):
            w.replace_document(doc_row("a", 2), chunks, vectors[:1])
        with pytest.raises(IndexMismatch):
            w.replace_document(doc_row("a", 2), chunks, np.zeros((2, 8), dtype=np.float32))
    assert col.count_chunks() == 0


def test_delete_document(col: Collection) -> None:
    put(col, "a", ["apples grow on trees", "apples are red"])
    put(col, "b", ["bananas are yellow"])
    gen = col.generation()
    with col.writer(timeout=2) as w:
        assert w.delete_document("a") == 2
        assert w.delete_document("nope") == -1
    assert col.generation() == gen + 1
    assert [d.source for d in col.documents()] == ["b"]
    snap = col.snapshot()
    assert snap.size == 1
    assert snap.lexical(col.term_ids(bm25_terms.terms("apples")), 5) == []
    assert [col.fetch([i])[i].source for i, _ in snap.dense(EMB.embed_query("apples red"), 5)] == ["b"]


def test_filter_ids(col: Collection) -> None:
    put(col, "a", ["page one text"], page=1)
    put(col, "b", ["page two text"], page=2)
    put(col, "c", ["page three text"], page=3)
    assert col.filter_ids() is None
    src = {r.source: r.id for d in col.documents() for r in col.chunks_of(d.source)}

    def ids(found: np.ndarray | None) -> list[int]:
        assert found is not None
        return [int(i) for i in found]

    assert ids(col.filter_ids(["a", "c"])) == [src["a"], src["c"]]
    assert ids(col.filter_ids(page_min=2)) == [src["b"], src["c"]]
    assert ids(col.filter_ids(["a", "b"], page_min=2, page_max=2)) == [src["b"]]


def test_stats(col: Collection) -> None:
    put(col, "a", ["apples grow on trees", "apples are red"])
    s = col.stats()
    assert (s["documents"], s["chunks"], s["embedder"]) == (1, 2, "fake-64")


def test_every_file_a_collection_writes_goes_through_the_atomic_helper(
    col: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manifest, index, BM25 counts, tombstones and state.json: each is published by ingest.atomic
    (temp, fsync, rename, fsync the folder); only SQLite and the lock file are written otherwise."""
    published: list[str] = []
    real_replace = atomic.os.replace
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (published.append(Path(b).name), real_replace(a, b))[1]
    )
    put(col, "a.txt", ["apples are red"])
    put(col, "b.txt", ["bananas are yellow", "pears are green", "plums are blue", "figs are brown"])
    with col.writer(timeout=2) as w:
        w.delete_document("a.txt")  # one row of five: tombstones only
    state = json.loads((col.path / "state.json").read_text())
    assert state["dead"] and state["dead"] in published
    snapshot_files = {p.name for p in col.path.iterdir()} - {".lock"}
    snapshot_files = {n for n in snapshot_files if not n.startswith("chunks.sqlite")}
    assert snapshot_files == {"manifest.json", "state.json", state["faiss"], state["bm25"], state["dead"]}
    assert snapshot_files - {"manifest.json"} <= set(published)  # the manifest was written by the fixture


def test_a_full_disk_undoes_the_write_says_so_and_keeps_the_rest(col: Collection) -> None:
    """SQLite's own 'database or disk is full' (its page limit stands for the disk) becomes
    NotEnoughDisk naming the document; the write is undone, what was there stays, the writer goes on."""
    from lectern.errors import NotEnoughDisk

    put(col, "a", ["apples grow on trees"])
    chunks, vectors = make_chunks("b", [f"bananas {i} " + "yellow " * 300 for i in range(40)])
    with col.writer(timeout=2) as w:
        pages = w.db.execute("PRAGMA page_count").fetchone()[0]
        w.db.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(NotEnoughDisk, match="disk filled up while writing b") as full:
            w.replace_document(doc_row("b", len(chunks)), chunks, vectors)
        assert isinstance(full.value.__cause__, sqlite3.OperationalError) and not w.db.in_transaction
        assert [d.source for d in col.documents()] == ["a"]
        w.db.execute("PRAGMA max_page_count = 1073741823")
        w.replace_document(doc_row("b", len(chunks)), chunks, vectors)
    assert [d.source for d in col.documents()] == ["a", "b"] and col.count_chunks() == 41


def test_writing_a_large_document_holds_the_index_not_its_rows(tmp_path: Path) -> None:
    """A 300 MB text file peaked at 4.6 GB: the writer kept every new row's vector and terms until
    the end, then read every row back at once to build the snapshot, and copied the index to write
    it. Now rows come back from SQLite ROWS_AT_ONCE at a time and the index is written as FAISS
    writes it: what Python holds (tracemalloc: numpy arrays and Python objects, not FAISS's own
    index) stays under twice the vectors' size (it was 5.5 times)."""
    import tracemalloc

    import faiss  # noqa: F401  # imports are not what is measured
    import scipy.sparse  # noqa: F401

    import lectern.ingest.bm25  # noqa: F401

    rows, dim = 16_000, 384
    col = Collection.create(tmp_path / "big", manifest_for(FakeEmbedder(dimension=dim), IngestSettings()))
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(3000)]

    def parts():  # type: ignore[no-untyped-def]
        for lo in range(0, rows, 256):
            n = min(256, rows - lo)
            chunks = [
                NewChunk(f"c{lo + i}", None, None, 0, 4, lo + i, "text", "", [words[j] for j in rng.integers(0, 3000, 60)])
                for i in range(n)
            ]  # fmt: skip
            yield chunks, rng.standard_normal((n, dim)).astype(np.float32)

    tracemalloc.start()
    try:
        with col.writer(timeout=2) as w:
            assert w.replace_document_parts(doc_row("big", 0), parts()) == rows
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert peak < 2 * rows * dim * 4, f"{peak:,} bytes held for {rows * dim * 4:,} bytes of vectors"
        snap = col.snapshot()
        assert snap.size == rows and snap.persisted
        probe = col.vectors([7])[7]
        assert snap.dense(probe, 1)[0][0] == 7  # the index holds the rows as written
    finally:
        col.close()


def test_a_reader_opening_a_database_while_it_is_created_waits_for_the_writer(tmp_path: Path) -> None:
    """Switching to WAL takes the file alone, and SQLite answers "database is locked" at once (no
    wait) while another connection writes: a page reading a collection that an ingest was creating
    failed so. The reader now waits for the writer, then finds the file in WAL."""
    import threading

    from lectern.ingest.faiss_store import _connect

    path = tmp_path / "chunks.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t(x)")
    writer.execute("BEGIN IMMEDIATE")  # writing, in the file's first (rollback) journal mode
    writer.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # what a plain switch met
        sqlite3.connect(path, timeout=5, isolation_level=None).execute("PRAGMA journal_mode=WAL")
    tried = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the reader's first wait: let the writer finish
        tried.set()
        real_sleep(seconds)

    opened: list[sqlite3.Connection] = []
    reader = threading.Thread(target=lambda: opened.append(_connect(path)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lectern.ingest.faiss_store.time.sleep", sleep)
        reader.start()
        assert tried.wait(30)
        writer.execute("COMMIT")
        reader.join(30)
    assert opened and opened[0].execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert opened[0].execute("SELECT x FROM t").fetchall() == [(1,)]
