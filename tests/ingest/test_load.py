"""Tests of the loaders (ingest.loaders, html_text, decode): each format's loader, its failure modes, the
registry, and the folder walk (ingest.walk)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pypdfium2
import pytest
from pypdf import PageObject

from lectern.errors import (
    CorruptDocument,
    DocumentError,
    EmptyDocument,
    EncodingError,
    EncryptedDocument,
    UnsupportedFormat,
)
from lectern.ingest import pdf as pdf_module
from lectern.ingest.decode import clean_text
from lectern.ingest.document import OCR_HEADING, LoadedDocument, LoadOptions, Unit
from lectern.ingest.loaders import LOADERS, SEGMENT_CHARS, load
from lectern.ingest.settings import IngestSettings
from lectern.ingest.walk import Skipped, Walk, _glob_regex, iter_files
from tests.fixtures.bad_inputs import (
    SAMPLE_DOCS,
    binary_bytes,
    build_pdf,
    encrypt_pdf,
    make_bad_corpus,
    text_pdf,
)
from tests.fixtures.documents import minimal_document

DEFAULT_EXCLUDE = IngestSettings.model_validate({}).exclude

# --- helpers -------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def raises_for(path: Path, error: type[DocumentError]) -> DocumentError:
    """Load `path` expecting `error`; check that the error names the file, and return it."""
    with pytest.raises(error) as info:
        load(path)
    assert info.value.path == str(path)
    assert path.name in str(info.value)
    return info.value


def all_text(doc: LoadedDocument) -> str:
    return "\n".join(u.text for u in doc.units)


# --- PDF -----------------------------------------------------------------------------------------


@pytest.fixture(params=sorted(pdf_module.PARSERS))
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each PDF test runs once per parser alone (no fallback), so both keep the loader's contract."""
    name: str = request.param
    monkeypatch.setattr(pdf_module, "ORDER", (name,))
    return name


def test_sample_pdf_loads_one_unit_per_page_with_page_numbers(parser: str) -> None:
    doc = load(SAMPLE_DOCS / "marrow_point_light.pdf")
    assert doc.format == "pdf"
    assert doc.title == "The Marrow Point Light: A Short History"
    assert doc.pages == 5
    assert [u.page for u in doc.units] == [1, 2, 3, 4, 5]
    assert all(u.heading is None for u in doc.units)
    assert doc.warnings == ()
    third = doc.units[2]
    assert third.text.startswith("3. The lens and the keepers")
    assert "The longest-serving keeper was Tobias Wrenfield" in third.text
    assert "Tobias Wrenfield" not in doc.units[1].text


def test_pdf_page_without_text_is_skipped_with_a_warning(parser: str, tmp_path: Path) -> None:
    path = write(tmp_path, "mixed.pdf", build_pdf([["First page text."], [], ["Third page text."]]))
    doc = load(path)
    assert [(u.page, u.text) for u in doc.units] == [(1, "First page text."), (3, "Third page text.")]
    assert doc.warnings == ("page 2: no extractable text (image-only?)",)
    assert doc.pages == 3
    assert doc.title == "mixed"  # no metadata title: the stem


def test_pdf_with_no_text_at_all_is_empty(parser: str, tmp_path: Path) -> None:
    path = write(tmp_path, "scan.pdf", build_pdf([[], []]))
    error = raises_for(path, EmptyDocument)
    assert "no extractable text in 2 pages, and no image on them to read by OCR" in str(error)


def test_pdf_encrypted_with_a_password_is_refused(parser: str, tmp_path: Path) -> None:
    path = write(tmp_path, "secret.pdf", encrypt_pdf(text_pdf(), "hunter2"))
    error = raises_for(path, EncryptedDocument)
    assert "password" in error.detail


def test_pdf_encrypted_with_an_empty_user_password_loads(parser: str, tmp_path: Path) -> None:
    path = write(tmp_path, "open.pdf", encrypt_pdf(text_pdf(), ""))
    doc = load(path)
    assert doc.units[1] == Unit("Ferry\nThe ferry leaves at 7:15 every morning.", page=2)
    assert doc.title == "Harbour notes"


