"""Tests of ingest.chunk with the real MiniLM tokenizer: sizes, overlap, exact offsets, stable ids."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from lectern.ingest.chunk import Chunk, chunk_document, split_unit
from lectern.ingest.document import LoadedDocument, Unit
from lectern.ingest.loaders import load
from lectern.ingest.wordpiece import word_offsets
from tests.conftest import SAMPLE_DOCS
from tests.fixtures.bad_inputs import build_pdf

CHUNK_TOKENS = 40
OVERLAP = 10
PROSE_WORDS = """the keeper lit lamp harbour tower granite stairs lens rotation fog signal
internationalization 1852 Varley's naïve café weather storm ship crew rescued"""
LONG_WORDS = "internationalization antidisestablishmentarianism quixotic zephyr counterrevolutionaries"


def prose(seed: int, sentences: int = 60) -> str:
    """Deterministic English-like text with sentence ends, numbers and long words."""
    rng = random.Random(seed)
    words = re.findall(r"\S+", PROSE_WORDS)
    out = []
    for _ in range(sentences):
        n = rng.randint(4, 25)
        out.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + ".")
    paras = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paras)


def doc_of(*texts: str, pages: bool = False) -> LoadedDocument:
    units = tuple(Unit(t, page=i + 1 if pages else None, heading=f"H{i}") for i, t in enumerate(texts))
    return LoadedDocument(Path("doc.txt"), "text", "Doc", units, pages=len(units))


def unit_of(doc: LoadedDocument, chunk: Chunk) -> Unit:
    return next(u for u in doc.units if u.heading == chunk.heading)


def pieces(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer.offsets([text])[0])


@pytest.fixture
def sample_doc_chunks(minilm_tokenizer) -> list[tuple[LoadedDocument, list[Chunk]]]:  # type: ignore[no-untyped-def]
    out = []
    for name in (
        "brennock_canal.txt",
        "quillmate_guide.md",
        "kestrel_valley_cheese.html",
        "marrow_point_light.pdf",
    ):
        doc = load(SAMPLE_DOCS / name)
        out.append((doc, chunk_document(doc, name, minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)))
    return out


def test_no_chunk_exceeds_budget_on_sample_docs(sample_doc_chunks, minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    total = 0
    for _doc, chunks in sample_doc_chunks:
        assert chunks
        for ch in chunks:
            assert pieces(minilm_tokenizer, ch.text) <= CHUNK_TOKENS, ch.text
        total += len(chunks)
    assert total > 20  # the budget is small enough that real splitting happened


def test_no_chunk_exceeds_budget_on_generated_prose(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    doc = doc_of(prose(1, 200))
    chunks = chunk_document(doc, "k", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert len(chunks) > 10
    assert max(pieces(minilm_tokenizer, c.text) for c in chunks) <= CHUNK_TOKENS


def test_offsets_are_exact(sample_doc_chunks) -> None:  # type: ignore[no-untyped-def]
    for doc, chunks in sample_doc_chunks:
        for ch in chunks:
            unit = next(u for u in doc.units if (u.page, u.heading) == (ch.page, ch.heading))
            assert unit.text[ch.start : ch.end] == ch.text
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_overlap(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    doc = doc_of(prose(2, 120))
    chunks = chunk_document(doc, "k", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert len(chunks) > 5
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end, "no overlap between consecutive chunks"
        assert b.start > a.start, "a chunk must move forward"
        shared = doc.units[0].text[b.start : a.end]
        assert pieces(minilm_tokenizer, shared) >= 1


def test_no_overlap_when_zero(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    doc = doc_of(prose(2, 120))
    chunks = chunk_document(doc, "k", minilm_tokenizer.offsets, CHUNK_TOKENS, 0)
    for a, b in itertools.pairwise(chunks):
        assert b.start >= a.end


def test_nothing_lost(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Every word of the unit lies wholly inside at least one chunk."""
    text = prose(3, 150)
    doc = doc_of(text)
    chunks = chunk_document(doc, "k", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    for m in re.finditer(r"\w+", text):
        assert any(c.start <= m.start() and m.end() <= c.end for c in chunks), m.group()


def test_ids_stable_across_runs(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    doc = doc_of(prose(4), prose(5))
    a = chunk_document(doc, "src", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    b = chunk_document(doc_of(prose(4), prose(5)), "src", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert len({c.chunk_id for c in a}) == len(a)


def test_ids_change_with_content_and_source(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = prose(6)
    a = chunk_document(doc_of(text), "src", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    changed = text[:-20] + " The tower was repainted red."
    b = chunk_document(doc_of(changed), "src", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert a[0].chunk_id == b[0].chunk_id  # untouched beginning keeps its id
    assert a[-1].chunk_id != b[-1].chunk_id  # the changed end gets a new one
    other = chunk_document(doc_of(text), "other", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert not {c.chunk_id for c in a} & {c.chunk_id for c in other}


def test_chunks_never_cross_a_pdf_page(tmp_path: Path, minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    pages = [[f"Page {p} line {i}: the lamp was trimmed at dusk and the log was signed." for i in range(12)]
             for p in range(1, 4)]  # fmt: skip
    path = tmp_path / "pages.pdf"
    path.write_bytes(build_pdf(pages, title="Pages"))
    doc = load(path)
    chunks = chunk_document(doc, "pages", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert {c.page for c in chunks} == {1, 2, 3}
    for ch in chunks:
        unit = next(u for u in doc.units if u.page == ch.page)
        assert unit.text[ch.start : ch.end] == ch.text
        assert {int(n) for n in re.findall(r"Page (\d+)", ch.text)} <= {ch.page}


def test_small_unit_is_one_chunk_and_blank_units_are_dropped(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    doc = doc_of("A short page.", "   \n  ", "Another short page.", pages=True)
    chunks = chunk_document(doc, "k", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    assert [(c.page, c.text) for c in chunks] == [(1, "A short page."), (3, "Another short page.")]


def test_split_unit_prefers_sentence_ends() -> None:
    text = " ".join(f"Sentence number {i} has six words." for i in range(30))
    spans = word_offsets([text])[0]
    ranges = split_unit(text, spans, 20, 4)
    assert len(ranges) > 3
    for _start, end in ranges[:-1]:
        assert text[end] == "."  # the last word of a sentence (the fake tokenizer has no "." piece)


def test_chunk_boundaries_fall_between_words(minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    words = re.findall(r"\S+", LONG_WORDS)
    text = " ".join(rng.choice(words) for _ in range(1500))  # no sentence breaks at all
    doc = doc_of(text)
    chunks = chunk_document(doc, "k", minilm_tokenizer.offsets, CHUNK_TOKENS, OVERLAP)
    for ch in chunks:
        assert ch.start == 0 or not text[ch.start - 1].isalnum(), f"starts mid-word: {ch.text[:20]!r}"
        assert ch.end == len(text) or not text[ch.end].isalnum(), f"ends mid-word: {ch.text[-20:]!r}"
        assert pieces(minilm_tokenizer, ch.text) <= CHUNK_TOKENS
