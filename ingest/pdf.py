"""PDF text: PDFium (pypdfium2) first, pypdf as the fallback, behind one `extract`.

PDFium reads the R manuals' 677 pages about 17x faster than pypdf, with the same words in the same
order (bench/pdf_parsers.py). pypdf stays for any file PDFium refuses or reads as empty: it has its own
repairs for malformed files and its own reasons when it fails. Both return raw page text; cleaning
(ingest.decode.clean_text) is the loader's.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lectern.errors import CorruptDocument, DecompressionBomb, DocumentError, EncryptedDocument

# PDFium marks a word broken at the end of a line with U+0002 and drops the line break ("infor\x02mation");
# as "-\n" it reads like pypdf's text, so the loader's one dehyphenation rule treats both alike.
_PDFIUM_HYPHEN = "\x02"


# A page with fewer characters in its text layer than this per square inch of its area, and an image
# on it, is a scan (or mostly one): `ingest.ocr = auto` reads it by OCR. A letter page of prose holds
# about 30 a square inch; a figure with its caption 2 or more; a scan none, or a page number.
MIN_CHARS_PER_SQ_INCH = 1.0


@dataclass(frozen=True)
class PdfText:
    """A PDF's raw page texts, or for a page the error its extraction raised; its metadata title; and
    which pages look scanned (little text for their area, and an image), where the parser can tell."""

    pages: tuple[str | Exception, ...]
    title: str | None
    parser: str
    scanned: tuple[bool, ...] = ()

    @property
    def has_text(self) -> bool:
        return any(isinstance(p, str) and p.strip() for p in self.pages)


def _reason(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def _looks_scanned(page: Any, text: str) -> bool:
    """Little text for the page's area (MIN_CHARS_PER_SQ_INCH), and an image on it."""
    import pypdfium2 as pdfium

    width, height = page.get_size()
    if len(text.strip()) >= MIN_CHARS_PER_SQ_INCH * (width / 72) * (height / 72):
        return False
    images = page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE], max_depth=4)
    return next(iter(images), None) is not None


def pdfium_text(path: Path, data: bytes, text_budget: int | None = None) -> PdfText:
    """Text through PDFium's text layer. Raises EncryptedDocument for a password it lacks (an empty user
    password opens, as in any viewer) and CorruptDocument for a file it cannot open; DecompressionBomb
    past `text_budget` characters (TEXT_BUDGET unless given)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # PDFium's error code is process-wide and not reset by every failure: a stale "password" from
        # an earlier file counts only when this file has an encryption dictionary.
        if getattr(exc, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD and b"/Encrypt" in data:
            raise EncryptedDocument(
                path, "encrypted PDF with a password; remove the password to ingest it"
            ) from exc
        # PDFium says "Success" for some files it will not open (one without pages, for one).
        reason = _reason(exc) if getattr(exc, "err_code", None) else "PDFium cannot open it"
        raise CorruptDocument(path, f"corrupt or truncated PDF: {reason}") from exc
    try:
        pages: list[str | Exception] = []
        scanned: list[bool] = []
        chars = 0
        for index in range(len(doc)):
            try:
                page = doc[index]
                try:
                    textpage = page.get_textpage()
                    try:
                        text = textpage.get_text_bounded()
                    finally:
                        textpage.close()
                    looks_scanned = _looks_scanned(page, text)
                finally:
                    page.close()
                pages.append(text.replace(_PDFIUM_HYPHEN, "-\n"))
                scanned.append(looks_scanned)
            except Exception as exc:  # one broken page must not lose the others
                pages.append(exc)
                scanned.append(False)
            chars = _spend(path, chars, pages[-1], text_budget)
        try:
            title = doc.get_metadata_dict().get("Title")
        except Exception:  # a broken Info dictionary only costs the title
            title = None
    finally:
        doc.close()
    return PdfText(tuple(pages), title or None, "pdfium", tuple(scanned))


def pypdf_text(path: Path, data: bytes, text_budget: int | None = None) -> PdfText:
    """Text through pypdf, which repairs some files PDFium refuses (the same `text_budget`)."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data))
        # Many PDFs are encrypted with an empty user password only to set permissions: they open.
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocument(path, "encrypted PDF with a password; remove the password to ingest it")
        n_pages = len(reader.pages)
    except DocumentError:
        raise
    except DependencyError as exc:
        raise EncryptedDocument(path, f"encrypted PDF that needs an extra package to open: {exc}") from exc
    except Exception as exc:  # pypdf raises anything from PdfReadError to KeyError on malformed files
        raise CorruptDocument(path, f"corrupt or truncated PDF: {_reason(exc)}") from exc
    pages: list[str | Exception] = []
    chars = 0
    for index in range(n_pages):
        try:
            pages.append(reader.pages[index].extract_text() or "")
        except Exception as exc:  # a bad font or stream on one page
            pages.append(exc)
        chars = _spend(path, chars, pages[-1], text_budget)
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception:
        title = None
    return PdfText(tuple(pages), title if isinstance(title, str) and title else None, "pypdf")


