"""Office files and tables: Word (.docx), PowerPoint (.pptx), Excel (.xlsx) and CSV/TSV, to Units.

- Word: headings kept as headings (a unit per section, under its heading path, as Markdown is),
  tables as Markdown tables; where the file records page breaks, each unit has its page.
- PowerPoint: a unit per slide, its shapes in reading order, then its notes; "slide N: title".
- Excel and CSV: blocks of rows, each a Markdown table under the sheet's header row, small enough to
  be one chunk, so a chunk stands alone; "sheet S, rows a-b". Read streamed (openpyxl's read_only
  mode, csv's reader): memory stays flat, and a file past MAX_ROWS is refused as it is read.

Every zip container is checked first (ingest.archive): empty, encrypted, old binary formats and zip
bombs are refused with their reason; a library's own error on a corrupt file becomes CorruptDocument.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from lectern.errors import CorruptDocument, DocumentError, EmptyDocument, TooLarge
from lectern.ingest.archive import check_zip
from lectern.ingest.decode import clean_text, stream_encoding
from lectern.ingest.document import NO_OPTIONS, TITLE_MAX_CHARS, LoadedDocument, LoadOptions, Sections, Unit

MAX_ROWS = 200_000  # rows of a spreadsheet or CSV file, all sheets together
MAX_COLUMNS = 200  # cells of a row past this are left out (with a warning)
ROWS_PER_BLOCK = 25  # rows in one block at most (the header row besides)
BLOCK_CHARS = 600  # and about this many characters: a block of rows fits one chunk of 200 word pieces
HEADER_SEARCH = 10  # a sheet's header row is the likeliest of its first non-empty rows (header_index)
_SNIFF = 1 << 16
T = TypeVar("T")


def read_container(path: Path, kind: str, open_fn: Callable[[], T]) -> T:
    """A library's reading of a checked container; any error it raises is the file's CorruptDocument."""
    try:
        return open_fn()
    except DocumentError:
        raise
    except Exception as exc:  # python-docx, python-pptx and openpyxl raise anything on a damaged file
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CorruptDocument(path, f"corrupt {kind} file: {detail}") from exc


def doc_title(core_title: str | None, fallback: str | None, path: Path) -> str:
    for title in (core_title, fallback):
        if title and (cleaned := " ".join(title.split())):
            return cleaned[:TITLE_MAX_CHARS]
    return path.stem


# --- tables ------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A cell as table text: numbers without a spurious .0, dates in ISO form, one line, pipes escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = str(int(value))
    elif isinstance(value, dt.datetime):
        text = value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    elif isinstance(value, dt.date | dt.time):
        text = value.isoformat()
    else:
        text = str(value)
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(rows: list[list[str]]) -> str:
    """Rows of cell texts as a Markdown table, the first row its header."""
    width = max(len(r) for r in rows)
    padded = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(r) + " |" for r in padded[1:]]
    return "\n".join(lines)


def _trimmed(row: Iterable[Any], warnings: list[str], where: str) -> list[str]:
    cells = [_cell(v) for v in row]
    while cells and not cells[-1]:
        cells.pop()
    if len(cells) > MAX_COLUMNS:
        if not any(w.startswith(where) and "columns" in w for w in warnings):
            warnings.append(f"{where}: {len(cells)} columns; the first {MAX_COLUMNS} are read")
        cells = cells[:MAX_COLUMNS]
    return cells


def header_index(rows: list[list[str]]) -> int:
    """Which of a sheet's first non-empty rows is its header: the first that fills as many cells as the
    fullest of them, or all but its first (a corner left blank over row labels). Notes written above a
    table (a title, "Lots of people simply cannot resist writing some notes at the top of their
    spreadsheets", as readxl's deaths.xlsx has it) fill fewer and are not taken for it."""
    counts = [sum(1 for c in row if c) for row in rows]
    most = max(counts)
    return next(
        i for i, (row, n) in enumerate(zip(rows, counts, strict=True))
        if n == most or (n == most - 1 and not row[0] and n == len(row) - 1)
    )  # fmt: skip


def row_blocks(
    path: Path, rows: Iterable[tuple[int, Iterable[Any]]], where: str, counted: list[int], warnings: list[str]
) -> Iterator[Unit]:
    """Blocks of (row number, cells) rows as units: the header row (header_index) is repeated atop
    every block, the rows above it are a unit of their own; "<where>rows a-b" (spreadsheet row
    numbers). `counted` holds the rows read so far in the file, so MAX_ROWS bounds a file, not a sheet."""
    label = where.removesuffix(", ")

    def nonempty() -> Iterator[tuple[int, list[str]]]:
        for number, raw in rows:
            counted[0] += 1
            if counted[0] > MAX_ROWS:
                at = f" (at {label})" if label else ""
                raise TooLarge(path, f"more than {MAX_ROWS:,} rows{at}: split the file to ingest it")
            cells = _trimmed(raw, warnings, label or "rows")
            if any(cells):
                yield number, cells

    cleaned = nonempty()
    head = list(itertools.islice(cleaned, HEADER_SEARCH))
    if not head:
        return
    at = header_index([cells for _, cells in head])
    if at:
        notes = "\n".join(" ".join(c for c in cells if c) for _, cells in head[:at])
        yield Unit(notes, heading=f"{where}rows {head[0][0]}-{head[at - 1][0]}")
    first, header = head[at]
    last = first
    block: list[list[str]] = []
    size = 0

    def unit() -> Unit:
        return Unit(markdown_table([header, *block]), heading=f"{where}rows {first}-{last}")

    for number, cells in itertools.chain(head[at + 1 :], cleaned):
        chars = sum(len(c) + 3 for c in cells)
        if block and (len(block) >= ROWS_PER_BLOCK or size + chars > BLOCK_CHARS):
            yield unit()
            block, size = [], 0
        if not block:
            first = number
        block.append(cells)
        last = number
        size += chars
    yield unit()


# --- Word --------------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^(?:Heading|Überschrift|Titre|Título|Titolo)\s*(\d)$", re.IGNORECASE)


def _heading_level(style_name: str | None) -> int | None:
    if not style_name:
        return None
    if style_name == "Title":
        return 1
    match = _HEADING_STYLE.match(style_name)
    return int(match.group(1)) if match else None


def _table_rows(table: Any) -> list[list[str]]:
    """A Word or PowerPoint table's rows of cell texts, a merged cell once."""
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            key = id(getattr(cell, "_tc", cell))
            if key in seen:
                continue
            seen.add(key)
            cells.append(_cell(cell.text))
        rows.append(cells)
    return [r for r in rows if any(r)]


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _page_breaks(paragraph: Any, rendered: bool) -> tuple[int, int]:
    """A paragraph's page breaks before its first text and after it: Word's recorded ones (rendered),
    else the author's explicit ones. Word records a break inside a paragraph that runs on to the next
    page, and at the start of one that begins a page."""
    before = after = 0
    seen_text = False
    for el in paragraph.iter(f"{_W}t", f"{_W}lastRenderedPageBreak", f"{_W}br"):
        if el.tag == f"{_W}t":
            seen_text = seen_text or bool(el.text and el.text.strip())
        elif (el.tag == f"{_W}lastRenderedPageBreak") if rendered else (el.get(f"{_W}type") == "page"):
            if seen_text:
                after += 1
            else:
                before += 1
    return before, after


def load_docx(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """A Word file: a unit per section under its heading path, tables as Markdown tables, and the page
    of each unit where Word recorded its page breaks (or the author put explicit ones)."""
    check_zip(path, "Word")

    def read() -> LoadedDocument:
        import docx
        from docx.table import Table

        document = docx.Document(str(path))
        body = document.element.body
        # Word records where it broke pages when it last laid the file out; failing that, count
        # the author's explicit page breaks. A file with neither has no pages (page None).
        rendered = next(body.iter(f"{_W}lastRenderedPageBreak"), None) is not None
        explicit = (
            not rendered
            and next((b for b in body.iter(f"{_W}br") if b.get(f"{_W}type") == "page"), None) is not None
        )
        sections = Sections()
        page = 1
        if rendered or explicit:
            sections.turn_page(page)
        title: str | None = None
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                rows = _table_rows(block)
                if rows:
                    sections.add(markdown_table(rows))
                    sections.add("")
                continue
            before, after = _page_breaks(block._p, rendered) if rendered or explicit else (0, 0)
            if before:
                page += before
                sections.turn_page(page)
            text = " ".join(block.text.split())
            if not text:  # (its breaks, if any, all came before any text)
                continue
            style = block.style.name if block.style is not None else None
            level = _heading_level(style)
            if level is not None:
                title = title or text
                sections.heading(level, text, text)
            elif style and "List" in style:
                sections.add(f"- {text}")
            else:
                sections.add(text)
                sections.add("")
            if after:  # the paragraph runs on to the next page: it is cited at the page it starts on
                page += after
                sections.turn_page(page)
        units = tuple(Unit(clean_text(u.text), u.page, u.heading) for u in sections.result())
        if not units:
            raise EmptyDocument(path, "no text in the document")
        pages = page if rendered or explicit else 1
        name = doc_title(document.core_properties.title, title, path)
        return LoadedDocument(path, "docx", name, units, pages=pages)

    return read_container(path, "Word", read)


# --- PowerPoint --------------------------------------------------------------------------------------


def _shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    """A slide's shapes in reading order (top to bottom, left to right), groups opened."""

    def place(shape: Any) -> tuple[int, int]:
        return (shape.top or 0, shape.left or 0)

    for shape in sorted(shapes, key=place):
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shapes(shape.shapes)
        else:
            yield shape


def load_pptx(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """A PowerPoint file: one unit per slide with text, its shapes then its speaker notes; its
    heading "slide N: title" is how a citation names it."""
    check_zip(path, "PowerPoint")

    def read() -> LoadedDocument:
        from pptx import Presentation

        deck = Presentation(str(path))
        units: list[Unit] = []
        first_title: str | None = None
        n_slides = 0
        for number, slide in enumerate(deck.slides, start=1):
            n_slides = number
            title_shape = slide.shapes.title
            title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
            parts = [title] if title else []
            for shape in _shapes(slide.shapes):
                if title_shape is not None and shape.shape_id == title_shape.shape_id:
                    continue
                if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                    parts.append(shape.text_frame.text)
                elif getattr(shape, "has_table", False) and (rows := _table_rows(shape.table)):
                    parts.append(markdown_table(rows))
            frame = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
            if frame is not None and (notes := frame.text.strip()):
                parts.append(f"Notes: {notes}")
            text = clean_text("\n\n".join(parts))
            if text:
                units.append(Unit(text, heading=f"slide {number}: {title}" if title else f"slide {number}"))
                first_title = first_title or title or None
        if not units:
            raise EmptyDocument(
                path, f"no text on its {n_slides} slide{'s' if n_slides != 1 else ''} or in their notes"
            )
        name = doc_title(deck.core_properties.title, first_title, path)
        return LoadedDocument(path, "pptx", name, tuple(units), pages=n_slides)

    return read_container(path, "PowerPoint", read)


# --- Excel and CSV -----------------------------------------------------------------------------------


def load_xlsx(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """An Excel workbook, streamed (openpyxl read_only, formulas as their last computed values): each
    sheet in blocks of rows under its header row; "sheet S, rows a-b"."""
    check_zip(path, "Excel")

    def read() -> LoadedDocument:
        import openpyxl

        book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
        try:
            units: list[Unit] = []
            warnings: list[str] = []
            counted = [0]
            sheets = book.worksheets
            for sheet in sheets:
                # read_only trusts the sheet's recorded extent, which some writers leave at A1 (readxl's
                # datasets.xlsx: 150 rows of iris read as one cell); the rows are read to the end anyway
                sheet.reset_dimensions()
                rows = enumerate(sheet.iter_rows(values_only=True), start=1)
                units.extend(row_blocks(path, rows, f"sheet {sheet.title}, ", counted, warnings))
            title = book.properties.title
        finally:
            book.close()
        if not units:
            raise EmptyDocument(path, f"no cells with values in its {len(sheets)} sheet(s)")
        return LoadedDocument(
            path, "xlsx", doc_title(title, None, path), tuple(units), tuple(warnings), len(sheets)
        )

    return read_container(path, "Excel", read)


def load_csv(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """A CSV (or TSV) file, streamed: blocks of rows under its header row; "rows a-b"."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF)
    except OSError as exc:
        raise CorruptDocument(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from exc
    if not head:
        raise EmptyDocument(path, "file is empty (0 bytes)")
    encoding = stream_encoding(path, head)
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    else:
        sample = head.decode(encoding, errors="ignore")
        try:
            delimiter = csv.Sniffer().sniff(sample[: 1 << 14], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    warnings: list[str] = []
    try:
        with path.open(encoding=encoding, errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            units = tuple(row_blocks(path, enumerate(reader, start=1), "", [0], warnings))
    except csv.Error as exc:
        raise CorruptDocument(path, f"malformed CSV: {exc}") from exc
    except OSError as exc:
        raise CorruptDocument(path, f"cannot read file: {exc.strerror or type(exc).__name__}") from exc
    if not units:
        raise EmptyDocument(path, "no rows with values")
    return LoadedDocument(path, "csv", path.stem[:TITLE_MAX_CHARS], units, tuple(warnings))
