"""Tests of rag.retrieval with the fake embedder: modes, filters before the top-k cut, MMR, the retriever."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from lectern.errors import DocumentNotFound, UnknownKey
from lectern.ingest import bm25_terms
from lectern.rag.retrieval import MODES, Filters, LecternRetriever, Searcher, one_edit_away
from tests.fixtures.bad_inputs import build_pdf

NOISY = "Noisy\n\n" + "\n\n".join(f"Orchard apples harvest apples orchard number {i}." for i in range(12))
QUIET = (
    "Quiet\n\nA single orchard note about pears and plums in the walled garden by the river bank.\n\n"
    "Another apples remark, far from the rest, written on a rainy Sunday afternoon in the shed.\n"
)
DUPLICATE = "Cider\n\nApple cider pressing in the autumn barn with oak barrels.\n"
DIVERSE = {
    "pruning.txt": "Pruning\n\nApple trees are pruned in winter with sharp shears.\n",
    "pests.txt": "Pests\n\nApple scab and codling moth damage the autumn crop.\n",
    "storage.txt": "Storage\n\nApples keep for months in a cool dark cellar.\n",
}


@pytest.fixture
def ws(fake_ws, tmp_path: Path):  # type: ignore[no-untyped-def]
    fake_ws.settings.ingest.chunk.chunk_tokens = 16
    fake_ws.settings.ingest.chunk.overlap_tokens = 0
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "noisy.txt").write_text(NOISY)
    (docs / "quiet.txt").write_text(QUIET)
    for i in range(5):
        (docs / f"cider{i}.txt").write_text(DUPLICATE)
    for name, text in DIVERSE.items():
        (docs / name).write_text(text)
    pages = [[f"Page {p}: the orchard apples of season {p} were counted."] for p in range(1, 6)]
    (docs / "ledger.pdf").write_bytes(build_pdf(pages, title="Ledger"))
    report = fake_ws.ingest([docs])
    assert report.ok and len(report.added) == 11
    return fake_ws


def names(hits) -> list[str]:  # type: ignore[no-untyped-def]
    return [Path(h.chunk.source).name for h in hits]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_returns_k_sorted_results(ws, mode: str) -> None:  # type: ignore[no-untyped-def]
    hits = ws.search("orchard apples harvest", k=6, mode=mode)
    assert len(hits) == 6
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({h.chunk.chunk_id for h in hits}) == 6
    assert names(hits)[0] == "noisy.txt"
    assert all(h.collection == "test" for h in hits)


def test_scores_carry_their_parts(ws) -> None:  # type: ignore[no-untyped-def]
    dense = ws.search("orchard apples", k=3, mode="dense")
    assert all(h.dense == h.score and h.lexical is None for h in dense)
    lexical = ws.search("orchard apples", k=3, mode="bm25")
    assert all(h.lexical == h.score and h.dense is None for h in lexical)
    hybrid = ws.search("orchard apples", k=3, mode="hybrid")
    assert all(h.dense is not None and h.lexical is not None and 0.0 <= h.score <= 1.0 for h in hybrid)


def test_hybrid_finds_a_lexical_only_match(ws) -> None:  # type: ignore[no-untyped-def]
    assert names(ws.search("codling moth scab", k=3, mode="hybrid"))[0] == "pests.txt"
    assert names(ws.search("cellar", k=3, mode="bm25"))[0] == "storage.txt"


@pytest.mark.parametrize("mode", MODES)
def test_source_filter_applies_before_the_top_k_cut(ws, mode: str) -> None:  # type: ignore[no-untyped-def]
    query = "orchard apples harvest"
    unfiltered = ws.search(query, k=2, mode=mode)
    assert set(names(unfiltered)) == {"noisy.txt"}  # noisy alone would fill the top k
    source = next(d.source for d in ws.documents() if d.source.endswith("quiet.txt"))
    allowed = len(ws.collection().chunks_of(source))
    assert allowed >= 2
    hits = ws.search(query, k=2, mode=mode, sources=[source])
    assert names(hits) == ["quiet.txt", "quiet.txt"]
    hits = ws.search(query, k=allowed + 3, mode=mode, sources=[source])  # fewer allowed chunks than k
    assert set(names(hits)) == {"quiet.txt"}
    assert len(hits) == (allowed if mode != "bm25" else 2)  # BM25 returns only chunks with a query term


def test_a_source_filter_naming_no_document_is_an_error(ws) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        DocumentNotFound, match=r"no document 'mising\.txt' in collection 'test' \(known: .*cider0\.txt"
    ):
        ws.search("orchard", sources=["mising.txt"])


@pytest.mark.parametrize("mode", MODES)
def test_page_filter(ws, mode: str) -> None:  # type: ignore[no-untyped-def]
    hits = ws.search("orchard apples season counted", k=3, mode=mode, page_min=2, page_max=4)
    assert len(hits) == 3
    assert {h.chunk.page for h in hits} == {2, 3, 4}
    assert set(names(hits)) == {"ledger.pdf"}  # pageless chunks fail a page filter


def test_filters_dataclass() -> None:
    assert Filters().empty
    assert not Filters(page_min=1).empty and not Filters(sources=("a",)).empty


def test_mmr_prefers_diverse_results(ws) -> None:  # type: ignore[no-untyped-def]
    ws.settings.retrieval.mmr_lambda = 0.3
    query = "apple cider autumn barn"
    plain = ws.search(query, k=4, mode="dense", mmr=False)
    texts = [h.chunk.text for h in plain]
    assert len(set(texts)) == 1  # four copies of the same cider chunk
    diverse = ws.search(query, k=4, mode="dense", mmr=True)
    assert len(diverse) == 4
    dtexts = [h.chunk.text for h in diverse]
    assert len(set(dtexts)) == 4, dtexts  # no two identical chunks when different ones exist
    assert diverse[0].chunk.text == texts[0]  # the most relevant one still leads


def test_unknown_mode_is_refused(ws) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownKey, match="hybrid"):
        ws.search("apples", mode="semantic")


def test_min_score_drops_weak_hits(ws) -> None:  # type: ignore[no-untyped-def]
    ws.settings.retrieval.min_score = 0.99
    hits = ws.search("orchard apples harvest", k=10, mode="hybrid")
    assert hits and all(h.score >= 0.99 for h in hits) and len(hits) < 10


def test_searcher_refuses_another_embedder(ws) -> None:  # type: ignore[no-untyped-def]
    from lectern.errors import IndexMismatch
    from lectern.ingest.fake_embed import FakeEmbedder

    with pytest.raises(IndexMismatch):
        Searcher(ws.collection(), FakeEmbedder(dimension=16), ws.settings.retrieval)


def test_lectern_retriever_is_a_langchain_retriever(ws) -> None:  # type: ignore[no-untyped-def]
    retriever = ws.retriever(k=3, mode="hybrid")
    assert isinstance(retriever, BaseRetriever) and isinstance(retriever, LecternRetriever)
    docs = retriever.invoke("Which pages count the orchard apples of each season?")
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    for d in docs:
        assert {"chunk_id", "source", "page", "heading", "title", "start", "end", "score"} <= set(d.metadata)
        assert d.id == d.metadata["chunk_id"] and d.page_content
        assert d.metadata["end"] - d.metadata["start"] == len(d.page_content)
    ledger = [d for d in docs if d.metadata["source"].endswith("ledger.pdf")]
    assert ledger and all(d.metadata["title"] == "Ledger" and d.metadata["page"] for d in ledger)
    filtered = ws.retriever(k=2, filters=Filters(page_min=5)).invoke("orchard apples")
    assert [d.metadata["page"] for d in filtered] == [5]
    batch = retriever.batch(["apples", "pears"])
    assert len(batch) == 2 and all(batch)


@pytest.mark.parametrize("mmr", [False, True])
def test_a_delete_between_snapshot_and_vector_read_does_not_misalign_scores(
    ws, monkeypatch: pytest.MonkeyPatch, mmr: bool
) -> None:  # type: ignore[no-untyped-def]
    """Search reads the snapshot, then stored vectors; a delete landing in between used to shift every
    vector read after the deleted row onto the wrong chunk (they were matched by position)."""
    import numpy as np

    from lectern.ingest.pipeline import delete

    col = ws.collection()
    ws.settings.retrieval.fetch_k = 1  # few dense candidates: the lexical ones need their vectors read
    query = "orchard codling cellar"
    dense_top = {h.chunk.id for h in ws.search(query, k=3, mode="dense")}
    lexical = [h for h in ws.search(query, k=3, mode="bm25") if h.chunk.id not in dense_top]
    assert [names([h])[0] for h in lexical[:2]] == ["storage.txt", "pests.txt"]  # read in this order
    stale = col.snapshot()  # the search took its snapshot just before the delete
    monkeypatch.setattr(type(col), "snapshot", lambda self: stale)
    assert delete(ws.path, [lexical[0].chunk.source])[lexical[0].chunk.source] == 1

    qvec = ws.embedder.embed_query(query)
    hits = ws.search(query, k=3, mode="hybrid", mmr=mmr)
    assert "pests.txt" in names(hits) and "storage.txt" not in names(hits)
    for h in hits:
        stored = col.db.execute("SELECT vector FROM chunks WHERE id = ?", (h.chunk.id,)).fetchone()[0]
        assert h.dense == pytest.approx(float(np.frombuffer(stored, dtype=np.float32) @ qvec), abs=1e-5)


def test_one_edit_away() -> None:
    near = one_edit_away("netwon")
    assert {"newton", "netwo", "netwonn", "nettwon", "metwon"} <= near  # swap, delete, insert, replace
    assert "netwon" not in near
    # "abcd": 4 deletions, 3 swaps, 4 x 25 substitutions, 5 x 26 insertions less the 4 counted twice
    # (an "a" inserted before or after the "a" is the same string).
    assert len(one_edit_away("abcd")) == 4 + 3 + 100 + 126


def test_spelled_corrects_unseen_terms_to_the_commonest_near_term(ws) -> None:  # type: ignore[no-untyped-def]
    searcher = ws.searcher()
    # "orchrd" (a letter missing) and "cellra" (two swapped) are one edit from the collection's words;
    # "pruend" and "apples" are left: the first is two edits away, the second is known.
    terms = bm25_terms.terms("orchrd cellra pruend apples")
    assert searcher.spelled(terms) == [
        *bm25_terms.terms("orchard cellar"),
        "pruend",
        *bm25_terms.terms("apples"),
    ]
    assert searcher.spelled(bm25_terms.terms("moth 1990s")) == bm25_terms.terms(
        "moth 1990s"
    )  # short or not a word


def test_a_misspelled_name_still_finds_its_passage_by_bm25(ws) -> None:  # type: ignore[no-untyped-def]
    hits = ws.search("sheras", k=1, mode="bm25")  # "shears" with two letters swapped
    assert names(hits) == ["pruning.txt"]


def test_spelling_can_be_turned_off(ws) -> None:  # type: ignore[no-untyped-def]
    ws.settings.retrieval.spelling = False
    assert ws.searcher().spelled(["orchrd"]) == ["orchrd"]
    assert ws.search("sheras", k=1, mode="bm25") == []