@pytest.mark.parametrize(
    "data",
    [pytest.param(text_pdf()[:700], id="truncated"), pytest.param(b"%PDF-1.4\nnot really", id="garbage")],
)
def test_corrupt_pdf_is_corrupt_with_the_parsers_reason(parser: str, tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "broken.pdf", data)
    error = raises_for(path, CorruptDocument)
    assert error.detail.startswith("corrupt or truncated PDF: ")
    assert len(error.detail) > len("corrupt or truncated PDF: ") + 3  # the parser's own reason follows


def test_error_on_one_pdf_page_keeps_the_others(
    parser: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "flaky.pdf", text_pdf())
    cls, method = {
        "pypdf": (PageObject, "extract_text"),
        "pdfium": (pypdfium2.PdfTextPage, "get_text_bounded"),
    }[parser]
    original = getattr(cls, method)

    def flaky(self: object, *args: object, **kwargs: object) -> str:
        text: str = original(self, *args, **kwargs)
        if "Ferry" in text:
            raise KeyError("/Font")
        return text

    monkeypatch.setattr(cls, method, flaky)
    doc = load(path)
    assert [u.page for u in doc.units] == [1, 3]
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith("page 2: text extraction failed")
    assert "/Font" in doc.warnings[0]


def test_pdf_text_is_normalised(parser: str, tmp_path: Path) -> None:
    lines = ["The infor-", "mation desk is near Jean-", "Paul's stall   with  wide    gaps."]
    doc = load(write(tmp_path, "wrapped.pdf", build_pdf([lines])))
    assert doc.units[0].text == "The information desk is near Jean-\nPaul's stall with wide gaps."


def test_clean_text_removes_controls_and_joins_hyphenated_words_conservatively() -> None:
    raw = "a\x00b\x07c\r\nline\ttab   spaced  \n\n\n\nnext infor-\nmation COVID-\n19 self-\nAware"
    assert (
        clean_text(raw, dehyphenate=True)
        == "a b c\nline\ttab spaced\n\nnext information COVID-\n19 self-\nAware"
    )
    assert clean_text("keep  code   indent\ninfor-\nmation", collapse_spaces=False) == (
        "keep  code   indent\ninfor-\nmation"
    )


@pytest.mark.parametrize(
    ("line", "cleaned"),
    [
        ("1.2 Export to text files . . . . . . . . . . . . . . . . . . . . 4", "1.2 Export to text files 4"),
        ("Reading data from files......................33", "Reading data from files 33"),
        ("Recycling rule . . . . . . . . . . . . . . . . 9, 22", "Recycling rule 9, 22"),
        ("Appendix A References \u2026\u2026\u2026 33", "Appendix A References 33"),
        ("Use ... for the rest, and so on...", "Use ... for the rest, and so on..."),  # R dots, prose
        ("version 4.2.2, section 1.1.1 and a.b.c.d", "version 4.2.2, section 1.1.1 and a.b.c.d"),
    ],
)
def test_dot_leaders_collapse(line: str, cleaned: str) -> None:
    """Table-of-contents and index pages are mostly dot leaders: kept, they made such pages match
    every question (their few words fill a chunk of dots)."""
    assert clean_text(line) == cleaned


def test_dot_leaders_collapse_in_every_format(parser: str, tmp_path: Path) -> None:
    toc = [
        "Table of Contents",
        "1 Introduction . . . . . . . . . . . . . . . . 3",
        "2 Reading data ........ 8",
    ]
    pdf = load(write(tmp_path, "manual.pdf", build_pdf([toc])))
    assert pdf.units[0].text == "Table of Contents\n1 Introduction 3\n2 Reading data 8"
    text = load(write(tmp_path, "notes.txt", "\n".join(toc).encode()))
    assert ". ." not in text.units[0].text and "...." not in text.units[0].text


# --- text ----------------------------------------------------------------------------------------


