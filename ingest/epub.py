"""EPUB books to Units: each text document of the spine, in reading order, is a chapter; its sections
(h1-h3, as in HTML pages) are units under "chapter N: title" (N counts the documents with text)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lectern.errors import EmptyDocument, EncryptedDocument
from lectern.ingest.archive import check_zip
from lectern.ingest.decode import decode_bytes
from lectern.ingest.document import NO_OPTIONS, LoadedDocument, LoadOptions, Unit
from lectern.ingest.html_text import html_units
from lectern.ingest.office import doc_title, read_container


def _toc_titles(entries: Iterable[Any], out: dict[str, str]) -> dict[str, str]:
    """A book's table of contents as file name -> title (the first entry that names a file wins)."""
    for entry in entries:
        if isinstance(entry, tuple | list):  # (Section, [children])
            head, children = entry[0], entry[1] if len(entry) > 1 else []
            _toc_titles([head], out)
            _toc_titles(children, out)
            continue
        href = str(getattr(entry, "href", "") or "").split("#")[0]
        title = " ".join(str(getattr(entry, "title", "") or "").split())
        if href and title:
            out.setdefault(href, title)
    return out


def load_epub(path: Path, options: LoadOptions = NO_OPTIONS) -> LoadedDocument:
    """An EPUB book, chapter by chapter. DRM-encrypted books are refused (their text is ciphertext)."""
    names = check_zip(path, "EPUB")

    def read() -> LoadedDocument:
        import zipfile

        if "META-INF/encryption.xml" in names:
            with zipfile.ZipFile(path) as archive:
                listed = archive.read("META-INF/encryption.xml").decode("utf-8", "replace")
            if any(ext in listed for ext in (".xhtml", ".html", ".htm")):
                raise EncryptedDocument(path, "DRM-protected EPUB (its chapters are encrypted)")

        from ebooklib import ITEM_DOCUMENT, epub

        book = epub.read_epub(str(path), options={"ignore_ncx": True})
        toc = _toc_titles(book.toc, {})
        units: list[Unit] = []
        chapter = 0
        for idref, *_ in book.spine:
            item = book.get_item_with_id(idref)
            if item is None or item.get_type() != ITEM_DOCUMENT:
                continue
            heading_title, sections = html_units(decode_bytes(path, item.get_content() or b" "))
            sections = tuple(u for u in sections if u.text.strip())
            if not sections:
                continue
            chapter += 1
            name = toc.get(item.get_name()) or (sections[0].heading or "").split(" > ")[0] or heading_title
            where = f"chapter {chapter}: {name}" if name else f"chapter {chapter}"
            for unit in sections:
                inner = unit.heading
                if inner and name and inner.split(" > ")[0] == name:
                    inner = inner.partition(" > ")[2] or None
                units.append(Unit(unit.text, heading=f"{where} > {inner}" if inner else where))
        if not units:
            raise EmptyDocument(path, "no text in the book's chapters")
        metadata = book.get_metadata("DC", "title")
        title = str(metadata[0][0]) if metadata else None
        return LoadedDocument(path, "epub", doc_title(title, None, path), tuple(units), pages=chapter)

    return read_container(path, "EPUB", read)
