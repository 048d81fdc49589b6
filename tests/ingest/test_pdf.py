"""Tests of ingest.pdf: PDFium first, pypdf when PDFium refuses a file or finds no text, and both
parsers reading the same words in the same order (the loader's own tests run on each parser alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lectern.errors import CorruptDocument, EncryptedDocument
from lectern.ingest import pdf
from lectern.ingest.decode import clean_text
from lectern.ingest.loaders import load
from tests.fixtures.bad_inputs import SAMPLE_DOCS, build_pdf, encrypt_pdf, text_pdf, zero_page_pdf


class Calls:
    """Wraps the registered parsers, recording which ran, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, replace: dict[str, pdf.PdfParser] | None = None):
        self.names: list[str] = []
        parsers = {**pdf.PARSERS, **(replace or {})}

        def wrapped(name: str) -> pdf.PdfParser:
            def run(path: Path, data: bytes, text_budget: int | None = None) -> pdf.PdfText:
                self.names.append(name)
                return parsers[name](path, data, text_budget)

            return run

        monkeypatch.setattr(pdf, "PARSERS", {name: wrapped(name) for name in pdf.PARSERS})


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_pdfium_reads_a_good_file_and_pypdf_is_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)
    doc = load(write(tmp_path, "good.pdf", text_pdf()))
    assert calls.names == ["pdfium"]
    assert doc.units[1].text == "Ferry\nThe ferry leaves at 7:15 every morning."
    assert doc.title == "Harbour notes"


def test_a_file_pdfium_refuses_falls_back_to_pypdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuses(path: Path, data: bytes, text_budget: int | None = None) -> pdf.PdfText:
        raise CorruptDocument(path, "corrupt or truncated PDF: Data format error")

    calls = Calls(monkeypatch, {"pdfium": refuses})
    doc = load(write(tmp_path, "odd.pdf", text_pdf()))
    assert calls.names == ["pdfium", "pypdf"]
    assert [u.page for u in doc.units] == [1, 2, 3]


def test_a_file_pdfium_reads_as_empty_falls_back_to_pypdf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blank(path: Path, data: bytes, text_budget: int | None = None) -> pdf.PdfText:
        return pdf.PdfText(("", " ", "\n"), None, "pdfium")

    calls = Calls(monkeypatch, {"pdfium": blank})
    doc = load(write(tmp_path, "odd.pdf", text_pdf()))
    assert calls.names == ["pdfium", "pypdf"]
    assert "The fish market opens on Thursdays." in doc.units[2].text


def test_image_only_pdf_is_tried_by_both_then_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    with pytest.raises(Exception, match="no extractable text in 1 page"):
        load(write(tmp_path, "scan.pdf", build_pdf([[]])))
    assert calls.names == ["pdfium", "pypdf"]


def test_a_password_refusal_is_final(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    with pytest.raises(EncryptedDocument):
        load(write(tmp_path, "secret.pdf", encrypt_pdf(text_pdf(), "hunter2")))
    assert calls.names == ["pdfium"]


def test_a_file_no_parser_opens_gives_pypdfs_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    with pytest.raises(CorruptDocument) as info:
        load(write(tmp_path, "broken.pdf", text_pdf()[:700]))
    assert calls.names == ["pdfium", "pypdf"]
    assert "PDFium" not in info.value.detail


def test_a_pdf_without_pages_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptDocument, match="it has no pages"):
        load(write(tmp_path, "none.pdf", zero_page_pdf()))


def test_pdfium_hyphen_mark_reads_like_pypdfs_line_end_hyphen(tmp_path: Path) -> None:
    lines = ["The infor-", "mation desk is near Jean-", "Paul's stall."]
    path = write(tmp_path, "wrapped.pdf", build_pdf([lines]))
    raw = {name: parser(path, path.read_bytes()).pages[0] for name, parser in pdf.PARSERS.items()}
    cleaned = {name: clean_text(str(text), dehyphenate=True) for name, text in raw.items()}
    assert cleaned["pdfium"] == cleaned["pypdf"] == "The information desk is near Jean-\nPaul's stall."


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(SAMPLE_DOCS / "marrow_point_light.pdf", id="marrow_point_light"),
        pytest.param(None, id="harbour_notes"),
    ],
)
def test_both_parsers_read_the_same_words_in_the_same_order(tmp_path: Path, source: Path | None) -> None:
    """Same words, same order, page by page, once cleaned as the loader cleans them (whitespace and
    hyphenation aside). bench/pdf_parsers.py measures the same on the R manuals."""
    path = source or write(tmp_path, "harbour.pdf", text_pdf())
    data = path.read_bytes()
    texts = {name: parser(path, data) for name, parser in pdf.PARSERS.items()}
    assert texts["pdfium"].title == texts["pypdf"].title
    pages = {
        name: [pdf.comparable_words(clean_text(str(p), dehyphenate=True)) for p in t.pages]
        for name, t in texts.items()
    }
    assert len(pages["pdfium"]) == len(pages["pypdf"])
    for number, (a, b) in enumerate(zip(pages["pdfium"], pages["pypdf"], strict=True), start=1):
        assert a == b, f"page {number}"
        assert a, f"page {number} has words"


def test_word_agreement() -> None:
    assert pdf.word_agreement(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert pdf.word_agreement(["a", "b", "c", "d"], ["a", "c", "d"]) == pytest.approx(6 / 7)
    assert pdf.word_agreement([], []) == 1.0
    assert pdf.comparable_words("Ef\ufb01cient  WORDS,\nthe end.") == ["efficient", "words", "the", "end"]


def test_pdfiums_stale_password_error_does_not_make_the_next_file_encrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PDFium keeps its last error code across files; a file without /Encrypt is never 'encrypted'."""
    monkeypatch.setattr(pdf, "ORDER", ("pdfium",))
    with pytest.raises(EncryptedDocument):
        load(write(tmp_path, "secret.pdf", encrypt_pdf(text_pdf(), "hunter2")))
    with pytest.raises(CorruptDocument):
        load(write(tmp_path, "none.pdf", zero_page_pdf()))