def test_plain_text_is_one_unit_titled_by_its_first_line() -> None:
    doc = load(SAMPLE_DOCS / "brennock_canal.txt")
    assert doc.format == "text"
    assert doc.title == "Notes on the Brennock Canal"
    assert len(doc.units) == 1 and doc.units[0].page is None and doc.units[0].heading is None
    assert "It was opened on 2 May 1794" in doc.units[0].text
    assert doc.pages == 1


def test_latin1_text_is_decoded(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.txt", "café naïve".encode("latin-1"))
    assert load(path).units[0].text == "café naïve"


def test_utf8_bom_and_crlf_are_removed(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.txt", "\ufeffHello\r\nWorld\r\n".encode())
    doc = load(path)
    assert doc.units[0].text == "Hello\nWorld"
    assert doc.title == "Hello"


def test_utf16_with_bom_is_text_not_binary(tmp_path: Path) -> None:
    path = write(tmp_path, "wide.txt", "Grüße aus Köln".encode("utf-16"))
    assert load(path).units[0].text == "Grüße aus Köln"


def test_cp1251_text_is_decoded_by_detection(tmp_path: Path) -> None:
    russian = "Привет, мир! Это пример текста в кодировке Windows-1251, достаточно длинный для проверки."
    path = write(tmp_path, "ru.txt", russian.encode("cp1251"))
    assert load(path).units[0].text == russian


def test_long_first_line_title_is_trimmed(tmp_path: Path) -> None:
    path = write(tmp_path, "long.txt", "\n\n  " + "x" * 500 + "\nsecond")
    assert load(path).title == "x" * 200


@pytest.mark.parametrize("name", ["a4.txt.clean", "notes.TXT", "readme.rst", "server.log", "x.text"])
def test_text_suffixes_load_as_text(tmp_path: Path, name: str) -> None:
    doc = load(write(tmp_path, name, "Oslo is the capital of Norway.\n"))
    assert doc.format == "text"
    assert doc.units[0].text == "Oslo is the capital of Norway."


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    error = raises_for(write(tmp_path, "nothing.txt", b""), EmptyDocument)
    assert "0 bytes" in error.detail


def test_whitespace_only_file_is_empty(tmp_path: Path) -> None:
    raises_for(write(tmp_path, "blank.txt", " \n\t\n   \r\n"), EmptyDocument)


def test_binary_with_nul_bytes_is_an_encoding_error(tmp_path: Path) -> None:
    error = raises_for(write(tmp_path, "image.txt", binary_bytes()), EncodingError)
    assert "binary file, not text" in error.detail


def test_binary_without_nul_bytes_is_an_encoding_error(tmp_path: Path) -> None:
    noise = bytes(b for b in binary_bytes(8000) if b != 0)
    error = raises_for(write(tmp_path, "noise.txt", noise), EncodingError)
    assert "binary file, not text" in error.detail


def test_control_character_soup_is_an_encoding_error(tmp_path: Path) -> None:
    data = bytes([1, 2, 3, 4, 5, 6, 0x0E, 0x0F, 0x10, 0x11]) * 50 + b"some words"
    raises_for(write(tmp_path, "controls.txt", data), EncodingError)


def test_five_megabyte_single_line_loads(tmp_path: Path) -> None:
    line = ("lorem ipsum dolor sit amet " * 200_000)[: 5 * 1024 * 1024]
    doc = load(write(tmp_path, "huge.txt", line))
    # in segments of at most SEGMENT_CHARS, cut at spaces, that together are the whole text
    assert len(doc.units) > 1 and all(len(u.text) <= SEGMENT_CHARS for u in doc.units)
    assert "".join(u.text for u in doc.units) == line.rstrip()
    assert [u.offset for u in doc.units] == list(
        itertools.accumulate([0] + [len(u.text) for u in doc.units[:-1]])
    )
    assert all(u.text.endswith(" ") for u in doc.units[:-1])
    md = load(write(tmp_path, "huge.md", "# " + line))
    assert len(md.title) == 200


# --- markdown ------------------------------------------------------------------------------------


def test_markdown_splits_at_headings_with_heading_paths() -> None:
    doc = load(SAMPLE_DOCS / "quillmate_guide.md")
    assert doc.format == "markdown"
    assert doc.title == "Quillmate User Guide"
    headings = [u.heading for u in doc.units]
    assert headings == [
        None,
        "Quillmate User Guide",
        "Quillmate User Guide > Installation",
        "Quillmate User Guide > Installation > On Linux",
        "Quillmate User Guide > Installation > On Windows",
        "Quillmate User Guide > Configuration",
        "Quillmate User Guide > Configuration > The sync interval",
        "Quillmate User Guide > Configuration > Conflicts",
        # "Troubleshooting" holds only subsections: no unit of its own
        "Quillmate User Guide > Troubleshooting > Error Q-17",
        "Quillmate User Guide > Troubleshooting > Error Q-42",
    ]
    by_heading = {u.heading: u.text for u in doc.units}
    linux = by_heading["Quillmate User Guide > Installation > On Linux"]
    assert linux.startswith("### On Linux\n")
    assert "# This line is a shell comment, not a heading." in linux  # inside the code fence
    assert "every 90 seconds" in by_heading["Quillmate User Guide > Configuration > The sync interval"]
    text = all_text(doc)
    assert "author:" not in text and "front matter" not in text


def test_markdown_heading_edge_cases(tmp_path: Path) -> None:
    md = (
        "#hashtag is not a heading\n"
        "## Closed heading ##\n"
        "body one\n"
        "~~~\n"
        "# inside tilde fence\n"
        "~~~\n"
        "    # indented code, not a heading\n"
        "#### Deep\n"
        "body two\n"
        "# Second top\n"
        "body three\n"
    )
    doc = load(write(tmp_path, "edge.md", md))
    assert doc.title == "Second top"  # the first H1
    assert [u.heading for u in doc.units] == [None, "Closed heading", "Closed heading > Deep", "Second top"]
    assert doc.units[0].text == "#hashtag is not a heading"
    assert "# inside tilde fence" in doc.units[1].text
    assert "    # indented code, not a heading" in doc.units[1].text


def test_markdown_without_h1_is_titled_by_stem(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "release-notes.markdown", "## Fixed\n\nThe crash on start.\n"))
    assert doc.title == "release-notes"
    assert doc.units == (Unit("## Fixed\n\nThe crash on start.", heading="Fixed"),)


def test_markdown_of_only_front_matter_is_empty(tmp_path: Path) -> None:
    raises_for(write(tmp_path, "meta.md", "---\ntitle: x\n---\n\n"), EmptyDocument)


# --- html ----------------------------------------------------------------------------------------


def test_html_drops_chrome_and_splits_at_h1_to_h3() -> None:
    doc = load(SAMPLE_DOCS / "kestrel_valley_cheese.html")
    assert doc.format == "html"
    assert doc.title == "Kestrel Valley Cheese Cooperative"
    text = all_text(doc)
    assert "MUST-NOT-APPEAR" not in text
    assert "window.analytics" not in text and "font-family" not in text
    assert "\n\n\n" not in text
    assert [u.heading for u in doc.units] == [
        "Kestrel Valley Cheese Cooperative",
        "Kestrel Valley Cheese Cooperative > Our cheeses",
        "Kestrel Valley Cheese Cooperative > Our cheeses > Valley Blue",
        "Kestrel Valley Cheese Cooperative > Our cheeses > Kestrel Gold",
        "Kestrel Valley Cheese Cooperative > Visiting",
    ]
    blue = doc.units[2].text
    assert blue.startswith("Valley Blue\n")
    assert "aged for nine months in the old railway tunnel" in blue  # source line breaks are spaces
    gold = doc.units[3].text
    assert "Milk: raw cow's milk\nAgeing: eighteen months" in gold  # list items on their own lines
    visiting = doc.units[4].text
    assert "about an hour.\nPlease book" in visiting  # <br>
    assert "Adult 8 pounds" in visiting


def test_html_charset_from_meta_and_title_from_h1(tmp_path: Path) -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body><h1>Caf\xe9</h1><p>na\xefve</p></body></html>'
    doc = load(write(tmp_path, "latin.htm", page.encode("latin-1")))
    assert doc.title == "Café"
    assert doc.units == (Unit("Café\nnaïve", heading="Café"),)


def test_html_without_title_or_headings(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "frag.html", "<div>Hello <b>bold</b> <i>world</i></div><!-- hidden -->"))
    assert doc.title == "frag"
    assert doc.units == (Unit("Hello bold world"),)


