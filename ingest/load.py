"""Files to LoadedDocuments: one loader per format, chosen by extension from LOADERS.

Loaders raise `ingest.errors.DocumentError` subclasses with the file's path, never bare library errors,
so that one bad file fails alone and the edges can say why in one sentence.
"""

from __future__ import annotations

import codecs
import errno
import importlib
import itertools
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Literal

from lectern.errors import (
    CorruptDocument,
    DocumentError,
    EmptyDocument,
    EncodingError,
    UnsupportedFormat,
)

OcrMode = Literal["auto", "off", "force"]
OcrEngineName = Literal["tesseract", "rapidocr"]  # ingest.ocr.OCR_ENGINES
OCR_HEADING = "OCR"
"""The heading of a unit read by OCR (a scanned page, an image): citations say its text may hold
recognition errors. It is left out of the context line that is embedded (ingest.chunk.context_line)."""


@dataclass(frozen=True)
class Unit:
    """A piece of a document that chunks never cross: a PDF page, a section under one heading, a slide,
    a block of rows. `page` and `heading` are its location, as citations name it."""

    text: str
    page: int | None = None  # 1-based page number for paged formats (PDF, TIFF, Word's page breaks)
    # heading path, e.g. "Install > On Linux" (Markdown, HTML, Word); "slide 3: Results";
    # "sheet Sales, rows 2-21"; "chapter 4: Otters"; OCR_HEADING for text read by OCR
    heading: str | None = None
    offset: int = 0  # where the text starts in the document's (page's) text: segments of a long text


@dataclass(frozen=True)
class LoadOptions:
    """What a loader is told besides the path: whether to OCR (`ingest.ocr`), where OCR results are
    cached, whom to tell as each page is recognised (a parse worker's progress), and a PDF's
    decompression budgets (ingest.pdf_max_stream_bytes, ingest.pdf_max_text_chars; None: ingest.pdf's)."""

    ocr: OcrMode = "auto"
    ocr_dpi: int = 200
    ocr_cache: str | None = None  # folder of OCR results keyed by the page image's hash; None: no cache
    ocr_threads: int | None = None  # ONNX Runtime threads for RapidOCR; None: its default
    ocr_engine: OcrEngineName = "tesseract"
    pdf_max_stream_bytes: int | None = None
    pdf_max_text_chars: int | None = None
    on_page: Callable[[int, int], None] | None = field(default=None, compare=False)  # (done, total)


NO_OPTIONS = LoadOptions()


@dataclass(frozen=True)
class LoadedDocument:
    """A parsed file: its text in Units, with what went wrong but did not stop it in `warnings`."""

    path: Path
    format: str  # "pdf" | "text" | "markdown" | "html"
    title: str
    units: tuple[Unit, ...]
    warnings: tuple[str, ...] = ()
    pages: int = 1
    ocr_pages: int = 0  # pages (or images) read by OCR, from the cache or recognised now
    # how they were read (stats, not content): found in the OCR cache, and the time spent
    ocr_cached: int = field(default=0, compare=False)
    ocr_seconds: float = field(default=0.0, compare=False)


Loader = Callable[[Path, LoadOptions], LoadedDocument]

TITLE_MAX_CHARS = 200
_SNIFF_BYTES = 8192
_MAX_CONTROL_SHARE = 0.05  # decoded text with more control characters than this is binary data

