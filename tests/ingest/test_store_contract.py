"""One contract for every store backend (ingest.store_backends.BACKENDS): the same tests on faiss and on
milvus-lite, through the Workspace with the fake embedder. The milvus runs share one milvus-lite
database per module (it starts in a few seconds), each test in collections of its own name."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lectern.errors import ChunkingMismatch, IndexMismatch
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.store_backends import BACKENDS
from lectern.rag.retrieval import Filters, Searcher
from lectern.rag.workspace import Workspace
from tests.fixtures.bad_inputs import build_pdf

pytest.importorskip("pymilvus")

APPLES = "Orchard\n\nApples ripen in the orchard; the codling moth eats the apples.\n"
PEARS = "Cellar\n\nPears keep through the winter in a cool cellar beside the turnips.\n"
LEDGER = [[f"Page {p}: the harbour ledger of season {p} counted lanterns."] for p in range(1, 6)]
_NAMES = itertools.count()


@pytest.fixture(scope="module")
def milvus_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from lectern.ingest.milvus_store import close_client

    path = tmp_path_factory.mktemp("milvus") / "milvus.db"
    yield path
    close_client(str(path))


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, settings: Any) -> dict[str, Any]:
    """The `store` settings of one backend (milvus: the module's shared database)."""
    if request.param == "milvus":
        return {"backend": "milvus", "uri": str(request.getfixturevalue("milvus_db"))}
    return {"backend": request.param}


@pytest.fixture
def make_ws(settings: Any, store: dict[str, Any]) -> Iterator[Any]:
    """Workspaces on the backend under test, each over a collection no other test uses."""
    made: list[Workspace] = []

    def make(suffix: str = "", **overrides: Any) -> Workspace:
        merged = settings.model_copy(update={"store": settings.store.model_copy(update=store), **overrides})
        ws = Workspace(collection=f"c{next(_NAMES)}{suffix}", settings=merged)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.drop()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "apples.txt").write_text(APPLES)
    (folder / "pears.txt").write_text(PEARS)
    (folder / "ledger.pdf").write_bytes(build_pdf(LEDGER, title="Ledger"))
    return folder


def names(hits: list[Any]) -> list[str]:
    return [Path(h.chunk.source).name for h in hits]


def chunk_ids(ws: Workspace) -> dict[str, list[str]]:
    col = ws.collection()
    return {Path(d.source).name: [c.chunk_id for c in col.chunks_of(d.source)] for d in col.documents()}


def test_ingest_then_search_each_mode(make_ws: Any, docs: Path) -> None:
    ws = make_ws()
    report = ws.ingest([docs])
    assert report.ok and len(report.added) == 3
    stats = ws.collection().stats()
    assert stats["documents"] == 3 and stats["chunks"] == ws.collection().count_chunks() >= 7
    assert [Path(d.source).name for d in ws.documents()] == ["apples.txt", "ledger.pdf", "pears.txt"]
    for mode in ("dense", "bm25", "hybrid"):
        hits = ws.search("codling moth apples", k=3, mode=mode)
        assert names(hits)[0] == "apples.txt", mode
        assert hits[0].chunk.title and hits[0].collection == ws.name
    pdf = next(d for d in ws.documents() if d.source.endswith("ledger.pdf"))
    assert pdf.title == "Ledger" and pdf.pages == 5 and pdf.chunks == len(chunk_ids(ws)["ledger.pdf"])


def test_reingest_adds_no_duplicates(make_ws: Any, docs: Path) -> None:
    ws = make_ws()
    ws.ingest([docs])
    before, count = chunk_ids(ws), ws.collection().count_chunks()
    again = ws.ingest([docs])
    assert len(again.unchanged) == 3 and not again.added
    forced = ws.ingest([docs], force=True)
    assert len(forced.updated) == 3
    assert chunk_ids(ws) == before and ws.collection().count_chunks() == count


def test_a_changed_file_replaces_exactly_its_chunks(make_ws: Any, docs: Path) -> None:
    ws = make_ws()
    ws.ingest([docs])
    before = chunk_ids(ws)
    (docs / "apples.txt").write_text("Orchard\n\nQuinces replaced the apples; the grafting took in spring.\n")
    report = ws.ingest([docs])
    assert [Path(r.path).name for r in report.updated] == ["apples.txt"] and len(report.unchanged) == 2
    after = chunk_ids(ws)
    assert after["pears.txt"] == before["pears.txt"] and after["ledger.pdf"] == before["ledger.pdf"]
    assert after["apples.txt"] != before["apples.txt"]
    assert names(ws.search("quinces grafting", k=1, mode="bm25")) == ["apples.txt"]
    assert ws.search("codling moth", k=3, mode="bm25") == []  # the old text is gone
    assert ws.collection().count_chunks() == sum(len(v) for v in after.values())


