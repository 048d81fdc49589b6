"""HTML pages to text: the page's chrome (navigation, scripts, forms) left out, the text in Units at
h1-h3, read as a stream of parser events so that memory follows the text, not the markup. EPUB
chapters are read by the same `html_units`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from lectern.errors import EmptyDocument
from lectern.ingest.decode import clean_newlines, clean_text, decode_bytes, read_bytes
from lectern.ingest.document import NO_OPTIONS, TITLE_MAX_CHARS, LoadedDocument, LoadOptions, Sections, Unit

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
    data = read_bytes(path)
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