def test_html_with_only_scripts_is_empty(tmp_path: Path) -> None:
    raises_for(
        write(tmp_path, "app.html", "<html><body><script>boot()</script><nav>Menu</nav></body></html>"),
        EmptyDocument,
    )


def _html_table(path: Path, size: int) -> Path:
    """A page that is one big table (a spreadsheet saved as HTML): much markup, little text per cell."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("<html><head><title>Ferry times</title></head><body><table>\n")
        row = 0
        while fh.tell() < size:
            fh.write(f"<tr><td>{row}</td><td>pier {row % 97}</td><td>{row * 7 % 1000}.5</td></tr>\n")
            row += 1
        fh.write("</table></body></html>\n")
    return path


def test_a_large_html_table_loads_in_memory_that_follows_its_text(tmp_path: Path) -> None:
    """BeautifulSoup's tree of a 10 MB table peaked at 1.6 GB (86 times the file at 2 MB, measured
    the same way); the page is now read as a stream: a few times the file, whatever the markup."""
    import tracemalloc

    page = _html_table(tmp_path / "table.html", 128 << 10)
    load(_html_table(tmp_path / "warm.html", 1000))  # what is done once (imports, regexes) left out
    tracemalloc.start()
    try:
        doc = load(page)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = page.stat().st_size
    assert peak < 8 * size, f"peak {peak:,} bytes for a {size:,}-byte page"
    assert doc.title == "Ferry times"
    text = "\n".join(u.text for u in doc.units)
    assert text.startswith("0 pier 0 0.5\n1 pier 1 7.5") and text.count("\n") > 2000


def test_html_read_in_small_slices_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream's slices (what is parsed at a time) and the points where a long section's text is
    handed on do not show in the text: pre blocks, blank lines, breaks, CR LF, headings."""
    from lectern.ingest import html_text as loader

    pages = [
        (SAMPLE_DOCS / "kestrel_valley_cheese.html").read_text(encoding="utf-8"),
        "<h1>Log</h1><pre>a\r\nb\n\n\nc  \n \nd</pre><p>one<br>two</p><p>three</p><table><tr><td>x</td>"
        "<td></td><td>y</td></tr></table><h2>Next</h2>\x0cform feed<div>e &amp; f<!-- c --> g</div>",
        "<div hidden>no</div><p>" + "word " * 400 + "</p><ul><li>i</li><li>j</li></ul>",
    ]
    whole = [loader.html_units(page) for page in pages]
    monkeypatch.setattr(loader, "_FEED_CHARS", 7)
    monkeypatch.setattr(loader, "_FLUSH_PARTS", 2)
    assert [loader.html_units(page) for page in pages] == whole