# Control characters other than tab and newline become spaces; C1 controls (U+0080-U+009F) too.
_CONTROL_TO_SPACE = {c: " " for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}
_CONTROL_TO_SPACE[0x0C] = "\n"  # form feed: a page break in plain text
_CONTROL_TO_SPACE[0x0B] = "\n"  # vertical tab
_CONTROL_TO_SPACE[0xFEFF] = ""  # a stray byte-order mark inside the text
_SPACE_RUN = re.compile(r" {2,}")
# Dot leaders of tables of contents and indexes ("Imports . . . . 3", "Imports......3", "Imports……3"):
# four dots or more, single spaces or tabs between, or two ellipsis characters. Three dots stay
# (an ellipsis, R's `...`). Kept, they filled whole chunks and made those pages match everything.
_DOT_LEADER = re.compile(r"\.(?:[ \t]*\.){3,}|\u2026(?:[ \t]*\u2026)+")
_BLANK_LINES = re.compile(r"\n{3,}")
# A lower-case letter, a hyphen at the end of a line, and a lower-case letter starting the next one: a word
# broken by line wrapping. Upper case or digits after the break ("Jean-\nPaul", "COVID-\n19") stay as they are.
_LINE_END_HYPHEN = re.compile(r"(?<=[a-zß-öø-ÿ])-\n(?=[a-zß-öø-ÿ])")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; an OS error becomes a CorruptDocument that says the OS's reason."""
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise CorruptDocument(path, f"cannot read file: {reason}") from exc


