"""What a loader is given and returns: `LoadOptions` in, a `LoadedDocument` of `Unit`s out (a page,
a section under its heading path, a slide, a block of rows), and `Sections`, which collects units
under headings for Markdown, HTML and Word alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
