"""Token-exact chunking with the embedder's own tokenizer, so no chunk is cut by the model's window.

A chunk never crosses a Unit (a PDF page, a Markdown section). Its end is moved back to a sentence or
paragraph boundary when one lies in the window's last third, and consecutive chunks overlap by about
`overlap_tokens`. Each chunk keeps character offsets into its unit, and a stable id.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from lectern.ingest.document import OCR_HEADING, LoadedDocument, Unit

OffsetsFn = Callable[[Sequence[str]], list[list[tuple[int, int]]]]


@dataclass(frozen=True)
class Pieces:
    """One text's word pieces: character spans, and ids where the tokenizer gives them."""

    spans: list[tuple[int, int]]
    ids: np.ndarray | None = None


TokenizeFn = Callable[[Sequence[str]], Sequence[list[tuple[int, int]] | Pieces]]
"""An OffsetsFn, or a tokenizer that gives Pieces (HFTokenizer.pieces)."""
_BREAK = re.compile(r"\n\s*\n|(?<=[.!?:;])[\"')\]]*\s+|\n")
MAX_CONTEXT_TOKENS = 48  # cap on the title/heading line embedded with each chunk


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    text: str
    page: int | None
    heading: str | None
    start: int  # character offsets in the unit (page) text
    end: int
    ordinal: int  # position in the document
    # the chunk's word-piece ids, when the tokenizer gave them (a static model embeds from these)
    ids: np.ndarray | None = field(default=None, compare=False, repr=False)


def chunk_id(source_key: str, ordinal: int, page: int | None, start: int, text: str) -> str:
    """Stable: the same source, position and content always give the same id."""
    h = hashlib.sha256(f"{source_key}\x00{ordinal}\x00{page}\x00{start}\x00".encode())
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


def _break_points(text: str) -> list[int]:
    """Character positions just after a sentence or paragraph end, in order."""
    return [m.end() for m in _BREAK.finditer(text)]


def split_unit(
    text: str, spans: list[tuple[int, int]], chunk_tokens: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """Character ranges of the chunks of one unit, given its word-piece spans."""
    return [
        (spans[first][0], spans[last - 1][1])
        for first, last in split_pieces(text, spans, chunk_tokens, overlap_tokens)
    ]


def split_pieces(
    text: str, spans: list[tuple[int, int]], chunk_tokens: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """The chunks of one unit as word-piece ranges [first, last), given its pieces' spans."""
    n = len(spans)
    if n == 0:
        return []
    if n <= chunk_tokens:
        return [(0, n)]
    overlap = min(overlap_tokens, chunk_tokens // 2)
    breaks = _break_points(text)
    starts = [s for s, _ in spans]

    def word_start(i: int) -> bool:
        """A cut before piece i does not split a word (no cut between "token" and "##ization")."""
        if i <= 0 or i >= n or spans[i - 1][1] < spans[i][0]:
            return True
        c = spans[i][0]
        return not (text[c].isalnum() and text[c - 1].isalnum())

    ranges: list[tuple[int, int]] = []
    first = 0
    while first < n:
        last = min(first + chunk_tokens, n)  # exclusive token index
        if last < n:
            lo_char = spans[first + (2 * chunk_tokens) // 3][0]
            hi_char = spans[last][0]
            i = bisect.bisect_right(breaks, hi_char) - 1
            if i >= 0 and breaks[i] > lo_char:
                last = max(bisect.bisect_left(starts, breaks[i]), first + 1)
            while last > first + 1 and not word_start(last):
                last -= 1
        ranges.append((first, last))
        if last >= n:
            break
        previous = first
        first = max(last - overlap, first + 1)
        while first > previous + 1 and not word_start(first):
            first -= 1
        # start the next chunk at a sentence start when one lies in the overlap
        j = bisect.bisect_left(breaks, spans[first][0])
        if j < len(breaks) and breaks[j] < spans[last - 1][1]:
            k = bisect.bisect_left(starts, breaks[j])
            if first <= k < last:
                first = k
    return ranges


def context_line(doc: LoadedDocument, unit: Unit) -> str:
    """The title and heading path, embedded and indexed with each chunk (not shown as its text). The
    OCR mark is no heading: left out, so that "OCR" is no word every scanned page matches."""
    parts = [doc.title]
    if unit.heading and unit.heading not in (doc.title, OCR_HEADING):
        parts.append(unit.heading)
    return " > ".join(p for p in parts if p)


TOKENIZE_CHARS = 1 << 20  # characters tokenized per call: bounds the tokenizer's memory


def chunk_document(
    doc: LoadedDocument,
    source_key: str,
    offsets: OffsetsFn,
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """All chunks of a document, in order. `offsets` is the embedder's tokenizer."""
    return list(iter_chunks(doc, source_key, offsets, chunk_tokens, overlap_tokens))


def iter_chunks(
    doc: LoadedDocument,
    source_key: str,
    offsets: TokenizeFn,
    chunk_tokens: int,
    overlap_tokens: int,
    units: Iterable[Unit] | None = None,
) -> Iterator[Chunk]:
    """The chunks of a document in order, tokenizing a few units at a time (at most about
    TOKENIZE_CHARS characters per call), so a long text never has all its word pieces in memory.
    Offsets and ids count from the start of the page (the whole text for text files). With a
    tokenizer that gives Pieces with ids, each chunk carries its pieces' ids. `units` (by default the
    document's) may be a stream, read as it goes (ingest.loaders.stream_text)."""
    ordinal = 0
    stream = iter(doc.units if units is None else units)
    ahead = next(stream, None)
    while ahead is not None:
        batch = [ahead]
        size = len(ahead.text)
        ahead = next(stream, None)
        while ahead is not None and size + len(ahead.text) <= TOKENIZE_CHARS:
            size += len(ahead.text)
            batch.append(ahead)
            ahead = next(stream, None)
        for unit, tokenized in zip(batch, offsets([u.text for u in batch]), strict=True):
            pieces = tokenized if isinstance(tokenized, Pieces) else Pieces(tokenized)
            spans, ids = pieces.spans, pieces.ids
            for first, last in split_pieces(unit.text, spans, chunk_tokens, overlap_tokens):
                start, end = spans[first][0], spans[last - 1][1]
                body = unit.text[start:end]
                if not body.strip():
                    continue
                at = unit.offset + start
                cid = chunk_id(source_key, ordinal, unit.page, at, body)
                piece_ids = None if ids is None else ids[first:last]
                yield Chunk(cid, body, unit.page, unit.heading, at, unit.offset + end, ordinal, piece_ids)
                ordinal += 1


def embedding_text(context: str, text: str) -> str:
    """What the embedder and BM25 see: the context line, then the chunk."""
    return f"{context}\n{text}" if context else text