def clean_text(text: str, *, collapse_spaces: bool = True, dehyphenate: bool = False) -> str:
    """Uniform newlines, no control characters, no dot leaders, no trailing spaces and at most one
    blank line in a row.

    Every step is a linear scan, so a multi-megabyte single line costs no more than its length.
    """
    text = clean_newlines(text)
    text = _DOT_LEADER.sub(" ", text)
    if collapse_spaces:
        text = _SPACE_RUN.sub(" ", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    if dehyphenate:
        text = _LINE_END_HYPHEN.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip("\n")


def clean_newlines(text: str) -> str:
    """Newlines as "\\n" (CR LF, CR, form feed, vertical tab), other control characters as spaces."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROL_TO_SPACE)


def _control_share(text: str) -> float:
    """Share of control characters (other than ordinary whitespace) in a sample of the text."""
    sample = text[:_SNIFF_BYTES]
    if not sample:
        return 0.0
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    return controls / len(sample)


def _guess_decode(path: Path, data: bytes) -> str:
    """charset-normalizer's best guess, preferring cp1252 (a superset of Latin-1) among equally good ones.

    On short texts many single-byte code pages score the same; Western European text is the likeliest.
    """
    return data.decode(_guess_encoding(path, data), errors="replace")


def _guess_encoding(path: Path, data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise EncodingError(path, "binary file, not text (no character encoding fits)")
    best = matches[0]
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    if any("cp1252" in m.could_be_from_charset for m in tied):
        return "cp1252"
    return best.encoding


def _zero_shares(sample: bytes, width: int) -> list[float]:
    """For each byte position within `width`-byte code units, the share of those bytes that are NUL."""
    units = len(sample) // width
    return [sample[k : units * width : width].count(0) / units for k in range(width)]


def _wide_encoding(data: bytes) -> str | None:
    """UTF-32 or UTF-16 without a byte-order mark, told from binary data by where the NULs fall: text
    in Latin, Greek or Cyrillic script puts them in the high bytes of nearly every code unit, binary
    data anywhere. None when the pattern is not there."""
    sample = data[:_SNIFF_BYTES]
    if len(data) >= 4 and len(data) % 4 == 0:
        z = _zero_shares(sample, 4)
        if z[2] > 0.9 and z[3] > 0.9 and z[0] < 0.1:
            return "utf-32-le"
        if z[0] > 0.9 and z[1] > 0.9 and z[3] < 0.1:
            return "utf-32-be"
    if len(data) >= 2 and len(data) % 2 == 0:
        z = _zero_shares(sample, 2)
        if z[1] > 0.5 and z[0] < 0.1:
            return "utf-16-le"
        if z[0] > 0.5 and z[1] < 0.1:
            return "utf-16-be"
    return None


def decode_bytes(
    path: Path, data: bytes, declared: str | None = None, warnings: list[str] | None = None
) -> str:
    """Text from bytes: BOM, then UTF-16/32 told by their NULs, then UTF-8, then a declared charset
    (HTML meta) unless the bytes contradict it (said in `warnings`), then detection.

    Raises EmptyDocument for no bytes and EncodingError for binary data.
    """
    if not data:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if b"\x00" in data[:_SNIFF_BYTES]:
        wide = _wide_encoding(data)
        if wide is None:
            raise EncodingError(path, "binary file, not text (NUL bytes)")
        try:
            wide_text = data.decode(wide)
        except UnicodeDecodeError as exc:
            raise EncodingError(path, f"binary file, not text (NUL bytes; not valid {wide})") from exc
        if _control_share(wide_text) > _MAX_CONTROL_SHARE:
            raise EncodingError(path, "binary file, not text (too many control characters)")
        return wide_text
    text: str | None = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if declared:
            try:
                text = data.decode(declared)
            except (LookupError, UnicodeDecodeError):
                text = None
            if text is not None and "charset" not in text[: 2 * _SNIFF_BYTES].lower():
                text = None  # read in its own charset the page loses its own declaration: it is another
            if text is None and warnings is not None:
                warnings.append(
                    f"the page declares charset {declared!r}, which its bytes are not; detected instead"
                )
        if text is None:
            text = _guess_decode(path, data)
    if _control_share(text) > _MAX_CONTROL_SHARE:
        raise EncodingError(path, "binary file, not text (too many control characters)")
    return text


def _first_line_title(text: str, path: Path) -> str:
    for line in text.split("\n", 200)[:200]:
        if line.strip():
            return line.strip()[:TITLE_MAX_CHARS]
    return path.stem


# --- text --------------------------------------------------------------------------------------------


def load_text(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """A plain text file as one Unit. Layout (indentation, line breaks) is kept: it often carries meaning."""
    text = clean_text(decode_bytes(path, _read_bytes(path)), collapse_spaces=False)
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


STREAM_BLOCK = 1 << 20  # bytes read at a time from a streamed text file


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


def stream_encoding(path: Path, head: bytes) -> str:
    """The encoding to read a file in a block at a time (a long text file, a CSV), judged from its
    first bytes by decode_bytes's rules: BOM, UTF-16/32 told by their NULs, UTF-8, detection."""
    if not head:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    even = head[: len(head) - len(head) % 4] or head
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
    encoding = next((name for bom, name in boms if head.startswith(bom)), None)
    if encoding is None and b"\x00" in head[:_SNIFF_BYTES]:
        encoding = _wide_encoding(even)
        if encoding is None:
            raise EncodingError(path, "binary file, not text (NUL bytes)")
    if encoding is None:
        try:
            codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
            encoding = "utf-8-sig"
        except UnicodeDecodeError:
            encoding = _guess_encoding(path, head[: 1 << 18])  # detection's memory grows with its sample
    if _control_share(even.decode(encoding, errors="replace")) > _MAX_CONTROL_SHARE:
        raise EncodingError(path, "binary file, not text (too many control characters)")
    return encoding


def _stream_units(fh: IO[bytes], encoding: str, warnings: list[str]) -> Iterator[Unit]:
    """segments(clean_text(whole text)) of a file read a block at a time: the same units, offsets
    and so chunk ids as load_text's, with a few blocks in memory (a line longer than LONG_LINE is cut
    at a space, the one place the two may differ)."""
    buffer, offset = "", 0
    for piece in _cleaned(_decoded(fh, encoding, warnings)):
        buffer += piece
        while len(buffer) > SEGMENT_CHARS:
            end = _segment_end(buffer, 0, SEGMENT_CHARS)
            yield Unit(buffer[:end], offset=offset)
            buffer, offset = buffer[end:], offset + end
    if buffer:
        yield Unit(buffer, offset=offset)


def _decoded(fh: IO[bytes], encoding: str, warnings: list[str]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    with fh:
        while True:
            block = fh.read(STREAM_BLOCK)
            try:
                yield decoder.decode(block, final=not block)
            except UnicodeDecodeError:  # past the first MiB: not all of it is in that encoding
                decoder.errors = "replace"
                warnings.append(f"bytes past the first MiB are not {encoding}: replaced with U+FFFD")
                yield decoder.decode(block, final=not block)
            if not block:
                return


LONG_LINE = 1 << 22  # a streamed line longer than this is cleaned in parts, cut at a space


def _cleaned(blocks: Iterator[str]) -> Iterator[str]:
    """clean_text(text, collapse_spaces=False) of the text the blocks make, as it comes: whole lines
    at a time, with the run of newlines between two pieces carried over."""
    pending, carry, started = "", 0, False
    for block in itertools.chain(blocks, [None]):
        final = block is None
        pending += block or ""
        hold = "\r" if not final and pending.endswith("\r") else ""  # maybe half of a \r\n
        pending = pending[: len(pending) - len(hold)].replace("\r\n", "\n").replace("\r", "\n")
        pending = pending.translate(_CONTROL_TO_SPACE)
        cut = len(pending) if final else pending.rfind("\n") + 1
        if not cut and len(pending) > LONG_LINE:
            cut = max(pending.rfind(" "), 0)
        piece, pending = pending[:cut], pending[cut:] + hold
        text = "\n".join(line.rstrip() for line in _DOT_LEADER.sub(" ", piece).split("\n"))
        body = text.strip("\n")
        if not body:
            carry += len(text)
            continue
        run = carry + len(text) - len(text.lstrip("\n"))
        yield ("\n" * (2 if run >= 3 else run) if started else "") + _BLANK_LINES.sub("\n\n", body)
        carry, started = len(text) - len(text.rstrip("\n")), True


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


class Sections:
    """Collects Units under a heading path that follows heading levels, for Markdown, HTML and Word
    alike; a page turn (Word's recorded page breaks) starts a unit too, so each unit has one page."""

    def __init__(self) -> None:
        self.page: int | None = None
        self.stack: list[tuple[int, str]] = []
        self.units: list[Unit] = []
        self.bodies: list[bool] = []  # whether each unit has text besides its heading
        self.lines: list[str] = []
        self.has_body = False

    def heading(self, level: int, title: str, line: str) -> None:
        self.flush()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title or "(untitled)"))
        self.lines = [line]

    def turn_page(self, page: int) -> None:
        self.flush()
        self.page = page

    def add(self, line: str) -> None:
        self.lines.append(line)
        if line.strip():
            self.has_body = True

    def flush(self) -> None:
        text = "\n".join(self.lines).strip("\n")
        if text.strip():
            path = " > ".join(t for _, t in self.stack) if self.stack else None
            self.units.append(Unit(text, page=self.page, heading=path))
            self.bodies.append(self.has_body)
        self.lines, self.has_body = [], False

    def result(self) -> tuple[Unit, ...]:
        """Units with body text; sections that are only a heading are dropped unless nothing else is left."""
        self.flush()
        with_body = tuple(u for u, has in zip(self.units, self.bodies, strict=True) if has)
        return with_body or tuple(self.units)