def test_delete_one_source_leaves_the_rest(make_ws: Any, docs: Path) -> None:
    ws = make_ws()
    ws.ingest([docs])
    before = chunk_ids(ws)
    removed = ws.delete([str(docs / "apples.txt"), str(docs / "nothing.txt")])
    assert removed == {str(docs / "apples.txt"): len(before["apples.txt"]), str(docs / "nothing.txt"): -1}
    assert chunk_ids(ws) == {k: v for k, v in before.items() if k != "apples.txt"}
    for mode in ("dense", "bm25", "hybrid"):
        assert "apples.txt" not in names(ws.search("codling moth apples", k=10, mode=mode))


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filters_apply_inside_the_search(make_ws: Any, docs: Path, mode: str) -> None:
    ws = make_ws()
    ws.ingest([docs])
    pears = ws.search("codling moth apples cellar", k=2, mode=mode, sources=[docs / "pears.txt"])
    assert names(pears) == ["pears.txt"]  # the filter comes before the cut: the best hits are elsewhere
    paged = ws.search("harbour ledger lanterns season", k=10, mode=mode, page_min=2, page_max=3)
    assert names(paged) and set(names(paged)) == {"ledger.pdf"}  # pageless chunks fail a page filter
    assert {h.chunk.page for h in paged} <= {2, 3}
    mixed = ws.searcher().search(
        "ledger apples", k=10, mode=mode, filters=Filters((str(docs / "ledger.pdf"),), page_min=5)
    )
    assert [h.chunk.page for h in mixed] == [5]


def test_hybrid_finds_what_either_search_finds(make_ws: Any, docs: Path) -> None:
    ws = make_ws()
    ws.ingest([docs])
    lexical = names(ws.search("turnips", k=1, mode="bm25"))
    assert lexical == ["pears.txt"]
    hybrid = ws.search("turnips", k=3, mode="hybrid")
    assert names(hybrid)[0] == "pears.txt"
    assert hybrid[0].dense is not None  # the evidence gate reads the dense score
    assert hybrid == sorted(hybrid, key=lambda h: -h.score)


def test_another_embedder_or_chunking_is_refused_alike(make_ws: Any, docs: Path) -> None:
    ws = make_ws()
    ws.ingest([docs])
    with pytest.raises(IndexMismatch, match=r"was built with embedder fake-64 \(64 dims\), not fake-16"):
        Searcher(ws.collection(), FakeEmbedder(dimension=16), ws.settings.retrieval)
    from lectern.ingest.pipeline import ingest

    with pytest.raises(IndexMismatch, match="use the same profile or a new collection"):
        ingest([docs], ws.target, FakeEmbedder(dimension=16), ws.settings.ingest)
    other = ws.settings.ingest.model_copy(deep=True)
    other.chunk.chunk_tokens = 50
    with pytest.raises(ChunkingMismatch):
        ingest([docs], ws.target, ws.embedder, other)


def test_reopen_after_close(make_ws: Any, docs: Path, store: dict[str, Any]) -> None:
    ws = make_ws()
    ws.ingest([docs])
    hits = [(h.chunk.chunk_id, round(h.score, 5)) for h in ws.search("cellar pears", k=3)]
    chunks = ws.collection().count_chunks()
    ws.close()
    if store["backend"] == "milvus":  # as a new process would: a new client, collections not loaded
        from lectern.ingest.milvus_store import close_client

        close_client(store["uri"])
    again = Workspace(collection=ws.name, settings=ws.settings)
    assert again.exists and again.collection().count_chunks() == chunks
    assert [(h.chunk.chunk_id, round(h.score, 5)) for h in again.search("cellar pears", k=3)] == hits
    again.close()


def test_two_collections_are_apart(make_ws: Any, docs: Path) -> None:
    first, second = make_ws("-a.1"), make_ws("_b")
    first.ingest([docs / "apples.txt"])
    second.ingest([docs / "pears.txt", docs / "ledger.pdf"])
    assert {first.name, second.name} <= set(first.collections())
    assert [Path(d.source).name for d in first.documents()] == ["apples.txt"]
    assert names(second.search("codling moth apples", k=10, mode="bm25")) == []
    assert names(first.search("codling moth apples", k=1)) == ["apples.txt"]
    first.drop()
    assert not first.exists and second.exists and first.name not in second.collections()
