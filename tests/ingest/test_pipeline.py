"""Tests of ingest.pipeline with the fake embedder: report statuses, idempotence, updates, deletes, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lectern.errors import ChunkingMismatch, ChunkTooLarge, EmbedderNotFound, IndexMismatch
from lectern.ingest.embed import build_embedder
from lectern.ingest.faiss_store import WORK, Collection, Writer
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.pipeline import delete, ingest
from lectern.ingest.report import Progress
from lectern.ingest.settings import EmbedSettings, IngestSettings
from lectern.ingest.sources import source_key
from lectern.rag.retrieval import Searcher
from lectern.rag.settings import RetrievalSettings
from tests.fixtures.bad_inputs import make_bad_corpus, make_bad_tree, text_pdf

FILES = {
    "alpha.txt": "Alpha notes\n\nThe zebrafish tank is cleaned on Mondays. " * 30,
    "beta.md": "# Beta\n\n## Gardens\n\nThe marigold beds need water every evening.\n\n## Tools\n\nThe rake hangs by the door.\n",
    "gamma.html": "<html><head><title>Gamma</title></head><body><h1>Gamma</h1><p>The quokka enclosure opens at nine.</p></body></html>",
    "sub/delta.txt": "Delta\n\nThe harpsichord was tuned by Orla Penhallow in spring.\n",
}
WORD = {
    "alpha.txt": "zebrafish",
    "beta.md": "marigold",
    "gamma.html": "quokka",
    "sub/delta.txt": "harpsichord",
}


def write_corpus(root: Path, files: dict[str, str] = FILES) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def cfg() -> IngestSettings:
    return IngestSettings(
        parse_workers=0, lock_timeout_s=2.0, chunk={"chunk_tokens": 32, "overlap_tokens": 8}
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "docs")


def by_name(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {Path(r.path).name: r.status for r in report.results}


def sources_for(col_path: Path, query: str, mode: str = "bm25", k: int = 5) -> list[str]:
    col = Collection.open(col_path)
    try:
        hits = Searcher(col, FakeEmbedder(), RetrievalSettings()).search(query, k=k, mode=mode)
        return [Path(h.chunk.source).name for h in hits]
    finally:
        col.close()


def chunk_rows(col_path: Path) -> list[tuple[int, str, str]]:
    col = Collection.open(col_path)
    try:
        return col.db.execute("SELECT id, chunk_id, source FROM chunks ORDER BY id").fetchall()
    finally:
        col.close()


def test_first_ingest_adds_every_file(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    report = ingest([corpus], tmp_path / "col", FakeEmbedder(), cfg)
    assert by_name(report) == {Path(n).name: "added" for n in FILES}
    assert report.ok and report.chunks == sum(r.chunks for r in report.results) > len(FILES)
    col = Collection.open(tmp_path / "col")
    try:
        docs = {Path(d.source).name: d for d in col.documents()}
        assert set(docs) == {Path(n).name for n in FILES}
        for d in docs.values():  # documents.chunks agrees with the chunks table
            assert d.chunks == len(col.chunks_of(d.source)) > 0
        assert docs["alpha.txt"].source == source_key(corpus / "alpha.txt")
    finally:
        col.close()


def test_reingest_is_idempotent(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    embedder = FakeEmbedder()
    ingest([corpus], tmp_path / "col", embedder, cfg)
    before = chunk_rows(tmp_path / "col")
    calls = embedder.calls
    again = ingest([corpus], tmp_path / "col", embedder, cfg)
    assert set(by_name(again).values()) == {"unchanged"}
    assert embedder.calls == calls  # nothing re-embedded
    after = chunk_rows(tmp_path / "col")
    assert after == before
    assert len({cid for _, cid, _ in after}) == len(after)


def test_force_reembeds_without_duplicates(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    ingest([corpus], tmp_path / "col", FakeEmbedder(), cfg)
    n = len(chunk_rows(tmp_path / "col"))
    report = ingest([corpus], tmp_path / "col", FakeEmbedder(), cfg, force=True)
    assert set(by_name(report).values()) == {"updated"}
    rows = chunk_rows(tmp_path / "col")
    assert len(rows) == n == len({cid for _, cid, _ in rows})


def test_changed_file_replaces_exactly_its_chunks(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    col_path = tmp_path / "col"
    ingest([corpus], col_path, FakeEmbedder(), cfg)
    before = chunk_rows(col_path)
    gamma = source_key(corpus / "gamma.html")
    (corpus / "gamma.html").write_text(
        "<html><body><h1>Gamma</h1><p>The axolotl pond was drained in May.</p></body></html>",
        encoding="utf-8",
    )
    report = ingest([corpus], col_path, FakeEmbedder(), cfg)
    statuses = by_name(report)
    assert statuses.pop("gamma.html") == "updated"
    assert set(statuses.values()) == {"unchanged"}
    after = chunk_rows(col_path)
    assert [r for r in after if r[2] != gamma] == [r for r in before if r[2] != gamma]  # ids and rows kept
    old_gamma = {r[0] for r in before if r[2] == gamma}
    new_gamma = {r[0] for r in after if r[2] == gamma}
    assert new_gamma and not old_gamma & new_gamma  # row ids are never reused
    assert "gamma.html" not in sources_for(col_path, "quokka")
    assert sources_for(col_path, "axolotl")[:1] == ["gamma.html"]
    assert sources_for(col_path, "axolotl pond drained", mode="dense")[:1] == ["gamma.html"]


def test_delete_removes_one_source_and_rebuilds_nothing(
    corpus: Path, tmp_path: Path, cfg: IngestSettings
) -> None:
    col_path = tmp_path / "col"
    ingest([corpus], col_path, FakeEmbedder(), cfg)
    for name, word in WORD.items():
        assert sources_for(col_path, word)[:1] == [Path(name).name]
    WORK.clear()
    result = delete(col_path, [str(corpus / "alpha.txt")])
    assert WORK["rows_read"] == 0 and WORK["rebuilds"] == 0  # counted, not timed (test_delete_cost.py)
    assert result[str(corpus / "alpha.txt")] > 0
    assert "alpha.txt" not in sources_for(col_path, "zebrafish tank cleaned", mode="hybrid", k=10)
    assert "alpha.txt" not in sources_for(col_path, "zebrafish tank cleaned", mode="dense", k=10)
    for name, word in WORD.items():
        if name != "alpha.txt":
            assert sources_for(col_path, word)[:1] == [Path(name).name]
    assert delete(col_path, ["nowhere.txt"]) == {"nowhere.txt": -1}


def test_delete_accepts_the_stored_source_key(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    col_path = tmp_path / "col"
    ingest([corpus], col_path, FakeEmbedder(), cfg)
    key = source_key(corpus / "beta.md")
    assert delete(col_path, [key])[key] > 0
    assert sources_for(col_path, "marigold") == []


def test_other_embedder_is_refused(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    ingest([corpus], tmp_path / "col", FakeEmbedder(dimension=64), cfg)
    with pytest.raises(IndexMismatch, match="32 dims"):
        ingest([corpus], tmp_path / "col", FakeEmbedder(dimension=32), cfg)
    col = Collection.open(tmp_path / "col")
    try:
        with pytest.raises(IndexMismatch):
            Searcher(col, FakeEmbedder(dimension=32), RetrievalSettings())
    finally:
        col.close()


def test_chunk_size_must_fit_the_window(corpus: Path, tmp_path: Path) -> None:
    too_big = IngestSettings(parse_workers=0, chunk={"chunk_tokens": 250})
    with pytest.raises(ChunkTooLarge, match="window"):
        ingest([corpus], tmp_path / "col", FakeEmbedder(max_tokens=254), too_big)


def test_other_chunking_is_refused(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    """The manifest records the chunking; documents cut otherwise would mix chunk sizes."""
    col_path = tmp_path / "col"
    ingest([corpus / "alpha.txt"], col_path, FakeEmbedder(), cfg)
    other = cfg.model_copy(update={"chunk": cfg.chunk.model_copy(update={"chunk_tokens": 48})})
    with pytest.raises(ChunkingMismatch) as info:
        ingest([corpus / "beta.md"], col_path, FakeEmbedder(), other)
    assert "chunk_tokens=32" in str(info.value) and "chunk_tokens=48" in str(info.value)
    assert not isinstance(info.value, IndexMismatch)  # that one means another embedder
    assert [Path(s).name for s in Collection.open(col_path).content_hashes()] == ["alpha.txt"]
    assert by_name(ingest([corpus / "beta.md"], col_path, FakeEmbedder(), cfg)) == {"beta.md": "added"}


def test_a_missing_embedder_folder_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderNotFound, match="no-such-model"):
        build_embedder(EmbedSettings(model=str(tmp_path / "no-such-model")), tmp_path)


def test_missing_path_and_failed_files_are_reported(tmp_path: Path, cfg: IngestSettings) -> None:
    docs = write_corpus(tmp_path / "docs", {"ok.txt": "Fine text about otters.\n"})
    (docs / "empty.txt").write_bytes(b"")
    report = ingest([docs, tmp_path / "missing"], tmp_path / "col", FakeEmbedder(), cfg)
    assert not report.ok
    reasons = {Path(r.path).name: r.reason for r in report.failed}
    assert "no such file" in (reasons["missing"] or "")
    assert "empty" in (reasons["empty.txt"] or "")
    assert by_name(report)["ok.txt"] == "added"
    assert report.summary()["failed"] == 2


def test_progress_is_reported(corpus: Path, tmp_path: Path, cfg: IngestSettings) -> None:
    seen: list[tuple[int, int, int]] = []

    def progress(p: Progress) -> None:
        seen.append((p.files_total, p.files_done, p.chunks_embedded))

    report = ingest([corpus], tmp_path / "col", FakeEmbedder(), cfg, progress=progress)
    assert seen[-1] == (len(FILES), len(FILES), report.chunks)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)


def test_a_pdfs_pages_are_counted_before_it_is_parsed(
    tmp_path: Path, cfg: IngestSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The progress said "pages 0" until a PDF was parsed, then all its pages at once: now its pages
    are counted up front (the page tree's /Count), and done as its chunks are embedded, with its
    bytes, so the bar moves inside one large PDF and the time left shows from its first slice."""
    from lectern.ingest import work

    monkeypatch.setattr(work, "EMBED_SLICE", 2)  # a report every two chunks
    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = shutil.copy(Path(__file__).parents[2] / "sample_docs" / "marrow_point_light.pdf", folder)
    (folder / "note.txt").write_text("The lamp was lit at dusk.\n", encoding="utf-8")
    seen: list[tuple[int, int, int, int]] = []

    def progress(p: Progress) -> None:
        seen.append((p.pages, p.pages_total, p.bytes_done, p.files_done))

    report = ingest([folder], tmp_path / "col", FakeEmbedder(), cfg, progress=progress)
    assert report.ok and report.pages == 6
    assert seen[0] == (0, 5, 0, 0)  # before anything is parsed: the PDF's five pages, no text file's yet
    assert seen[-1][:2] == (6, 6)  # the text file's page added once it was parsed
    pdf_size = Path(pdf).stat().st_size
    inside = [(pages, done) for pages, total, done, files in seen if files == 0 and 0 < done < pdf_size]
    assert len({pages for pages, _ in inside}) >= 3, seen  # pages 1, 2, ... while the PDF is embedded
    assert all(pages <= total for pages, total, _, _ in seen)
    assert [p for p, *_ in seen] == sorted(p for p, *_ in seen)


