"""What a delete costs, counted (ingest.faiss_store.WORK), never timed: a delete reads no other row back
and rewrites neither the FAISS index nor the BM25 file; the next add drops the tombstones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lectern.ingest import bm25, bm25_terms
from lectern.ingest.collection import manifest_for
from lectern.ingest.faiss_store import WORK, Collection
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.pipeline import delete
from lectern.ingest.settings import IngestSettings
from tests.ingest.test_store import put

EMB = FakeEmbedder()
N_DOCS = 12


def words(d: int, i: int) -> str:
    return f"doc{d} marker{d}x{i} shared words about topic{i % 3} and apples{d % 4}"


@pytest.fixture
def col_path(tmp_path: Path) -> Path:
    col = Collection.create(tmp_path / "col", manifest_for(EMB, IngestSettings()))
    try:
        for d in range(N_DOCS):
            put(col, f"doc{d}", [words(d, i) for i in range(8)])
    finally:
        col.close()
    return tmp_path / "col"


def files(path: Path) -> dict[str, tuple[int, int]]:
    """Snapshot files by name, with inode and modification time: rewritten files show."""
    out = {}
    for pattern in ("index-*.faiss", "bm25-*.npz", "dead-*.npy"):
        for p in path.glob(pattern):
            st = os.stat(p)
            out[p.name] = (st.st_ino, st.st_mtime_ns)
    return out


def check_matches_sqlite(path: Path) -> None:
    """A fresh reader's snapshot equals brute force over what SQLite holds: dense and BM25 alike."""
    col = Collection.open(path)
    try:
        rows = col.db.execute("SELECT id, vector, terms FROM chunks ORDER BY id").fetchall()
        snap = col.snapshot()
        assert snap.persisted and snap.size == len(rows)
        q = EMB.embed_query("doc3 marker3x1 apples3 topic1")
        truth = sorted(((float(np.frombuffer(v, dtype=np.float32) @ q), i) for i, v, _ in rows), reverse=True)
        got = snap.dense(q, 5)
        assert [round(s, 5) for _, s in got] == [round(s, 5) for s, _ in truth[:5]]
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        fresh = bm25.BM25Matrix.build(ids, [r[2] for r in rows], len(col.term_ids([])) + 10_000)
        terms = col.term_ids(bm25_terms.terms("apples3 topic1 shared marker5x2"))
        expected = dict(zip(ids.tolist(), fresh.scores(terms).tolist(), strict=True))
        assert snap.bm25_scores_for(terms, ids.tolist()) == pytest.approx(expected, rel=1e-5)
    finally:
        col.close()


def test_a_delete_writes_tombstones_not_the_index(col_path: Path) -> None:
    before = files(col_path)
    WORK.clear()
    assert delete(col_path, ["doc3"]) == {"doc3": 8}
    assert WORK["rows_read"] == 0 and WORK["rebuilds"] == 0  # no other row read back
    assert WORK["vocab_rows_read"] == 0 and WORK["full_writes"] == 0
    assert WORK["snapshot_bytes_written"] < 2_000  # the tombstone list and state.json
    after = files(col_path)
    assert {k: v for k, v in after.items() if not k.startswith("dead-")} == before  # untouched
    state = json.loads((col_path / "state.json").read_text())
    assert state["dead"] in after and state["rows"] == N_DOCS * 8
    check_matches_sqlite(col_path)  # exact: the deleted rows are gone from dense and BM25 results
    col = Collection.open(col_path)
    try:
        assert all(
            col.fetch([i])[i].source != "doc3" for i, _ in col.snapshot().dense(EMB.embed_query("doc3"), 20)
        )
    finally:
        col.close()


def test_a_reader_holding_the_collection_sees_the_delete(col_path: Path) -> None:
    reader = Collection.open(col_path)
    try:
        reader.snapshot()
        delete(col_path, ["doc5"])
        snap = reader.snapshot()
        assert snap.size == (N_DOCS - 1) * 8 and len(snap.dead) == 8
        assert snap.lexical(reader.term_ids(["doc5"]), 5) == []
    finally:
        reader.close()


def test_the_next_add_drops_the_tombstones_without_reading_rows_back(col_path: Path) -> None:
    delete(col_path, ["doc1", "doc2"])
    col = Collection.open(col_path)
    try:
        WORK.clear()
        put(col, "late", ["a late arrival about apples1"])
        assert WORK["rows_read"] == 0 and WORK["rebuilds"] == 0 and WORK["full_writes"] == 1
        state = json.loads((col_path / "state.json").read_text())
        assert state["dead"] is None and state["rows"] == col.count_chunks() == (N_DOCS - 2) * 8 + 1
        assert sorted(p.name for p in col_path.glob("dead-*.npy")) == []
    finally:
        col.close()
    check_matches_sqlite(col_path)


def test_deletes_beyond_a_quarter_compact_the_index(col_path: Path) -> None:
    WORK.clear()
    delete(col_path, ["doc0", "doc1"])
    assert WORK["full_writes"] == 0
    delete(col_path, ["doc2", "doc4"])  # 32 of 96 rows dead: searches would wade through them
    assert WORK["full_writes"] == 1 and WORK["rows_read"] == 0  # compacted in memory
    assert json.loads((col_path / "state.json").read_text())["dead"] is None
    check_matches_sqlite(col_path)


def test_a_damaged_tombstone_file_is_not_trusted(col_path: Path) -> None:
    delete(col_path, ["doc7"])
    state = json.loads((col_path / "state.json").read_text())
    (col_path / state["dead"]).write_bytes(b"garbage")
    col = Collection.open(col_path)
    try:
        snap = col.snapshot()
        assert not snap.persisted and snap.size == (N_DOCS - 1) * 8  # rebuilt from SQLite
        assert snap.lexical(col.term_ids(["doc7"]), 5) == []
    finally:
        col.close()
    put_col = Collection.open(col_path)
    try:
        put(put_col, "late", ["late words"])  # the next writer writes everything anew
    finally:
        put_col.close()
    check_matches_sqlite(col_path)
