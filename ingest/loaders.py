"""Files to LoadedDocuments: one loader per format, chosen by extension from LOADERS; here the plain
formats (text, streamed too, Markdown and PDF's page rules), beside ingest.html_text, ingest.office,
ingest.epub and ingest.ocr. What a loader returns is ingest.document; how bytes become text,
ingest.decode; which files a folder holds, ingest.walk.

Loaders raise `lectern.errors.DocumentError` subclasses with the file's path, never bare library errors,
so that one bad file fails alone and the edges can say why in one sentence.
"""

from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lectern.errors import CorruptDocument, EmptyDocument, UnsupportedFormat
from lectern.ingest.decode import (
    STREAM_BLOCK,
    clean_text,
    cleaned,
    decode_bytes,
    decoded,
    read_bytes,
    stream_encoding,
)
from lectern.ingest.document import (
    NO_OPTIONS,
    OCR_HEADING,
    TITLE_MAX_CHARS,
    LoadedDocument,
    Loader,
    LoadOptions,
    Sections,
    Unit,
)
from lectern.ingest.html_text import load_html

# --- text --------------------------------------------------------------------------------------------


def _first_line_title(text: str, path: Path) -> str:
    for line in text.split("\n", 200)[:200]:
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return path.stem


def load_text(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """A plain text file as one Unit. Layout (indentation, line breaks) is kept: it often carries meaning."""
    text = clean_text(decode_bytes(path, read_bytes(path)), collapse_spaces=False)
    if not text.strip():
        raise EmptyDocument(path, "file is empty: it holds only whitespace")
    return LoadedDocument(path, "text", _first_line_title(text, path), segments(text))


SEGMENT_CHARS = 1 << 18  # a long text is cut into units of at most this many characters


def segments(text: str, size: int = SEGMENT_CHARS) -> tuple[Unit, ...]:
    """A text as Units of at most `size` characters, cut at a blank line, else a line end, else a
    space in each one's second half, each with its offset. Tokenizing, chunking and embedding then
    take one unit at a time, so their memory does not grow with the file (a 50 MB text file peaked at
    6.4 GB tokenized whole). A text within `size` is one unit, as before."""
    units: list[Unit] = []
    pos = 0
    while pos < len(text):
        end = _segment_end(text, pos, size)
        units.append(Unit(text[pos:end], offset=pos))
        pos = end
    return tuple(units)


def _segment_end(text: str, pos: int, size: int) -> int:
    end = min(pos + size, len(text))
    if end < len(text):
        for sep in ("\n\n", "\n", " "):
            cut = text.rfind(sep, pos + size // 2, end)
            if cut != -1:
                return cut + len(sep)
    return end


def stream_text(path: Path) -> tuple[LoadedDocument, Iterator[Unit], list[str]]:
    """A long text file (ingest.stream_bytes) as a document without units, its units, and its
    warnings (filled as the units are read): read, decoded and cleaned a block at a time, so memory
    stays flat however long the file (300 MB read whole peaked at 4.6 GB). The encoding is told from
    the first MiB; a later byte it cannot decode becomes U+FFFD, with a warning."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CorruptDocument(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from exc
    try:
        encoding = stream_encoding(path, fh.read(STREAM_BLOCK))
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    warnings: list[str] = []
    units = _stream_units(fh, encoding, warnings)
    first = next(units, None)
    if first is None:
        raise EmptyDocument(path, "file is empty: it holds only whitespace")
    doc = LoadedDocument(path, "text", _first_line_title(first.text, path), ())
    return doc, itertools.chain([first], units), warnings


def _stream_units(fh: IO[bytes], encoding: str, warnings: list[str]) -> Iterator[Unit]:
    """segments(clean_text(whole text)) of a file read a block at a time: the same units, offsets
    and so chunk ids as load_text's, with a few blocks in memory (a line longer than LONG_LINE is cut
    at a space, the one place the two may differ)."""
    buffer, offset = "", 0
    for piece in cleaned(decoded(fh, encoding, warnings)):
        buffer += piece
        while len(buffer) > SEGMENT_CHARS:
            end = _segment_end(buffer, 0, SEGMENT_CHARS)
            yield Unit(buffer[:end], offset=offset)
            buffer, offset = buffer[end:], offset + end
    if buffer:
        yield Unit(buffer, offset=offset)


# --- markdown ----------------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def _atx_heading(line: str) -> tuple[int, str] | None:
    """(level, text) of an ATX heading line such as '## Install ##', else None. No regex: lines may be huge."""
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3 or not stripped.startswith("#"):
        return None
    level = len(stripped) - len(stripped.lstrip("#"))
    rest = stripped[level:]
    if level > 6 or (rest and rest[0] not in " \t"):
        return None
    text = rest.strip()
    closed = text.rstrip("#")
    if not closed:
        text = ""
    elif closed != text and closed[-1] in " \t":
        text = closed.rstrip()
    return level, text


def _split_front_matter(text: str) -> tuple[str, str]:
    """(front matter, body): a leading '---' block of YAML is metadata, not content."""
    if not text.startswith("---\n"):
        return "", text
    end = re.search(r"^(?:---|\.\.\.)[ \t]*$", text[4:], re.MULTILINE)
    if end is None:
        return "", text
    return text[4 : 4 + end.start()], text[4 + end.end() :]


def load_markdown(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """Markdown split at ATX headings (outside code fences), each Unit under its heading path."""
    text = clean_text(decode_bytes(path, read_bytes(path)), collapse_spaces=False)
    front, body = _split_front_matter(text)
    sections = Sections()
    title: str | None = None
    fence: str | None = None
    for line in body.split("\n"):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif (
            fence is not None
            and opening
            and opening.group(1)[0] == fence[0]
            and len(opening.group(1)) >= len(fence)
        ):
            fence = None
        elif fence is None and (heading := _atx_heading(line)) is not None:
            level, heading_text = heading
            if level == 1 and title is None and heading_text:
                title = heading_text
            sections.heading(level, heading_text, line)
            continue
        sections.add(line)
    units = sections.result()
    if not units:
        raise EmptyDocument(path, "no text outside the front matter")
    if title is None and (match := _FRONT_MATTER_TITLE.search(front)):
        title = match.group(1).strip("'\"")
    return LoadedDocument(path, "markdown", (title or path.stem)[:TITLE_MAX_CHARS], units)


# --- pdf ---------------------------------------------------------------------------------------------


def load_pdf(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """One Unit per page with text; empty or failing pages become warnings, not errors.

    The text comes from ingest.pdf (PDFium, pypdf as the fallback); the rules on pages are here. Pages
    that look scanned (ingest.pdf.MIN_CHARS_PER_SQ_INCH), or every page with `ingest.ocr = force`, are
    read by OCR (ingest.ocr) and marked OCR_HEADING; `off` reads the text layer only.
    """
    from lectern.ingest.pdf import extract, form_fields

    data = read_bytes(path)
    if not data:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    pdf = extract(path, data, options.pdf_max_stream_bytes, options.pdf_max_text_chars)
    fields = form_fields(data)
    n_pages = len(pdf.pages)
    if n_pages == 0:
        raise CorruptDocument(path, "corrupt PDF: it has no pages")

    if options.ocr == "force":
        wanted = list(range(1, n_pages + 1))
    elif options.ocr == "auto":
        wanted = [n for n, scanned in enumerate(pdf.scanned, start=1) if scanned]
    else:
        wanted = []
    read: dict[int, str | Exception] = {}
    ocr_cached, ocr_seconds = 0, 0.0
    if wanted:
        from lectern.ingest.ocr import ocr_pdf_pages

        try:
            run = ocr_pdf_pages(data, wanted, options)
        except Exception as exc:  # OCR not installed, or PDFium cannot render this file
            read = dict.fromkeys(wanted, exc)
        else:
            read, ocr_cached, ocr_seconds = run.texts, run.cached, run.seconds

    units: list[Unit] = []
    warnings: list[str] = []
    for number, raw in enumerate(pdf.pages, start=1):
        if number in read:
            got = read[number]
            if isinstance(got, Exception):
                warnings.append(f"page {number}: OCR failed: {got or got.__class__.__name__}")
            elif ocr_text := clean_text(got, dehyphenate=True):
                units.append(Unit(ocr_text, page=number, heading=OCR_HEADING))
                continue
            else:
                warnings.append(f"page {number}: OCR found no text")
        if isinstance(raw, Exception):  # one broken page (bad font, bad stream) must not lose the others
            warnings.append(f"page {number}: text extraction failed: {raw or raw.__class__.__name__}")
            continue
        text = clean_text(raw, dehyphenate=True)
        if text.strip():
            units.append(Unit(text, page=number))
        elif not fields:
            warnings.append(f"page {number}: no extractable text (image-only?)")
    if fields:
        units.append(Unit(clean_text("\n".join(fields)), heading="Form fields"))
    if not units:
        pages = f"{n_pages} page{'s' if n_pages != 1 else ''}"
        if options.ocr == "off":
            raise EmptyDocument(path, f"no extractable text in {pages}; scanned PDF? ingest.ocr is off")
        if not wanted:
            raise EmptyDocument(path, f"no extractable text in {pages}, and no image on them to read by OCR")
        failed = next((w for w in warnings if "OCR failed" in w), None)
        found = f"OCR failed ({failed})" if failed else "none found by OCR"
        raise EmptyDocument(path, f"no text in {pages}: none in the text layer, {found}")
    return LoadedDocument(
        path, "pdf", _pdf_title(pdf.title, path), tuple(units), tuple(warnings), n_pages,
        ocr_pages=len(wanted), ocr_cached=ocr_cached, ocr_seconds=ocr_seconds,
    )  # fmt: skip


def _pdf_title(title: str | None, path: Path) -> str:
    """The metadata title when it says something, else the file stem (first lines of PDFs are often noise)."""
    if title and (cleaned := clean_text(title).replace("\n", " ").strip()):
        return cleaned[:TITLE_MAX_CHARS]
    return path.stem


# --- registry ----------------------------------------------------------------------------------------


def _lazy(module: str, name: str) -> Loader:
    """A loader that lives in another module, imported when first used: `import lectern` stays free
    of python-docx, openpyxl, ebooklib, PIL and RapidOCR."""

    def loader(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
        fn: Loader = getattr(importlib.import_module(f"lectern.ingest.{module}"), name)
        return fn(path, options)

    loader.__name__ = loader.__qualname__ = name
    return loader


load_docx = _lazy("office", "load_docx")
load_pptx = _lazy("office", "load_pptx")
load_xlsx = _lazy("office", "load_xlsx")
load_csv = _lazy("office", "load_csv")
load_epub = _lazy("epub", "load_epub")
load_image = _lazy("ocr", "load_image")

# Spreadsheets and CSV come in blocks of rows with the header row repeated (ingest.office).
LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".pptx": load_pptx,
    ".xlsx": load_xlsx,
    ".csv": load_csv,
    ".tsv": load_csv,
    ".epub": load_epub,
    ".png": load_image,
    ".jpg": load_image,
    ".jpeg": load_image,
    ".tif": load_image,
    ".tiff": load_image,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".html": load_html,
    ".htm": load_html,
    ".txt": load_text,
    ".text": load_text,
    ".rst": load_text,
    ".log": load_text,
    ".clean": load_text,  # the CMU question-answer dataset names its articles like a4.txt.clean
}


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """Load one file with the loader its extension selects."""
    path = Path(path)
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        known = ", ".join(sorted(LOADERS))
        raise UnsupportedFormat(path, f"unsupported extension {path.suffix or '(none)'!r}; known: {known}")
    return loader(path, options)