def test_bad_corpus_with_parse_worker(tmp_path: Path) -> None:
    """Each bad file fails alone with its reason; each good one is searchable; a fixed file ingests."""
    folder = tmp_path / "bad"
    expected = make_bad_corpus(folder)
    col_path = tmp_path / "col"
    report = ingest([folder], col_path, FakeEmbedder(), IngestSettings(parse_workers=1, lock_timeout_s=2.0))
    results = {Path(r.path).name: r for r in report.results}
    assert set(results) == set(expected)
    for name, want in expected.items():
        r = results[name]
        if want == "ok":
            assert r.status == "added", (name, r.reason)
        else:
            assert r.status in ("failed", "skipped"), name
            assert want in (r.reason or "").lower(), (name, r.reason)
    assert results["notes.xyz"].status == "skipped"
    assert {"encrypted.pdf", "truncated.pdf", "empty.txt", "binary.txt"} <= {
        Path(r.path).name for r in report.failed
    }
    # good files are searchable: a distinctive word brings back its source
    for name, query in {
        "good.txt": "Biscuit lighthouse keeper cat",
        "good.md": "lens-room stairs sleeps",
        "good.pdf": "ferry leaves morning",
        "latin1.txt": "garçon crème brûlée",
        "empty_password.pdf": "ferry leaves morning",
        "huge_line.txt": "tide tables printed spring",
    }.items():
        assert name in sources_for(col_path, query, k=10), name
    col = Collection.open(col_path)  # the collection opens and agrees with itself
    try:
        assert {Path(d.source).name for d in col.documents()} == {n for n, w in expected.items() if w == "ok"}
        assert col.snapshot().size == col.count_chunks()
    finally:
        col.close()
    # fix one file: the next ingest adds it and leaves the good ones alone
    (folder / "truncated.pdf").write_bytes(text_pdf())
    (folder / "encrypted.pdf").unlink()
    again = ingest(
        [folder / "truncated.pdf", folder / "good.txt"],
        col_path,
        FakeEmbedder(),
        IngestSettings(parse_workers=0),
    )
    assert by_name(again) == {"truncated.pdf": "added", "good.txt": "unchanged"}
    assert "truncated.pdf" in sources_for(col_path, "ferry leaves morning", k=10)