# What one of a PDF's streams may inflate to before a parser sees it (about a page's text): PDFium
# holds about 13 times a content stream while it reads the page (a 1 GiB stream: 13.7 GB), so 32 MiB
# keeps a page under half a GB; a real page's stream is a few KB to a few MB. Images are left out
# (text extraction never decodes them). The file's budget is on the text out: the 2415 pages of R's
# reference manual are 6 M characters. These are the defaults of ingest.pdf_max_stream_bytes and
# ingest.pdf_max_text_chars (ingest.settings), which reach the loader in its LoadOptions.
STREAM_BUDGET = 32 << 20
TEXT_BUDGET = 128 << 20
_DEFLATE_MAX_RATIO = 1032  # no deflate stream inflates more: a stream this small is no bomb
_STREAM = re.compile(rb"stream\r?\n")
_LENGTH = re.compile(rb"/Length\s+(\d+)(?!\s+\d+\s+R)")
_STEP = 1 << 20


def check_inflation(path: Path, data: bytes, budget: int | None = None) -> None:
    """Refuse a decompression bomb before any parser inflates it. A Flate stream (not an image) that
    could pass the budget is inflated here a MiB at a time, counted and thrown away: memory stays
    flat. What a parser may read of a stream is bounded by its direct /Length and by the first
    `endstream` after it, so small streams (nearly all) cost nothing."""
    budget = STREAM_BUDGET if budget is None else budget
    for match in _STREAM.finditer(data):
        head = data[max(0, match.start() - 1024) : match.start()]
        head = head[head.rfind(b"obj") :]
        if b"/FlateDecode" not in head or b"/Image" in head:
            continue
        end = data.find(b"endstream", match.end())
        length = _LENGTH.search(head)
        room = max(
            len(data) - match.end() if end < 0 else end - match.end(), int(length[1]) if length else -1
        )
        if room * _DEFLATE_MAX_RATIO <= budget and length is not None:
            continue
        if _inflated_size(data, match.end(), budget) > budget:
            raise DecompressionBomb(
                path,
                f"a stream inflates past {_bytes(budget)} (a page's text is far less; "
                "the limit is ingest.pdf_max_stream_bytes)",
            )


def _spend(path: Path, spent: int, page: str | Exception, budget: int | None = None) -> int:
    """The file's text budget, checked as each page's text comes out (a bomb of many pages)."""
    budget = TEXT_BUDGET if budget is None else budget
    spent += len(page) if isinstance(page, str) else 0
    if spent > budget:
        raise DecompressionBomb(
            path, f"its text passes {budget:,} characters (the limit is ingest.pdf_max_text_chars)"
        )
    return spent


def _bytes(n: int) -> str:
    """32 MiB, or 100,000 bytes: a stream budget as it was most likely set."""
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"


