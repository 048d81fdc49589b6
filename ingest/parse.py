"""A parse worker's part of an ingest: one file loaded, chunked by the embedder's word pieces and
tokenised for BM25 (`parse_file`), in a worker process, with what each worker loads once (the
tokenizer, a static model's table) kept per process. With the fast profile's static model the
chunks are embedded here too, from the pieces they were cut with. A worker starts with
`exit_with_parent`, so that it never outlives the ingest that spawned it."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lectern.errors import DocumentError, EmptyDocument
from lectern.ingest import bm25_terms
from lectern.ingest.chunk import MAX_CONTEXT_TOKENS, Chunk, context_line, embedding_text, iter_chunks
from lectern.ingest.document import LoadedDocument, LoadOptions, Unit
from lectern.ingest.loaders import load
from lectern.ingest.settings import IngestSettings
from lectern.ingest.stores import NewChunk
from lectern.ingest.wordpiece import HFTokenizer, word_offsets

Job = tuple[Path, str, str, int]  # a file to ingest: its path, source key, content hash and size

if TYPE_CHECKING:
    from lectern.ingest.static_model import StaticTable


@dataclass
class Parsed:
    """What a parse worker sends back: everything but the vectors, unless a static model embedded
    the chunks there, from the pieces it cut them with (`table_folder`)."""

    source: str
    content_hash: str
    size: int
    title: str
    format: str
    pages: int
    warnings: list[str]
    chunks: list[NewChunk]
    vectors: np.ndarray | None = None
    ocr_pages: int = 0
    ocr_cached: int = 0
    ocr_seconds: float = 0.0


def _clip_context(context: str, offsets: Callable[[Sequence[str]], list[list[tuple[int, int]]]]) -> str:
    spans = offsets([context])[0]
    if len(spans) <= MAX_CONTEXT_TOKENS:
        return context
    return context[: spans[MAX_CONTEXT_TOKENS - 1][1]]


_WORKER_TOKENIZER: dict[str | None, Any] = {}


_WORKER_HF_TOKENIZER: dict[str, HFTokenizer] = {}


def _hf_tokenizer(tokenizer_file: str) -> HFTokenizer:
    """The embedder's tokenizer (by its file), loaded once per process."""
    if tokenizer_file not in _WORKER_HF_TOKENIZER:
        _WORKER_HF_TOKENIZER[tokenizer_file] = HFTokenizer(tokenizer_file)
    return _WORKER_HF_TOKENIZER[tokenizer_file]


def offsets_fn(tokenizer_file: str | None) -> Callable[[Sequence[str]], list[list[tuple[int, int]]]]:
    """The embedder's tokenizer's offsets (the fake embedder's words without a file)."""
    if tokenizer_file not in _WORKER_TOKENIZER:
        _WORKER_TOKENIZER[tokenizer_file] = (
            _hf_tokenizer(tokenizer_file).offsets if tokenizer_file else word_offsets
        )
    fn: Callable[[Sequence[str]], list[list[tuple[int, int]]]] = _WORKER_TOKENIZER[tokenizer_file]
    return fn


def new_chunks(
    doc: LoadedDocument,
    chunks: Iterable[Chunk],
    offsets: Callable[[Sequence[str]], list[list[tuple[int, int]]]],
) -> Iterator[NewChunk]:
    """Chunks with their context line (title > heading, clipped) and BM25 terms, as stored."""
    contexts: dict[str | None, str] = {}
    for ch in chunks:
        key = ch.heading
        if key not in contexts:  # the line depends on the heading alone: no unit is looked up (streams)
            contexts[key] = _clip_context(context_line(doc, Unit("", heading=key)), offsets)
        ctx = contexts[key]
        terms = bm25_terms.terms(embedding_text(ctx, ch.text))
        yield NewChunk(ch.chunk_id, ch.page, ch.heading, ch.start, ch.end, ch.ordinal, ch.text, ctx, terms)


_WORKER_TABLE: dict[tuple[str, str], tuple[StaticTable, np.ndarray]] = {}


def _table(folder: str, tokenizer_file: str) -> tuple[StaticTable, np.ndarray]:
    """A static model, and the chunker's ids mapped to its own: once per process."""
    key = (folder, tokenizer_file)
    if key not in _WORKER_TABLE:
        from lectern.ingest.static_model import StaticTable

        table = StaticTable(Path(folder))
        _WORKER_TABLE[key] = (table, table.ids_from(tokenizer_file))
    return _WORKER_TABLE[key]