def test_deeply_nested_html_loads(tmp_path: Path) -> None:
    doc = load(write(tmp_path, "deep.html", "<div>" * 3000 + "deep text" + "</div>" * 3000))
    assert doc.units == (Unit("deep text"),)


# --- registry, unreadable files ------------------------------------------------------------------

MINIMAL = {
    "pdf": build_pdf([["Minimal fact: the sky is green."]]),
    "markdown": b"# Minimal\n\nMinimal fact: the sky is green.\n",
    "html": b"<html><body><h1>Minimal</h1><p>Minimal fact: the sky is green.</p></body></html>",
    "text": b"Minimal fact: the sky is green.\n",
    "csv": b"fact,colour\nMinimal fact: the sky is green.,green\n",
}


@pytest.fixture(scope="module")
def ocr_cache(tmp_path_factory: pytest.TempPathFactory) -> LoadOptions:
    """One OCR cache for the contract's images: the same picture saved as .png and .tiff is read once."""
    return LoadOptions(ocr_cache=str(tmp_path_factory.mktemp("ocr-cache")))


@pytest.mark.parametrize("suffix", sorted(LOADERS))
def test_every_registered_loader_honours_the_contract(
    parser: str, tmp_path: Path, suffix: str, ocr_cache: LoadOptions
) -> None:
    loader = LOADERS[suffix]
    fmt = loader.__name__.removeprefix("load_")
    path = tmp_path / ("doc" + suffix)
    if fmt in MINIMAL:
        write(tmp_path, path.name, MINIMAL[fmt])
    else:  # the formats that libraries write (tests/fixtures/documents.py)
        minimal_document(path, "Minimal fact: the sky is green.")
    doc = loader(path, ocr_cache)
    if doc.format == "image":  # read by OCR, and marked so
        assert doc.ocr_pages == 1 and all(u.heading == OCR_HEADING for u in doc.units)
    assert doc == load(path, ocr_cache)
    assert doc.path == path and doc.format == fmt
    assert doc.units and all(u.text.strip() for u in doc.units)
    assert "Minimal fact: the sky is green." in all_text(doc)
    assert doc.pages >= 1 and doc.title
    with pytest.raises(EmptyDocument):
        loader(write(tmp_path, "empty" + suffix, b""))