# -- the folder walk: links, loops, unreadable folders -----------------------------------------------


def test_awkward_paths_are_each_reported_and_the_rest_ingested(tmp_path: Path, cfg: IngestSettings) -> None:
    """A link loop used to crash the whole ingest (OSError from the walk); dangling links were skipped
    without a word; a link to a file outside the folder was ingested under the target's path."""
    expected = make_bad_tree(tmp_path / "docs", tmp_path / "elsewhere")
    col_path = tmp_path / "col"
    report = ingest([tmp_path / "docs"], col_path, FakeEmbedder(), cfg)
    results = {Path(r.path).relative_to(tmp_path / "docs").as_posix(): r for r in report.results}
    assert set(results) == set(expected)
    for rel, want in expected.items():
        r = results[rel]
        if want == "ok":
            assert r.status == "added", (rel, r.reason)
        else:
            assert r.status == "skipped" and want in (r.reason or ""), (rel, r.status, r.reason)
    assert report.ok  # skipped paths are reported, not failures
    col = Collection.open(col_path)
    try:
        assert [d.source for d in col.documents()] == [source_key(tmp_path / "docs" / "good.txt")]
    finally:
        col.close()


def test_follow_links_ingests_outside_targets_and_says_where_they_are_stored(
    tmp_path: Path, cfg: IngestSettings
) -> None:
    make_bad_tree(tmp_path / "docs", tmp_path / "elsewhere")
    report = ingest(
        [tmp_path / "docs"], tmp_path / "col", FakeEmbedder(), cfg.model_copy(update={"follow_links": True})
    )
    secret = source_key(tmp_path / "elsewhere" / "secret.txt")
    results = {Path(r.path).relative_to(tmp_path / "docs").as_posix(): r for r in report.results}
    # the same outside file is reachable as a linked file and inside a linked folder: stored once,
    # and the report says under which path
    added = [r for r in results.values() if r.status == "added" and r.warnings]
    assert len(added) == 1 and added[0].warnings == [f"a symbolic link: stored as {secret}"]
    other = (
        "outside_folder/secret.txt" if Path(added[0].path).name == "outside_file.txt" else "outside_file.txt"
    )
    assert results[other].status == "skipped" and "same file as" in (results[other].reason or "")
    assert sources_for(tmp_path / "col", "spare key blue pot") == ["secret.txt"]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path: Path) -> None:
    """Root reads every folder: the walk runs in a child without the capabilities that bypass modes."""
    docs = write_corpus(tmp_path / "docs", {"ok.txt": "Readable otters.\n", "locked/hidden.txt": "x\n"})
    (docs / "locked").chmod(0)
    code = (
        "import sys, json; from pathlib import Path; from lectern.ingest.walk import iter_files; "
        "w = iter_files(Path(sys.argv[1]), [], []); "
        "print(json.dumps([[str(p) for p in w.files], [[str(s.path), s.reason] for s in w.skipped]]))"
    )
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if drop and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder unreadable")
    try:
        out = subprocess.run(
            [*drop, sys.executable, "-c", code, str(docs)], capture_output=True, text=True, check=True
        ).stdout
    finally:
        (docs / "locked").chmod(0o755)
    files, skipped = json.loads(out)
    assert files == [str(docs / "ok.txt")]
    assert skipped == [[str(docs / "locked"), "cannot list folder: Permission denied"]]