def _static_vectors(
    table: StaticTable,
    ids_map: np.ndarray,
    cut: HFTokenizer,
    chunks: Sequence[Chunk],
    new: Sequence[NewChunk],
) -> np.ndarray:
    """The vectors of `embedding_text(context, text)` from the pieces the chunker already cut: a
    context line's pieces, then the chunk's, as the tokenizer cuts the two joined by a newline."""
    contexts = sorted({c.context for c in new if c.context})
    context_ids = dict(zip(contexts, (p.ids for p in cut.pieces(contexts)), strict=True))
    empty = np.zeros(0, dtype=np.int64)
    texts = []
    for chunk, row in zip(chunks, new, strict=True):
        assert chunk.ids is not None
        texts.append(ids_map[np.concatenate([context_ids.get(row.context, empty), chunk.ids])])
    return table.encode_ids(texts)


_WORKER_EVENTS: Any = None  # a parse worker's queue to the ingest that started it (per-page OCR progress)


def parse_file(
    path: str,
    source: str,
    content_hash: str,
    size: int,
    tokenizer_file: str | None,
    chunk_tokens: int,
    overlap: int,
    table_folder: str | None = None,
    options: LoadOptions = LoadOptions(),
) -> Parsed:
    """Load, chunk and tokenise for BM25 one file; runs in a worker process. With a static model's
        `table_folder`, the chunks are embedded here too, from the pieces they were cut with. A worker starts with
    `exit_with_parent`, so that it never outlives the ingest that spawned it."""
    offsets = offsets_fn(tokenizer_file)
    if _WORKER_EVENTS is not None and options.on_page is None:
        events = _WORKER_EVENTS
        options = dataclasses.replace(options, on_page=lambda done, total: events.put((path, done, total)))
    doc = load(Path(path), options)
    if table_folder and tokenizer_file:
        table, ids_map = _table(table_folder, tokenizer_file)
        cut = _hf_tokenizer(tokenizer_file)  # the very tokenizer `offsets` belongs to
        chunks = list(iter_chunks(doc, source, cut.pieces, chunk_tokens, overlap))
        new = list(new_chunks(doc, chunks, offsets))
        vectors = _static_vectors(table, ids_map, cut, chunks, new) if new else None
    else:
        new = list(new_chunks(doc, iter_chunks(doc, source, offsets, chunk_tokens, overlap), offsets))
        vectors = None
    if not new:
        raise EmptyDocument(path, "no text to index")
    return Parsed(
        source, content_hash, size, doc.title, doc.format, doc.pages, list(doc.warnings), new, vectors,
        doc.ocr_pages, doc.ocr_cached, doc.ocr_seconds,
    )  # fmt: skip


def parse_or_error(
    job: Job,
    tokenizer_file: str | None,
    chunk_tokens: int,
    overlap: int,
    table_folder: str | None = None,
    options: LoadOptions = LoadOptions(),
) -> Parsed | DocumentError:
    """parse_file, with what fails the file (and only the file) returned as its DocumentError."""
    path, source, digest, size = job
    try:
        return parse_file(
            str(path), source, digest, size, tokenizer_file, chunk_tokens, overlap, table_folder, options
        )
    except DocumentError as err:
        return err
    except Exception as err:  # a loader bug fails this file, not the ingest
        return DocumentError(path, f"unexpected {type(err).__name__}: {err}")


def load_options(settings: IngestSettings, workers: int = 1) -> LoadOptions:
    """What the loaders are told (OCR, a PDF's decompression budgets), with ONNX Runtime's threads
    shared among the parse workers."""
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    return LoadOptions(
        settings.ocr, settings.ocr_dpi, settings.ocr_cache, threads, settings.ocr_engine,
        pdf_max_stream_bytes=settings.pdf_max_stream_bytes, pdf_max_text_chars=settings.pdf_max_text_chars,
    )  # fmt: skip


PARENT_POLL_S = 0.5  # how often a parse worker checks that the ingest that started it is alive


def exit_with_parent(parent: int, events: Any = None) -> None:
    """Parse workers' initialiser: keep the queue that carries per-page OCR progress to the parent, and
    exit as soon as the parent is gone. Killed with SIGKILL (the OOM killer's way), the parent cannot
    shut its pool down, and its workers sat blocked under init for minutes holding its stdout and
    stderr open (a caller waiting on those pipes hung)."""
    global _WORKER_EVENTS
    _WORKER_EVENTS = events
    if os.getppid() != parent:
        os._exit(1)  # it died while this worker started

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="lectern-parent-watch", daemon=True).start()