def load_markdown(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """Markdown split at ATX headings (outside code fences), each Unit under its heading path."""
    text = clean_text(decode_bytes(path, _read_bytes(path)), collapse_spaces=False)
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


# --- html --------------------------------------------------------------------------------------------

_DROP_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template")
_SKIP_TAGS = {*_DROP_TAGS, "head", "title", "meta", "link", "iframe", "object", "embed", "button", "select"}
_SECTION_TAGS = {"h1": 1, "h2": 2, "h3": 3}
_PARAGRAPH_TAGS = {
    "p", "div", "section", "article", "main", "blockquote", "pre", "table", "ul", "ol", "dl", "figure",
    "figcaption", "h4", "h5", "h6", "address", "details", "summary", "hr", "fieldset",
}  # fmt: skip
_LINE_TAGS = {"li", "tr", "dt", "dd", "caption", "br"}
_CELL_TAGS = {"td", "th"}
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE
)
_WHITESPACE = re.compile(r"\s+")


_VOID_TAGS = {
    "area", "base", "basefont", "bgsound", "br", "col", "command", "embed", "frame", "hr", "image", "img",
    "input", "isindex", "keygen", "link", "menuitem", "meta", "nextid", "param", "source", "spacer",
    "track", "wbr",
}  # fmt: skip
_BODY_TAG = re.compile(r"<body[\s/>]", re.IGNORECASE)
_FEED_CHARS = 1 << 13  # HTML is parsed this many characters at a time (their events held meanwhile)
_FLUSH_PARTS = 2048  # a section's text is cleaned and handed on after about this many pieces of it
HtmlEvent = tuple[str, int, str]  # ("text", 0, s), ("break", n, ""), ("heading", level, title)


