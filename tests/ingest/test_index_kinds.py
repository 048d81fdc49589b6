"""The hnsw and ivf index kinds: build, search (filters too), delete, reopen, grow; work is counted."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from lectern.ingest.collection import manifest_for
from lectern.ingest.faiss_store import WORK, Collection
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.pipeline import delete
from lectern.ingest.settings import IngestSettings
from lectern.ingest.snapshot import base_of
from lectern.ingest.stores import DocumentRow, NewChunk

EMB = FakeEmbedder()
PER_DOC = 40
BASES = {"hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}


def add_docs(col: Collection, first: int, n: int) -> None:
    """n synthetic documents of PER_DOC chunks, with random unit vectors (exact answers known)."""
    rng = np.random.default_rng(first)
    with col.writer(timeout=5) as w:
        for d in range(first, first + n):
            chunks = [
                NewChunk(f"d{d}-{i}", None, None, 0, 1, i, f"doc{d} part{i}", "", [f"doc{d}", f"part{i}"])
                for i in range(PER_DOC)
            ]
            vectors = rng.standard_normal((PER_DOC, EMB.dimension)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            row = DocumentRow(f"doc{d}", str(d), None, "text", 1, PER_DOC, 1, [], 0.0)
            w.replace_document(row, chunks, vectors)


def stored(col: Collection, source: str) -> list[tuple[int, np.ndarray]]:
    rows = col.db.execute("SELECT id, vector FROM chunks WHERE source = ? ORDER BY id", (source,)).fetchall()
    return [(int(i), np.frombuffer(v, dtype=np.float32)) for i, v in rows]


def finds_itself(path: Path, source: str) -> None:
    """Each of a few chunks, queried by its own vector, comes first (score 1); filters hold."""
    col = Collection.open(path)
    try:
        snap = col.snapshot()
        for row_id, vector in stored(col, source)[:5]:
            top = snap.dense(vector, 3)
            assert top[0][0] == row_id and top[0][1] == pytest.approx(1.0, abs=1e-4)
            allowed = col.filter_ids([source])
            assert allowed is not None
            assert {i for i, _ in snap.dense(vector, 10, allowed)} <= set(allowed.tolist())
    finally:
        col.close()


@pytest.fixture(params=["hnsw", "ivf"])
def built(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    kind = request.param
    col = Collection.create(tmp_path / "col", manifest_for(EMB, IngestSettings(index={"kind": kind})))
    try:
        add_docs(col, 0, 30)  # 1200 rows: enough to train IVF
        assert isinstance(base_of(col.snapshot().index), BASES[kind])
    finally:
        col.close()
    return kind, tmp_path / "col"


def test_build_search_and_reopen(built: tuple[str, Path]) -> None:
    kind, path = built
    finds_itself(path, "doc7")
    col = Collection.open(path)  # a new reader loads the written files, not a rebuild
    try:
        WORK.clear()
        snap = col.snapshot()
        assert snap.persisted and WORK["rebuilds"] == 0 and isinstance(base_of(snap.index), BASES[kind])
        assert snap.lexical(col.term_ids(["doc4"]), 50)[0][0] in {i for i, _ in stored(col, "doc4")}
    finally:
        col.close()


def test_delete_then_reopen(built: tuple[str, Path]) -> None:
    _, path = built
    col = Collection.open(path)
    gone = stored(col, "doc3")
    col.close()
    WORK.clear()
    assert delete(path, ["doc3"]) == {"doc3": PER_DOC}
    assert WORK["rows_read"] == 0 and WORK["full_writes"] == 0  # tombstones for every kind
    col = Collection.open(path)
    try:
        snap = col.snapshot()
        assert snap.persisted and snap.size == 29 * PER_DOC
        for row_id, vector in gone[:5]:
            assert row_id not in {i for i, _ in snap.dense(vector, 10)}
        assert snap.lexical(col.term_ids(["doc3"]), 5) == []
    finally:
        col.close()
    finds_itself(path, "doc8")


def test_adds_after_deletes(built: tuple[str, Path]) -> None:
    """An add updates the index in memory; neither kind can drop rows, so the tombstones stay."""
    _, path = built
    delete(path, ["doc1"])
    col = Collection.open(path)
    try:
        WORK.clear()
        add_docs(col, 100, 1)
        assert WORK["rows_read"] == 0 and WORK["full_writes"] == 1
        state = json.loads((path / "state.json").read_text())
        assert state["dead"] and state["rows"] == 31 * PER_DOC  # the index still holds doc1's rows
        assert len(col.snapshot().dead) == PER_DOC and col.snapshot().size == 30 * PER_DOC
    finally:
        col.close()
    finds_itself(path, "doc100")
    finds_itself(path, "doc2")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_rebuilt_once_a_quarter_is_dead(tmp_path: Path, kind: str) -> None:
    col = Collection.create(tmp_path / "col", manifest_for(EMB, IngestSettings(index={"kind": kind})))
    try:
        add_docs(col, 0, 32)
    finally:
        col.close()
    WORK.clear()
    delete(tmp_path / "col", [f"doc{d}" for d in range(6)])
    assert WORK["rebuilds"] == 0
    delete(tmp_path / "col", ["doc6", "doc7", "doc8"])  # 9 of 32 documents dead: beyond a quarter
    assert WORK["rebuilds"] == 1 and WORK["rows_read"] == 23 * PER_DOC
    assert json.loads((tmp_path / "col" / "state.json").read_text())["dead"] is None
    finds_itself(tmp_path / "col", "doc15")


def test_ivf_trains_once_it_has_enough_rows(tmp_path: Path) -> None:
    col = Collection.create(tmp_path / "col", manifest_for(EMB, IngestSettings(index={"kind": "ivf"})))
    try:
        add_docs(col, 0, 10)  # 400 rows: too few to train, a flat index meanwhile
        assert isinstance(base_of(col.snapshot().index), faiss.IndexFlatIP)
        WORK.clear()
        add_docs(col, 10, 2)
        assert WORK["rebuilds"] == 0  # still flat: updated in place
        add_docs(col, 12, 20)  # 1280 rows: trained now, from SQLite
        assert WORK["rebuilds"] == 1
        assert isinstance(base_of(col.snapshot().index), faiss.IndexIVFFlat)
    finally:
        col.close()
    finds_itself(tmp_path / "col", "doc20")


def test_auto_is_flat_until_its_threshold_then_hnsw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default kind: exact while small; the write that crosses AUTO_HNSW_ROWS rebuilds it as a
    graph once, later writes add to the graph, and a reopened collection reads the graph back."""
    from lectern.ingest import snapshot

    monkeypatch.setattr(snapshot, "AUTO_HNSW_ROWS", 100)
    assert IngestSettings().index.kind == "auto"
    col = Collection.create(tmp_path / "col", manifest_for(EMB, IngestSettings()))
    try:
        add_docs(col, 0, 2)  # 80 rows
        assert isinstance(base_of(col.snapshot().index), faiss.IndexFlat)
        WORK.clear()
        add_docs(col, 2, 1)  # 120 rows: crosses
        assert isinstance(base_of(col.snapshot().index), faiss.IndexHNSWFlat)
        assert WORK["rebuilds"] == 1
        add_docs(col, 3, 1)  # 160 rows: added in place
        assert WORK["rebuilds"] == 1 and int(col.snapshot().index.ntotal) == 160
    finally:
        col.close()
    finds_itself(tmp_path / "col", "doc3")
    col = Collection.open(tmp_path / "col")
    try:
        assert isinstance(base_of(col.snapshot().index), faiss.IndexHNSWFlat)
    finally:
        col.close()