def test_unknown_extension_lists_the_known_ones(tmp_path: Path) -> None:
    error = raises_for(write(tmp_path, "data.xyz", "hello"), UnsupportedFormat)
    for suffix in LOADERS:
        assert suffix in error.detail
    raises_for(write(tmp_path, "Makefile", "all:"), UnsupportedFormat)


def test_suffix_is_matched_case_insensitively(parser: str, tmp_path: Path) -> None:
    assert load(write(tmp_path, "REPORT.PDF", text_pdf())).format == "pdf"


def test_unreadable_file_is_corrupt_with_the_os_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "locked.txt", "secret")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    error = raises_for(path, CorruptDocument)
    assert "Permission denied" in error.detail


def test_a_folder_named_like_a_document_is_corrupt(tmp_path: Path) -> None:
    folder = tmp_path / "chapter.md"
    folder.mkdir()
    error = raises_for(folder, CorruptDocument)
    assert "directory" in error.detail.lower()


def test_bad_corpus_fails_each_file_for_its_own_reason(parser: str, tmp_path: Path) -> None:
    expected = make_bad_corpus(tmp_path)
    assert {"empty.txt", "truncated.pdf", "encrypted.pdf", "empty_password.pdf", "binary.txt"} <= set(
        expected
    )
    assert {"latin1.txt", "huge_line.txt", "notes.xyz", "image_only.pdf", "zero_pages.pdf"} <= set(expected)
    for name, reason in expected.items():
        path = tmp_path / name
        if reason == "ok":
            assert all_text(load(path)).strip(), name
        else:
            with pytest.raises(DocumentError) as info:
                load(path)
            assert reason in str(info.value), (name, str(info.value))
            assert name in str(info.value)
    assert "café naïve" in load(tmp_path / "latin1.txt").units[0].text
    walk = iter_files(tmp_path, [], DEFAULT_EXCLUDE)
    assert [s.path for s in walk.skipped] == [tmp_path / "notes.xyz"]
    assert len(walk.files) == len(expected) - 1


# --- iter_files ----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in [
        "b.md",
        "a.txt",
        "c.xyz",
        ".hidden.md",
        ".git/config.txt",
        ".obsidian/notes.md",
        "__pycache__/cache.txt",
        "sub/z.pdf",
        "sub/deep/x.md",
        "sub/deep/image.bmp",
        "drafts/old.md",
    ]:
        write(tmp_path, rel, "x")
    return tmp_path