class _Element:
    """An open element: its name; whether its subtree is walked for text ("walk"), is a heading whose
    text is its title ("heading"), is passed over ("skip": chrome, hidden, inside a heading) or gone
    ("drop": script, nav...); whether it has content yet (an empty cell adds no space)."""

    __slots__ = ("full", "heading", "mode", "name", "pre")

    def __init__(self, name: str, mode: str, heading: list[str] | None) -> None:
        self.name, self.mode, self.heading = name, mode, heading
        self.full = self.pre = False


class HtmlText(HTMLParser):
    """HTML read as a stream of events, _FEED_CHARS at a time, with no tree: memory follows the text,
    not the markup (BeautifulSoup's tree of a 10 MB table peaked at 1.6 GB). Pages read as they did
    through BeautifulSoup's html.parser tree (the same tokenizer): an end tag closes the latest open
    element of its name and those inside it, one with none open is ignored, void elements (br,
    img...) close at once; with a <body>, only the body's text is read; the title is the first
    <title>'s text, else the first <h1>'s."""

    def __init__(self, body_only: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.body_only = body_only
        self.in_body = not body_only
        self.body_seen = False
        self.stack: list[_Element] = []
        self.events: list[HtmlEvent] = []
        self.data: list[str] = []
        self.pre_depth = 0
        self.headings: list[list[str]] = []  # the text of each open h1-h3 so far (dropped tags' left out)
        self.title: str | None = None
        self.h1: str | None = None
        self._title_text: list[str] | None = None
        self._titled = False
        self._voids_closed: list[str] = []  # void elements whose end tag, if it comes, is ignored
        self._first_h1: list[str] | None = None

    def read(self, text: str) -> Iterator[HtmlEvent]:
        """The page's events, handed on after each slice is parsed."""
        for at in range(0, len(text), _FEED_CHARS):
            self.feed(text[at : at + _FEED_CHARS])
            yield from self._taken()
        self.close()
        self._data_end()
        while self.stack:
            self._leave(self.stack.pop())
        yield from self._taken()

    def _taken(self) -> list[HtmlEvent]:
        events, self.events = self.events, []
        return events

    def _mode(self) -> str:
        return self.stack[-1].mode if self.stack else "walk"

    # -- the tokenizer's calls ----------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._data_end()
        name, outer = tag.lower(), self._mode()
        if outer == "drop" or name in _DROP_TAGS:
            mode = "drop"
        elif outer != "walk" or name in _SKIP_TAGS or any(key == "hidden" for key, _ in attrs):
            mode = "skip"
        else:
            mode = "heading" if name in _SECTION_TAGS else "walk"
        if mode != "drop":
            self._content()  # a dropped element leaves its parent as empty as it was
        heading: list[str] | None = None
        if mode != "drop" and name in _SECTION_TAGS:
            heading = []
            self.headings.append(heading)
            if name == "h1" and self._first_h1 is None:  # the first to open, its text known at its end
                self._first_h1 = heading
        if name == "title" and not self._titled:
            self._titled, self._title_text = True, []
        element = _Element(name, mode, heading)
        self.stack.append(element)
        if name == "body" and self.body_only and not self.body_seen:
            self.body_seen = self.in_body = True
        if mode == "walk" and self.in_body:
            if name in _PARAGRAPH_TAGS:
                self.events.append(("break", 2, ""))
            elif name in _LINE_TAGS:
                self.events.append(("break", 1, ""))
            if name == "pre":
                element.pre = True
                self.pre_depth += 1
        if name in _VOID_TAGS:
            self._leave(self.stack.pop())
            self._voids_closed.append(name)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        name = tag.lower()
        if name in _VOID_TAGS:
            self._voids_closed.remove(name)  # <br/> is closed once
        else:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        name = tag.lower()
        if name in self._voids_closed:  # <br>...</br>: the void element was closed at its start
            self._voids_closed.remove(name)
            return
        self._data_end()  # the text before it ends here, even when the tag is ignored
        if not any(e.name == name for e in self.stack):
            return  # none of that name is open: ignored, as BeautifulSoup does
        while self.stack:
            element = self.stack.pop()
            self._leave(element)
            if element.name == name:
                break

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def unknown_decl(self, data: str) -> None:
        self._data_end()
        if data.upper().startswith("CDATA["):  # text, as BeautifulSoup's CData
            self.handle_data(data[len("CDATA[") :])
            self._data_end()
        else:
            self._content()

    def handle_comment(self, data: str) -> None:
        self._data_end()
        self._content()  # a comment, a doctype, an instruction: no text, but the element is not empty

    def handle_decl(self, decl: str) -> None:
        self.handle_comment(decl)

    def handle_pi(self, data: str) -> None:
        self.handle_comment(data)

    # -- what they mean ---------------------------------------------------------------------------
    def _content(self) -> None:
        if self.stack:
            self.stack[-1].full = True

    def _data_end(self) -> None:
        """The text between two tags, joined (BeautifulSoup's one string): to the open headings, the
        title, and as an event where it is walked."""
        if not self.data:
            return
        text = "".join(self.data)
        self.data.clear()
        self._content()
        if self._title_text is not None:
            self._title_text.append(text)
        mode = self._mode()
        if mode == "drop":
            return
        for heading in self.headings:
            heading.append(text)
        if mode == "walk" and self.in_body:
            self.events.append(("text", 0, text if self.pre_depth else _WHITESPACE.sub(" ", text)))

    def _leave(self, element: _Element) -> None:
        name = element.name
        if element.heading is not None:
            self.headings = [h for h in self.headings if h is not element.heading]  # by identity
            title = _WHITESPACE.sub(" ", " ".join(element.heading)).strip()
            if element.heading is self._first_h1:
                self.h1 = title or None
            if element.mode == "heading" and self.in_body:
                self.events += [("heading", _SECTION_TAGS[name], title), ("break", 2, "")]
        if name == "title" and self._title_text is not None:
            self.title = _WHITESPACE.sub(" ", " ".join(self._title_text)).strip() or None
            self._title_text = None
        if element.pre:
            self.pre_depth -= 1
        if element.mode == "walk" and self.in_body and element.full:
            if name in _PARAGRAPH_TAGS:
                self.events.append(("break", 2, ""))
            elif name in _LINE_TAGS:
                self.events.append(("break", 1, ""))
            elif name in _CELL_TAGS:
                self.events.append(("text", 0, " "))
        if name == "body" and self.body_only and not any(e.name == "body" for e in self.stack):
            self.in_body = False


def load_html(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """An HTML page without its chrome (nav, scripts, forms...), split into Units at h1-h3."""
    data = _read_bytes(path)
    declared = _META_CHARSET.search(data[:4096])
    warnings: list[str] = []
    text = decode_bytes(path, data, declared.group(1).decode("ascii") if declared else None, warnings)
    title, units = html_units(text)
    if not units:
        raise EmptyDocument(path, "no text in the page once scripts, navigation and forms are removed")
    return LoadedDocument(path, "html", (title or path.stem)[:TITLE_MAX_CHARS], units, tuple(warnings))


def html_units(text: str) -> tuple[str | None, tuple[Unit, ...]]:
    """An HTML document's title and its text in Units at h1-h3 (HTML pages, EPUB chapters), read as
    a stream (HtmlText): a long section's text is cleaned and handed on at line breaks, so memory
    follows the text, however much markup holds it."""
    return _html_units(text, body_only=bool(_BODY_TAG.search(text)))


def _html_units(text: str, body_only: bool) -> tuple[str | None, tuple[Unit, ...]]:
    parser = HtmlText(body_only)
    sections = Sections()
    parts: list[str] = []
    continued = False  # the parts go on a section whose text was handed on in the middle
    pending = 0  # newlines owed before the next text: breaks do not add up, the widest one wins

    def flush_parts(cut: bool = False) -> None:
        """The parts' text cleaned, a line at a time, to the section. With `cut` (a long section), the
        whitespace at the end stays in the parts, and the lines it breaks are told when the rest comes."""
        nonlocal continued
        text = "".join(parts)
        parts.clear()
        rest = ""
        if cut:
            end = len(text.rstrip())
            text, rest = text[:end], text[end:]
        if continued:
            lead = clean_newlines(text[: len(text) - len(text.lstrip())])
            if lead.count("\n") >= 2:
                sections.add("")  # a blank line where the text was cut
        for line in clean_text(text).split("\n"):
            sections.add(line.strip())
        parts.append(rest)
        continued = cut

    for kind, number, value in parser.read(text):
        if kind == "heading":
            flush_parts()
            sections.heading(number, value, value)
            pending = 2
        elif kind == "break":
            pending = max(pending, number)
        elif pending and not value.strip():
            continue  # indentation between blocks
        else:
            if pending:
                if len(parts) > _FLUSH_PARTS:  # a long section: its text so far handed on at this break
                    flush_parts(cut=True)
                parts.append("\n" * pending)
                pending = 0
            parts.append(value)
    flush_parts()
    if body_only and not parser.body_seen:  # "<body" was only in a comment or a script: read it all
        return _html_units(text, body_only=False)
    title = parser.title or parser.h1
    return title, tuple(Unit(clean_text(u.text), heading=u.heading) for u in sections.result())


# --- pdf ---------------------------------------------------------------------------------------------


def load_pdf(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """One Unit per page with text; empty or failing pages become warnings, not errors.

    The text comes from ingest.pdf (PDFium, pypdf as the fallback); the rules on pages are here. Pages
    that look scanned (ingest.pdf.MIN_CHARS_PER_SQ_INCH), or every page with `ingest.ocr = force`, are
    read by OCR (ingest.ocr) and marked OCR_HEADING; `off` reads the text layer only.
    """
    from lectern.ingest.pdf import extract, form_fields

    data = _read_bytes(path)
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
    of python-docx, openpyxl, ebooklib, PIL and RapidOCR, and those modules can import this one."""

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


# --- walking folders ---------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over '/'-separated relative paths: `*` stays in one folder, `**/` spans zero or more folders.

    A pattern without '/' matches the name at any depth ("*.pdf"), and "dir/**" also matches "dir" itself,
    so that excluding it prunes the whole folder.
    """
    pattern = pattern.strip().lstrip("/").removeprefix("./")
    if "/" not in pattern.rstrip("/"):
        pattern = "**/" + pattern
    pattern = pattern.rstrip("/") if not pattern.endswith("**/") else pattern
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _matches(rel: str, patterns: list[re.Pattern[str]]) -> bool:
    return any(p.fullmatch(rel) for p in patterns)


def _excluded(rel: str, patterns: list[re.Pattern[str]]) -> bool:
    """Excluded when the path or any folder above it matches, like .gitignore."""
    parts = rel.split("/")
    return any(_matches("/".join(parts[: i + 1]), patterns) for i in range(len(parts)))


@dataclass(frozen=True)
class Skipped:
    """A path the walk did not hand to a loader, and why (an ingest reports each one)."""

    path: Path
    reason: str


@dataclass
class Walk:
    """What a folder walk found: `files` to load, and everything it passed over with the reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return exc.strerror or type(exc).__name__


def _inside(real: str, boundary: str) -> bool:
    return real == boundary or real.startswith(boundary.rstrip(os.sep) + os.sep)


def iter_files(root: Path, include: list[str], exclude: list[str], *, follow_links: bool = False) -> Walk:
    """Supported files under root in sorted order, and the paths skipped with a reason each.

    Globs apply to the path relative to root; an empty `include` takes everything. A file-system
    error on one path (a link loop, a dangling link, a folder that cannot be listed) skips that
    path, with its reason, and the walk goes on. Symbolic links are followed when they lead inside
    root; those that lead outside it are skipped unless `follow_links`, files and folders alike.
    Each folder is walked once, so a link back up cannot recurse forever.
    """
    root = Path(root)
    walk = Walk()
    try:
        mode = os.stat(root).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if root.is_symlink():
                raise DocumentError(root, "dangling symbolic link: its target does not exist") from None
            raise DocumentError(root, "no such file or directory") from None
        raise DocumentError(root, f"cannot open: {_os_reason(exc)}") from None
    if stat.S_ISREG(mode):
        if is_supported(root):
            walk.files.append(root)
        else:
            walk.skipped.append(Skipped(root, "unsupported file type"))
        return walk
    if not stat.S_ISDIR(mode):  # /dev/zero, a FIFO: reading one would never end
        raise DocumentError(root, "not a regular file (a pipe, socket or device)")
    boundary = os.path.realpath(root)
    includes = [_glob_regex(p) for p in include if p.strip()]
    excludes = [_glob_regex(p) for p in exclude if p.strip()]
    found: list[tuple[str, Path]] = []
    skipped: list[tuple[str, Skipped]] = []
    seen: set[str] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            rel = folder.relative_to(root).as_posix()
            skipped.append((rel, Skipped(folder, f"cannot list folder: {_os_reason(exc)}")))
            continue
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if _excluded(rel, excludes):
                continue
            try:
                if entry.is_symlink():
                    os.stat(entry.path)  # a loop or a missing target raises here
                    target = os.path.realpath(entry.path)
                    if not follow_links and not _inside(target, boundary):
                        reason = (
                            f"symbolic link to {target}, outside {boundary} (--follow-links to ingest it)"
                        )
                        skipped.append((rel, Skipped(path, reason)))
                        continue
                directory = entry.is_dir()
                regular = not directory and entry.is_file()
            except OSError as exc:
                if exc.errno == errno.ENOENT and entry.is_symlink():
                    reason = f"dangling symbolic link to {os.readlink(entry.path)}"
                else:
                    reason = _os_reason(exc)
                skipped.append((rel, Skipped(path, reason)))
                continue
            if directory:
                pending.append(path)
            elif not includes or _matches(rel, includes):
                if regular:
                    found.append((rel, path))
                else:
                    skipped.append((rel, Skipped(path, "not a regular file (a pipe, socket or device)")))
    found.sort(key=lambda item: item[0].split("/"))
    for _, p in found:
        if is_supported(p):
            walk.files.append(p)
        else:
            skipped.append((p.relative_to(root).as_posix(), Skipped(p, "unsupported file type")))
    skipped.sort(key=lambda item: item[0].split("/"))
    walk.skipped = [s for _, s in skipped]
    return walk