def _inflated_size(data: bytes, start: int, limit: int) -> int:
    """What the zlib stream at `start` inflates to, counted up to just past `limit` (a broken stream:
    what inflated before the break; its parsers report it)."""
    inflate = zlib.decompressobj()
    size, at, pending = 0, start, b""
    try:
        while size <= limit and not inflate.eof:
            if not pending:
                if at >= len(data):
                    break
                pending, at = data[at : at + _STEP], at + _STEP
            size += len(inflate.decompress(pending, _STEP))
            pending = inflate.unconsumed_tail
    except zlib.error:
        return size
    return size


def form_fields(data: bytes) -> list[str]:
    """The filled-in fields of a PDF form (AcroForm), as "label: value" lines: no parser's text layer
    holds them. Unreadable forms give none (the page text still counts)."""
    if b"/AcroForm" not in data:
        return []
    from pypdf import PdfReader

    try:
        fields = PdfReader(io.BytesIO(data)).get_fields() or {}
    except Exception:  # a broken form only costs its fields
        return []
    lines = []
    for name, field in fields.items():
        value = field.get("/V")
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        text = " ".join(str(value if value is not None else "").split()).removeprefix("/")
        if text and text != "Off":  # an unticked box says nothing
            lines.append(f"{field.get('/TU') or name}: {text}")
    return lines


def page_count(path: Path) -> int | None:
    """A PDF's pages as its page tree's root says (/Count), before it is parsed: for progress totals.
    pypdf reads the trailer, the catalog and that one object (its inflation capped at 75 MB by pypdf),
    not the pages; None for a file it cannot read so (it is parsed all the same)."""
    from pypdf import PdfReader

    quiet = logging.getLogger("pypdf")
    level, quiet.level = quiet.level, logging.ERROR  # its repairs are told when the file is parsed
    try:
        with path.open("rb") as fh:
            root: Any = PdfReader(fh, strict=False).trailer["/Root"]
            count = root["/Pages"]["/Count"]
            return int(count) if isinstance(count, int) and 0 < count < 1 << 24 else None
    except Exception:  # any malformed file: the count is a nicety
        return None
    finally:
        quiet.level = level


PdfParser = Callable[[Path, bytes, int | None], PdfText]  # (path, data, text budget)
PARSERS: dict[str, PdfParser] = {"pdfium": pdfium_text, "pypdf": pypdf_text}
ORDER: tuple[str, ...] = ("pdfium", "pypdf")  # tests narrow this to one parser to check each alone


def extract(
    path: Path, data: bytes, stream_budget: int | None = None, text_budget: int | None = None
) -> PdfText:
    """The first parser in ORDER that opens the file and finds text in it, within the decompression
    budgets (STREAM_BUDGET and TEXT_BUDGET unless given: the ingest passes its settings').

    A password refusal is final (every parser would refuse). A file no parser opens raises the last
    parser's CorruptDocument; one that opens but has no text anywhere returns the first such reading.
    """
    check_inflation(path, data, stream_budget)
    refused: CorruptDocument | None = None
    empty: PdfText | None = None
    for name in ORDER:
        try:
            result = PARSERS[name](path, data, text_budget)
        except CorruptDocument as exc:
            refused = exc
            continue
        if result.has_text:
            return result
        empty = empty or result
    if empty is not None:
        return empty
    assert refused is not None, "ORDER names no parser"
    raise refused


_WORD = re.compile(r"\w+")


def comparable_words(text: str) -> list[str]:
    """The words of a page's cleaned text, for comparing parsers: case, ligatures (NFKC), whitespace and
    punctuation do not count, only which words come in which order."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def word_agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of words two parsers agree on in order: 2 * matched / (len(a) + len(b)), 1.0 when identical."""
    from difflib import SequenceMatcher

    if not a and not b:
        return 1.0
    matched = sum(block.size for block in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
    return 2 * matched / (len(a) + len(b))