def rels(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_iter_files_walks_sorted_and_applies_default_excludes(tree: Path) -> None:
    walk = iter_files(tree, [], DEFAULT_EXCLUDE)
    assert rels(tree, walk.files) == ["a.txt", "b.md", "drafts/old.md", "sub/deep/x.md", "sub/z.pdf"]
    assert rels(tree, [s.path for s in walk.skipped]) == ["c.xyz", "sub/deep/image.bmp"]
    assert {s.reason for s in walk.skipped} == {"unsupported file type"}


def test_iter_files_include_and_exclude(tree: Path) -> None:
    walk = iter_files(tree, ["**/*.md"], ["drafts/**"])
    assert rels(tree, walk.files) == [".hidden.md", ".obsidian/notes.md", "b.md", "sub/deep/x.md"]
    assert walk.skipped == []
    assert rels(tree, iter_files(tree, ["sub/**"], []).files) == ["sub/deep/x.md", "sub/z.pdf"]
    assert rels(tree, iter_files(tree, ["*.md"], ["**/.*", "sub/deep"]).files) == ["b.md", "drafts/old.md"]


def test_iter_files_single_file(tree: Path) -> None:
    assert iter_files(tree / "sub" / "z.pdf", [], []) == Walk([tree / "sub" / "z.pdf"], [])
    assert iter_files(tree / "c.xyz", [], []) == Walk([], [Skipped(tree / "c.xyz", "unsupported file type")])


def test_iter_files_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file"):
        iter_files(tmp_path / "nowhere", [], [])


def test_iter_files_survives_a_symlink_loop(tree: Path) -> None:
    (tree / "sub" / "loop").symlink_to(tree, target_is_directory=True)
    assert "a.txt" in rels(tree, iter_files(tree, [], DEFAULT_EXCLUDE).files)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/x.md", "x.md", True),  # **/ matches zero folders
        ("**/x.md", "a/b/x.md", True),
        ("a/**/b.md", "a/b.md", True),
        ("a/**/b.md", "a/x/y/b.md", True),
        ("a/**/b.md", "ab.md", False),
        ("*.md", "deep/in/x.md", True),  # no slash: the name at any depth
        ("docs/*.md", "docs/x.md", True),
        ("docs/*.md", "docs/sub/x.md", False),  # * stays in one folder
        ("docs/**", "docs", True),  # so that excluding it prunes the folder
        ("docs/**", "docs/a/b.txt", True),
        ("docs/**", "docsx/a.txt", False),
        ("**/.*", ".git", True),
        ("**/.*", "a/.env", True),
        ("**/.*", "a/b.env", False),
        ("file?.txt", "file1.txt", True),
        ("[!a]*.txt", "b.txt", True),
        ("[!a]*.txt", "a.txt", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, matches: bool) -> None:
    assert bool(_glob_regex(pattern).fullmatch(path)) is matches


# --- sample_docs ---------------------------------------------------------------------------------


def readme_facts() -> list[tuple[str, str, str, int | None]]:
    """(question, answer, file, page) rows of the Q&A table in sample_docs/README.md."""
    rows = []
    for line in (SAMPLE_DOCS / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith("?"):
            rows.append((cells[0], cells[1], cells[2], int(cells[3]) if cells[3] else None))
    return rows


def test_readme_answers_are_where_it_says() -> None:
    facts = readme_facts()
    assert len(facts) >= 10
    for question, answer, name, page in facts:
        doc = load(SAMPLE_DOCS / name)
        units = [u for u in doc.units if page is None or u.page == page]
        assert any(answer in re.sub(r"\s+", " ", u.text) for u in units), (question, answer, name, page)


def test_sample_docs_all_load_and_stay_small() -> None:
    walk = iter_files(SAMPLE_DOCS, [], DEFAULT_EXCLUDE)
    formats = {load(p).format for p in walk.files}
    assert formats == {"pdf", "markdown", "html", "text"}
    assert [s.path.name for s in walk.skipped] == ["make_pdf.py"]
    assert sum(p.stat().st_size for p in SAMPLE_DOCS.rglob("*") if p.is_file()) < 200 * 1024


def test_committed_sample_pdf_is_what_make_pdf_writes() -> None:
    from tests.fixtures.bad_inputs import _make_pdf_module

    module = _make_pdf_module()
    rebuilt = module.build_pdf([module.layout(h, ps) for h, ps in module.PAGES], title=module.TITLE)
    assert rebuilt == (SAMPLE_DOCS / "marrow_point_light.pdf").read_bytes()