# -- long text files: a batch at a time ---------------------------------------------------------------


class CountingEmbedder(FakeEmbedder):
    """The fake embedder, counting the texts of each call: the largest batch bounds what is held."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.batches.append(len(texts))
        return super().embed(texts)


def long_text(paragraphs: int) -> str:
    return "Long notes\n\n" + "".join(
        f"Paragraph {i} tells of lantern{i} and the keeper's {i % 7} cats. It ends here.\n\n"
        for i in range(paragraphs)
    )


def stored_chunks(col_path: Path) -> list[tuple[str, int, int, str]]:
    col = Collection.open(col_path)
    try:
        rows = col.db.execute('SELECT chunk_id, start, "end", text FROM chunks ORDER BY ordinal').fetchall()
        return [tuple(r) for r in rows]
    finally:
        col.close()


def test_a_long_text_file_is_written_a_batch_at_a_time_with_the_same_chunks(
    tmp_path: Path, cfg: IngestSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 50 MB text file peaked at 6.4 GB: the whole file was tokenized in one call and all its
    chunks built, then written at once. Past ingest.stream_bytes it now goes a segment of text and a
    batch of EMBED_SLICE chunks at a time (counted, not timed), in one transaction; the chunks (ids,
    offsets, texts) are exactly those of the whole-file path."""
    from lectern.ingest import chunk, parse
    from lectern.ingest.loaders import SEGMENT_CHARS
    from lectern.ingest.wordpiece import word_offsets
    from lectern.ingest.work import EMBED_SLICE

    tokenized: list[int] = []  # characters per tokenizer call
    written: list[int] = []  # chunks per write

    def counting_offsets(texts):  # type: ignore[no-untyped-def]
        tokenized.append(sum(map(len, texts)))
        return word_offsets(texts)

    def counting_parts(self, doc, parts):  # type: ignore[no-untyped-def]
        def counted():  # type: ignore[no-untyped-def]
            for chunks, vectors in parts:
                written.append(len(chunks))
                yield chunks, vectors

        return real_parts(self, doc, counted())

    real_parts = Writer.replace_document_parts
    monkeypatch.setattr(Writer, "replace_document_parts", counting_parts)
    monkeypatch.setitem(parse._WORKER_TOKENIZER, None, counting_offsets)
    monkeypatch.setattr(chunk, "TOKENIZE_CHARS", SEGMENT_CHARS)  # one segment a call: easy to check

    text = long_text(12_000)  # about 1 MB: several segments of SEGMENT_CHARS
    assert len(text) > 3 * SEGMENT_CHARS
    docs = write_corpus(tmp_path / "docs", {"long.txt": text})
    whole, streamed = CountingEmbedder(), CountingEmbedder()
    r1 = ingest([docs], tmp_path / "whole", whole, cfg)
    tokenized.clear()
    written.clear()
    r2 = ingest([docs], tmp_path / "streamed", streamed, cfg.model_copy(update={"stream_bytes": 1000}))
    assert r1.ok and r2.ok and r1.chunks == r2.chunks > 4 * EMBED_SLICE
    assert max(tokenized) <= SEGMENT_CHARS and sum(tokenized) >= len(text.strip())
    assert max(written) <= EMBED_SLICE and sum(written) == r2.chunks
    assert stored_chunks(tmp_path / "whole") == stored_chunks(tmp_path / "streamed")
    assert max(streamed.batches) <= EMBED_SLICE and sum(streamed.batches) == r2.chunks
    starts = [s for _, s, _, _ in stored_chunks(tmp_path / "streamed")]
    assert starts == sorted(starts) and starts[-1] > 3 * SEGMENT_CHARS  # offsets into the whole text
    assert sources_for(tmp_path / "streamed", "lantern11999") == ["long.txt"]
    # changed, it replaces exactly its chunks; an empty one fails and leaves the old version in place
    (docs / "long.txt").write_text(long_text(11_000))
    r3 = ingest([docs], tmp_path / "streamed", streamed, cfg.model_copy(update={"stream_bytes": 1000}))
    assert [r.status for r in r3.results] == ["updated"]
    assert sources_for(tmp_path / "streamed", "lantern11999") == []
    assert len(stored_chunks(tmp_path / "streamed")) == r3.chunks
    (docs / "long.txt").write_text(" \n" * 2000)
    r4 = ingest([docs], tmp_path / "streamed", streamed, cfg.model_copy(update={"stream_bytes": 1000}))
    assert [r.status for r in r4.results] == ["failed"] and "empty" in (r4.results[0].reason or "")
    assert len(stored_chunks(tmp_path / "streamed")) == r3.chunks
