"""Ingest: files to chunks to vectors to a collection, incremental, idempotent and reported.

Parsing and chunking (PDFium or pypdf, the tokenizer) run in a worker process while the main process embeds
the previous files (torch uses the other core), so both cores stay busy; the fast profile's static
model embeds in the workers themselves, from the word pieces they cut the chunks with. A file whose content hash
is unchanged is skipped before it is parsed; a changed one replaces exactly its own chunks, in one
transaction, so an ingest killed at any moment leaves every file either fully old or fully new.

The files are listed and hashed here, whatever the runner; the changed ones go to a runner of
RUNNERS (`ingest.runner`): `local`, the worker processes above, or `ray`, Ray Data on this machine
or a cluster (ingest/ray_runner.py). Both write through Work.write, so they build the same collection.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lectern.errors import (
    ChunkTooLarge,
    DocumentError,
    EmptyDocument,
    LecternError,
    ProfileMismatch,
    Stopped,
    UnknownKey,
)
from lectern.ingest import bm25_terms
from lectern.ingest.chunk import MAX_CONTEXT_TOKENS, Chunk, context_line, embedding_text, iter_chunks
from lectern.ingest.embed import Embedder, table_folder
from lectern.ingest.load import (
    LOADERS,
    LoadedDocument,
    LoadOptions,
    Unit,
    iter_files,
    load,
    load_text,
    stream_text,
)
from lectern.ingest.settings import EmbedSettings, IngestSettings
from lectern.ingest.store_backends import as_target
from lectern.ingest.stores import DocumentRow, Manifest, NewChunk, Store, StoreWriter, Target
from lectern.ingest.wordpiece import HFTokenizer, word_offsets

if TYPE_CHECKING:
    from lectern.ingest.static_model import StaticTable

EMBED_SLICE = 256  # chunks embedded per call: bounds memory and keeps progress moving
PAGE_COUNT_S = 2.0  # at most this long counting PDFs' pages before parsing (progress totals)
Job = tuple[Path, str, str, int]  # a file to ingest: its path, source key, content hash and size


@dataclass
class FileResult:
    path: str
    status: str  # added | updated | unchanged | skipped | failed
    chunks: int = 0
    pages: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    ocr_pages: int = 0  # pages or images read by OCR (from the cache or recognised now)
    ocr_cached: int = 0
    ocr_seconds: float = 0.0


@dataclass
class IngestReport:
    collection: str
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # a progress callback raised Stopped: the files finished before it are kept

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def added(self) -> list[FileResult]:
        return self._with("added")

    @property
    def updated(self) -> list[FileResult]:
        return self._with("updated")

    @property
    def unchanged(self) -> list[FileResult]:
        return self._with("unchanged")

    @property
    def skipped(self) -> list[FileResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failed")

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results if r.status in ("added", "updated"))

    @property
    def pages(self) -> int:
        return sum(r.pages for r in self.results if r.status in ("added", "updated"))

    @property
    def ok(self) -> bool:
        return not self.failed

    def _ocr(self) -> tuple[int, int, float]:
        done = [r for r in self.results if r.status in ("added", "updated")]
        return (
            sum(r.ocr_pages for r in done),
            sum(r.ocr_cached for r in done),
            sum(r.ocr_seconds for r in done),
        )

    @property
    def ocr_pages_per_s(self) -> float | None:
        """Pages recognised per second of a parse worker's time (cache hits left out); None without any."""
        pages, cached, seconds = self._ocr()
        return (pages - cached) / seconds if pages > cached and seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        ocr_pages, ocr_cached, _ = self._ocr()
        rate = self.ocr_pages_per_s
        return {
            "collection": self.collection,
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "chunks": self.chunks,
            "pages": self.pages,
            "ocr_pages": ocr_pages,
            "ocr_cached": ocr_cached,
            "ocr_pages_per_s": round(rate, 3) if rate is not None else None,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
        }


@dataclass
class Progress:
    """Where an ingest stands, for progress bars."""

    files_total: int
    files_done: int = 0
    pages: int = 0  # pages done: of the file in hand, up to its last chunk embedded
    # pages to do: the PDFs' counted before they are parsed (ingest.pdf.page_count), the other files'
    # added as each is parsed (a PDF's count corrected then too)
    pages_total: int = 0
    chunks: int = 0
    chunks_embedded: int = 0
    current: str | None = None
    ocr_pages: int = 0  # pages read by OCR so far, told page by page as the parse workers finish them
    bytes_total: int = 0  # the size of the files to parse (known once they are hashed)
    bytes_done: int = 0  # of those, the files finished, and how far into a streamed text file

    @property
    def fraction(self) -> float:
        """How much of the work is done, 0 to 1: by bytes when sizes are known, else by files."""
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        return self.files_done / self.files_total if self.files_total else 0.0


ProgressFn = Callable[[Progress], None]


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


def file_hash(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


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


def _offsets_fn(tokenizer_file: str | None) -> Callable[[Sequence[str]], list[list[tuple[int, int]]]]:
    """The embedder's tokenizer's offsets (the fake embedder's words without a file)."""
    if tokenizer_file not in _WORKER_TOKENIZER:
        _WORKER_TOKENIZER[tokenizer_file] = (
            _hf_tokenizer(tokenizer_file).offsets if tokenizer_file else word_offsets
        )
    fn: Callable[[Sequence[str]], list[list[tuple[int, int]]]] = _WORKER_TOKENIZER[tokenizer_file]
    return fn


def _new_chunks(
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
    `table_folder`, the chunks are embedded here too, from the pieces they were cut with."""
    offsets = _offsets_fn(tokenizer_file)
    if _WORKER_EVENTS is not None and options.on_page is None:
        events = _WORKER_EVENTS
        options = dataclasses.replace(options, on_page=lambda done, total: events.put((path, done, total)))
    doc = load(Path(path), options)
    if table_folder and tokenizer_file:
        table, ids_map = _table(table_folder, tokenizer_file)
        cut = _hf_tokenizer(tokenizer_file)  # the very tokenizer `offsets` belongs to
        chunks = list(iter_chunks(doc, source, cut.pieces, chunk_tokens, overlap))
        new = list(_new_chunks(doc, chunks, offsets))
        vectors = _static_vectors(table, ids_map, cut, chunks, new) if new else None
    else:
        new = list(_new_chunks(doc, iter_chunks(doc, source, offsets, chunk_tokens, overlap), offsets))
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


def _write_streamed(
    job: Job,
    embedder: Embedder,
    settings: IngestSettings,
    writer: StoreWriter,
    state: Progress,
    progress: ProgressFn | None,
) -> tuple[int, int, list[str]]:
    """A long text file chunked, embedded and written EMBED_SLICE chunks at a time, in one
    transaction, so memory stays flat however long the file. Returns (chunks, pages, warnings)."""
    path, source, digest, size = job
    offsets = _offsets_fn(embedder.tokenizer_file)
    doc, units, warnings = stream_text(path)
    state.pages += doc.pages
    state.pages_total += doc.pages
    done_before = state.bytes_done
    chunking = settings.chunk

    def parts() -> Iterator[tuple[list[NewChunk], np.ndarray]]:
        chunks = iter_chunks(doc, source, offsets, chunking.chunk_tokens, chunking.overlap_tokens, units)
        batch: list[NewChunk] = []
        written = 0
        for chunk in _new_chunks(doc, chunks, offsets):
            batch.append(chunk)
            state.chunks += 1
            state.bytes_done = done_before + min(chunk.end, size)  # characters read: about the bytes
            if len(batch) == EMBED_SLICE:
                yield batch, _embed_chunks(embedder, batch, state, progress)
                written += len(batch)
                batch = []
        if batch:
            yield batch, _embed_chunks(embedder, batch, state, progress)
        elif not written:
            raise EmptyDocument(path, "no text to index")  # rolls the transaction back

    row = DocumentRow(source, digest, doc.title, doc.format, doc.pages, 0, size, warnings, time.time())
    return writer.replace_document_parts(row, parts()), doc.pages, warnings  # warnings: filled as read


def _streams(path: Path, size: int, settings: IngestSettings) -> bool:
    """Whether a file goes through _write_streamed: a text file over ingest.stream_bytes."""
    return size > settings.stream_bytes and LOADERS.get(path.suffix.lower()) is load_text


def source_key(path: Path) -> str:
    """How a file is known in a collection: its absolute path, with the bytes of a name that is not
    UTF-8 (a Latin-1 name on an old disk) spelled out as \\xe9: SQLite, JSON and terminals take it."""
    return _spelled(str(path.resolve()))


def _spelled(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def chunking_of(settings: IngestSettings) -> dict[str, int]:
    """The chunking a manifest records, and that later ingests must match."""
    return {"chunk_tokens": settings.chunk.chunk_tokens, "overlap_tokens": settings.chunk.overlap_tokens}


def manifest_for(embedder: Embedder, settings: IngestSettings) -> Manifest:
    return Manifest(
        embedder=embedder.identity,
        dimension=embedder.dimension,
        chunking=chunking_of(settings),
        index=settings.index.model_dump(),
        profile=settings.embed.chosen_profile,
    )


def embed_settings_for(collection: Path | Target, requested: EmbedSettings) -> EmbedSettings:
    """The one rule for which embedder a collection uses (CLI, Python API and web UI alike): the one
    it was created with. Unset, the profile is the manifest's (`accurate` for a new collection); an
    explicit request for another profile is ProfileMismatch, naming both. A `model` folder is
    checked against the manifest's embedder when the collection is opened (IndexMismatch)."""
    target = as_target(collection)
    if not target.exists() or requested.model:
        return requested
    manifest = target.backend.read_manifest(target.name)
    created = manifest.profile or str(manifest.embedder.get("name"))
    if requested.profile is not None and requested.profile != manifest.profile:
        raise ProfileMismatch(target.name, created, requested.profile)
    if manifest.profile:
        return requested.model_copy(update={"profile": manifest.profile})
    if manifest.embedder.get("kind") == "fake":
        return requested.model_copy(update={"model": "fake"})
    return requested


def open_collection(
    collection: Path | Target, embedder: Embedder, settings: IngestSettings, create: bool = True
) -> Store:
    """Open a collection for writing, creating it with this embedder and chunking; refuse one built
    with another embedder (IndexMismatch) or cut into other chunk sizes (ChunkingMismatch)."""
    target = as_target(collection)
    if not target.exists():
        if not create:
            raise FileNotFoundError(target.where)
        return target.backend.create(target.name, manifest_for(embedder, settings))
    col = target.open()
    try:
        col.manifest.check_compatible(embedder.identity, embedder.dimension, col.where)
        col.manifest.check_chunking(chunking_of(settings), col.where)
    except LecternError:
        col.close()
        raise
    return col


def _check_chunking(embedder: Embedder, chunk_tokens: int) -> None:
    room = embedder.max_tokens - MAX_CONTEXT_TOKENS - 1
    if chunk_tokens > room:
        raise ChunkTooLarge(chunk_tokens, room, embedder.max_tokens, MAX_CONTEXT_TOKENS + 1)


def load_options(settings: IngestSettings, workers: int = 1) -> LoadOptions:
    """What the loaders are told (OCR, a PDF's decompression budgets), with ONNX Runtime's threads
    shared among the parse workers."""
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    return LoadOptions(
        settings.ocr, settings.ocr_dpi, settings.ocr_cache, threads, settings.ocr_engine,
        pdf_max_stream_bytes=settings.pdf_max_stream_bytes, pdf_max_text_chars=settings.pdf_max_text_chars,
    )  # fmt: skip


def parse_workers(settings: IngestSettings, embedder: Embedder) -> int:
    if settings.parse_workers is not None:
        return settings.parse_workers
    cores = os.cpu_count() or 1
    heavy = embedder.identity.get("kind") == "sentence-transformers"
    return max(1, cores - 1) if heavy else cores


PARENT_POLL_S = 0.5  # how often a parse worker checks that the ingest that started it is alive


def _exit_with_parent(parent: int, events: Any = None) -> None:
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


def _pool(workers: int, events: Any) -> cf.Executor:
    # spawn: the parent holds torch threads; a forked child could inherit a held lock.
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(), events),
    )


OnPage = Callable[[str, int, int], None]  # (file, pages done, pages to do): one page read by OCR
PROGRESS_POLL_S = 0.25  # how often the ingest passes on the workers' page events while it waits


def _result(
    fut: cf.Future[Parsed], events: Any, on_page: OnPage | None, timeout: float | None = None
) -> Parsed:
    """The future's result, passing on the page events the workers send while it is being parsed;
    cf.TimeoutError when there is none `timeout` seconds after the wait began."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = PROGRESS_POLL_S if deadline is None else deadline - time.monotonic()
        done, _ = cf.wait([fut], timeout=max(0.0, min(PROGRESS_POLL_S, left)))
        while True:
            try:
                event = events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                break
            if on_page is not None:
                on_page(*event)
        if done:
            return fut.result()
        if deadline is not None and time.monotonic() >= deadline:
            raise cf.TimeoutError


def _parsed_in_order(
    jobs: list[Job], embedder: Embedder, settings: IngestSettings, on_page: OnPage | None = None
) -> Iterator[tuple[Path, Parsed | DocumentError]]:
    """Parse results in submission order, a few files ahead of the consumer (bounded memory)."""
    workers = parse_workers(settings, embedder)
    options = load_options(settings, workers)
    args = (
        embedder.tokenizer_file, settings.chunk.chunk_tokens, settings.chunk.overlap_tokens,
        table_folder(embedder), options,
    )  # fmt: skip
    if workers <= 0:
        for job in jobs:
            here = options
            if on_page is not None:
                here = dataclasses.replace(options, on_page=functools.partial(on_page, str(job[0])))
            yield job[0], parse_or_error(job, *args[:-1], here)
        return
    ahead = max(2, 2 * workers)
    events = multiprocessing.get_context("spawn").Queue()
    pool = _pool(workers, events)
    pending: list[tuple[Job, cf.Future[Parsed]]] = []

    live = [pool]  # replaced when a worker dies

    def submit(job: Job) -> None:
        path, source, digest, size = job
        try:
            fut = live[0].submit(parse_file, str(path), source, digest, size, *args)
        except cf.process.BrokenProcessPool:  # a worker died on an earlier file: a fresh pool
            live[0].shutdown(wait=False)
            live[0] = _pool(workers, events)
            fut = live[0].submit(parse_file, str(path), source, digest, size, *args)
        pending.append((job, fut))

    try:
        it = iter(jobs)
        for job in it:
            submit(job)
            if len(pending) >= ahead:
                break
        while pending:
            job, fut = pending.pop(0)
            path = job[0]
            try:
                parsed: Parsed | DocumentError = _result(fut, events, on_page, settings.parse_timeout_s)
            except cf.TimeoutError:  # the files beside it in the pool are parsed again, each alone
                parsed = _overdue(live[0], path, settings.parse_timeout_s)
            except cf.process.BrokenProcessPool:  # some worker died: which file killed it is not known
                parsed = _parse_alone(job, args, settings.parse_timeout_s, events, on_page)
            except DocumentError as err:
                parsed = err
            except Exception as err:  # a loader bug fails this file, not the ingest
                parsed = DocumentError(path, f"unexpected {type(err).__name__}: {err}")
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            yield path, parsed
    finally:
        live[0].shutdown(wait=True, cancel_futures=True)
        events.close()


def _overdue(pool: cf.Executor, path: Path, timeout: float) -> DocumentError:
    """No result for a file ingest.parse_timeout_s after the ingest began to wait for it (a worker's
    start counts too: the limit is generous): its pool's workers are stopped (a running task cannot
    be cancelled otherwise) and the file fails."""
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    return DocumentError(path, f"not parsed within {timeout:g} s (ingest.parse_timeout_s); stopped")


def _parse_alone(
    job: Job, args: tuple[Any, ...], timeout: float, events: Any, on_page: OnPage | None
) -> Parsed | DocumentError:
    """A file that was in a pool when one of its workers died (the OOM killer, a crash in a parser),
    parsed again in a process of its own: if that dies too, the file fails alone. Never parsed in
    this process, which would die of it (and lose every file after it) the same way."""
    path, source, digest, size = job
    alone = _pool(1, events)
    try:
        fut = alone.submit(parse_file, str(path), source, digest, size, *args)
        return _result(fut, events, on_page, timeout)
    except cf.TimeoutError:
        return _overdue(alone, path, timeout)
    except cf.process.BrokenProcessPool:
        return DocumentError(path, "its parse process was killed (out of memory?); it was not parsed again")
    except DocumentError as err:
        return err
    except Exception as err:
        return DocumentError(path, f"unexpected {type(err).__name__}: {err}")
    finally:
        alone.shutdown(wait=True)


@dataclass
class Work:
    """What a runner is handed: the files to parse, embed and write (unchanged and unreadable ones are
    already reported), the open writer, and where each file's result goes."""

    jobs: list[Job]
    known: dict[str, str]  # source -> content hash already in the collection
    embedder: Embedder
    settings: IngestSettings
    writer: StoreWriter
    report: IngestReport
    state: Progress
    progress: ProgressFn | None
    page_counts: dict[str, int] = field(default_factory=dict)  # path -> pages counted up front (PDFs)
    sizes: dict[str, int] = field(default_factory=dict)  # path -> bytes, for Progress.bytes_done
    finished: int = 0  # bytes of the files done

    def __post_init__(self) -> None:
        self.sizes = {str(job[0]): job[3] for job in self.jobs}

    def status(self, source: str) -> str:
        return "updated" if source in self.known else "added"

    def done(self, result: FileResult) -> None:
        """One file finished, whatever its status: reported and counted."""
        self.report.results.append(result)
        self.state.files_done += 1
        self.finished += self.sizes.get(result.path, 0)
        self.state.bytes_done = self.finished
        if self.progress:
            self.progress(self.state)

    def parsed(self, path: Path, parsed: Parsed) -> None:
        """A file's parse came back: its pages count to do (a counted PDF's as it really has)."""
        self.state.pages_total += parsed.pages - self.page_counts.get(str(path), 0)

    def embed(self, path: Path, parsed: Parsed) -> np.ndarray:
        """A parsed file's vectors; as its chunks are embedded, its pages and bytes count as done
        (up to the page of the last chunk embedded), so a single large PDF's bar moves."""
        pages, finished = self.state.pages, self.finished
        size, n = self.sizes.get(str(path), 0), len(parsed.chunks)

        def embedded(done: int) -> None:
            page = parsed.chunks[done - 1].page
            if page:
                self.state.pages = pages + min(page, parsed.pages)
            self.state.bytes_done = finished + size * done // max(n, 1)

        vectors = _embed_chunks(self.embedder, parsed.chunks, self.state, self.progress, embedded)
        self.state.pages = pages + parsed.pages
        return vectors

    def failed(self, path: Path, err: DocumentError) -> None:
        self.done(FileResult(str(path), "failed", reason=failure_reason(err)))

    def write(self, path: Path, parsed: Parsed, vectors: np.ndarray) -> None:
        """A parsed file's chunks and vectors replace its old ones in one transaction (every runner)."""
        row = DocumentRow(
            parsed.source, parsed.content_hash, parsed.title, parsed.format, parsed.pages,
            len(parsed.chunks), parsed.size, parsed.warnings, time.time(),
        )  # fmt: skip
        self.writer.replace_document(row, parsed.chunks, vectors)
        self.done(
            FileResult(
                str(path), self.status(parsed.source), len(parsed.chunks), parsed.pages,
                warnings=[*_link_note(path, parsed.source), *parsed.warnings],
                ocr_pages=parsed.ocr_pages, ocr_cached=parsed.ocr_cached, ocr_seconds=parsed.ocr_seconds,
            )
        )  # fmt: skip


Runner = Callable[[Work], None]


def run_local(work: Work) -> None:
    """This machine: long text files streamed, the rest parsed by worker processes while this one embeds."""
    jobs = run_streamed(work)
    if table_folder(work.embedder):
        # the workers embed too, so they are the whole cost: the biggest files first, the small ones
        # filling in beside them (the R manuals' 236-page file last in line kept one worker busy
        # for a second after the other had finished: 3.0 s to the last file instead of 2.5)
        jobs.sort(key=lambda job: -job[3])

    def on_page(path: str, done: int, total: int) -> None:
        work.state.ocr_pages += 1
        work.state.current = f"{path} (OCR page {done}/{total})"
        if work.progress:
            work.progress(work.state)

    for path, parsed in _parsed_in_order(jobs, work.embedder, work.settings, on_page):
        work.state.current = str(path)
        if isinstance(parsed, DocumentError):
            work.failed(path, parsed)
            continue
        work.parsed(path, parsed)
        work.state.chunks += len(parsed.chunks)
        if parsed.vectors is None:
            vectors = work.embed(path, parsed)
        else:
            vectors = parsed.vectors
            work.state.chunks_embedded += len(vectors)
            work.state.pages += parsed.pages
        work.write(path, parsed, vectors)


def run_streamed(work: Work) -> list[Job]:
    """Write the long text files (ingest.stream_bytes) a batch at a time here; return the other jobs."""
    streamed = [job for job in work.jobs if _streams(job[0], job[3], work.settings)]
    for job in streamed:
        path = job[0]
        work.state.current = str(path)
        try:
            n, pages, warnings = _write_streamed(
                job, work.embedder, work.settings, work.writer, work.state, work.progress
            )
        except DocumentError as err:
            work.failed(path, err)
        else:
            warnings = [*_link_note(path, job[1]), *warnings]
            work.done(FileResult(str(path), work.status(job[1]), n, pages, warnings=warnings))
    return [job for job in work.jobs if not _streams(job[0], job[3], work.settings)]


def _run_ray(work: Work) -> None:
    from lectern.ingest.ray_runner import run_ray  # Ray is an optional extra: imported when chosen

    run_ray(work)


RUNNERS: dict[str, Runner] = {"local": run_local, "ray": _run_ray}


def runner(name: str) -> Runner:
    try:
        return RUNNERS[name]
    except KeyError:
        raise UnknownKey("ingest runner", name, list(RUNNERS)) from None


def ingest(
    paths: Iterable[Path],
    collection: Path | Target,
    embedder: Embedder,
    settings: IngestSettings,
    progress: ProgressFn | None = None,
    force: bool = False,
) -> IngestReport:
    """Bring the collection up to date with these files and folders; return what happened to each.
    The files are listed and hashed here; `settings.runner` parses, embeds and writes the changed ones."""
    if getattr(multiprocessing.process.current_process(), "_inheriting", False):
        # A parse worker re-imported a script whose ingest call has no __main__ guard: stop at once
        # (the parent parses that file itself) instead of waiting for the parent's lock.
        raise RuntimeError(
            'lectern.ingest called while a worker imports __main__: guard it with if __name__ == "__main__":'
        )
    started = time.perf_counter()
    target = as_target(collection)
    run = runner(settings.runner)
    report = IngestReport(collection=target.name)
    _check_chunking(embedder, settings.chunk.chunk_tokens)
    files: list[Path] = []
    for root in paths:
        root = Path(root)
        try:
            walk = iter_files(root, settings.include, settings.exclude, follow_links=settings.follow_links)
        except DocumentError as err:
            report.results.append(FileResult(str(root), "failed", reason=err.detail))
            continue
        files.extend(walk.files)
        report.results.extend(FileResult(str(s.path), "skipped", reason=s.reason) for s in walk.skipped)
    files = _one_path_per_file(files, report)
    state = Progress(files_total=len(files))
    col = open_collection(target, embedder, settings)
    try:
        with col.writer(settings.lock_timeout_s) as writer:
            known = col.content_hashes()
            stored = _stored_inodes(known, {source_key(p) for p in files})
            jobs: list[Job] = []
            for path in files:
                source = source_key(path)
                twin = _stored_twin(path, stored)
                if twin is not None:
                    reason = f"same file as {twin} (a hard link), already in the collection"
                    report.results.append(FileResult(str(path), "skipped", reason=reason))
                    state.files_done += 1
                    continue
                try:
                    digest, size = file_hash(path)
                except OSError as err:
                    report.results.append(
                        FileResult(str(path), "failed", reason=f"cannot read: {err.strerror}")
                    )
                    state.files_done += 1
                    continue
                if not force and known.get(source) == digest:
                    report.results.append(
                        FileResult(str(path), "unchanged", warnings=_link_note(path, source))
                    )
                    state.files_done += 1
                    continue
                jobs.append((path, source, digest, size))
            state.bytes_total = sum(job[3] for job in jobs)
            counts = count_pages(jobs)
            state.pages_total = sum(counts.values())
            try:
                if progress:
                    progress(state)
                if jobs:
                    run(Work(jobs, known, embedder, settings, writer, report, state, progress, counts))
            except Stopped:  # on request, from the progress callback: what is written is kept
                report.stopped = True
    finally:
        col.close()
    report.seconds = time.perf_counter() - started
    return report


def count_pages(jobs: Sequence[Job]) -> dict[str, int]:
    """The PDFs' pages, counted before any is parsed (ingest.pdf.page_count: the page tree's root),
    for up to PAGE_COUNT_S: the progress shows "pages x of N" from the start."""
    from lectern.ingest.pdf import page_count

    counts: dict[str, int] = {}
    deadline = time.monotonic() + PAGE_COUNT_S
    for path, *_ in jobs:
        if path.suffix.lower() == ".pdf" and time.monotonic() < deadline:
            pages = page_count(path)
            if pages:
                counts[str(path)] = pages
    return counts


def _one_path_per_file(files: list[Path], report: IngestReport) -> list[Path]:
    """One path to each file, its own rather than a symbolic link's, and the first of its hard links
    (one device and inode): another path to it is reported and skipped, so that a file is never
    ingested twice in one run."""
    keys = [source_key(p) for p in files]
    chosen: dict[str, Path] = {}
    for path, key in zip(files, keys, strict=True):
        own = _spelled(os.path.abspath(path)) == key
        if key not in chosen or (own and _spelled(os.path.abspath(chosen[key])) != key):
            chosen[key] = path
    inodes: dict[tuple[int, int], Path] = {}
    kept: list[Path] = []
    for path, key in zip(files, keys, strict=True):
        if chosen[key] is not path:
            if chosen[key] != path:
                reason = f"same file as {chosen[key]} (a symbolic link)"
                report.results.append(FileResult(str(path), "skipped", reason=reason))
            continue
        try:
            info = path.stat()
        except OSError:
            kept.append(path)  # hashing it reports why it cannot be read
            continue
        first = inodes.setdefault((info.st_dev, info.st_ino), path)
        if first is path:
            kept.append(path)
        else:
            reason = f"same file as {first} (a hard link)"
            report.results.append(FileResult(str(path), "skipped", reason=reason))
    return kept


def _stored_inodes(known: dict[str, str], now: set[str]) -> dict[tuple[int, int], str]:
    """The device and inode of each stored document not in this run (a stat each; one that is gone
    or renamed has none), so that a hard link to one is not ingested a second time."""
    inodes: dict[tuple[int, int], str] = {}
    for source in known.keys() - now:
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(source)
            inodes[(info.st_dev, info.st_ino)] = source
    return inodes


def _stored_twin(path: Path, stored: dict[tuple[int, int], str]) -> str | None:
    if not stored:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return stored.get((info.st_dev, info.st_ino))


def _link_note(path: Path, source: str) -> list[str]:
    """Said of a file reached through a symbolic link: the collection knows it by its target's path."""
    return [] if _spelled(os.path.abspath(path)) == source else [f"a symbolic link: stored as {source}"]


def failure_reason(err: DocumentError) -> str:
    """How a failed file's reason reads in the report (every runner)."""
    return f"{err.reason}: {err.detail}"


def _embed_chunks(
    embedder: Embedder,
    chunks: Sequence[NewChunk],
    state: Progress,
    progress: ProgressFn | None,
    embedded: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The chunks' vectors, EMBED_SLICE at a time, each slice counted (`embedded(done so far)`) and
    reported."""
    texts = [embedding_text(c.context, c.text) for c in chunks]
    parts = []
    for lo in range(0, len(texts), EMBED_SLICE):
        parts.append(embedder.embed(texts[lo : lo + EMBED_SLICE]))
        state.chunks_embedded += len(parts[-1])
        if embedded is not None:
            embedded(lo + len(parts[-1]))
        if progress:
            progress(state)
    return np.vstack(parts) if parts else np.zeros((0, embedder.dimension), dtype=np.float32)


def delete(collection: Path | Target, sources: Iterable[str], lock_timeout_s: float = 30.0) -> dict[str, int]:
    """Remove sources (paths as given or as stored); returns chunks removed per source, -1 if unknown."""
    col = as_target(collection).open()
    out: dict[str, int] = {}
    try:
        with col.writer(lock_timeout_s) as writer:
            known = set(col.content_hashes())
            for s in sources:
                key = s if s in known else source_key(Path(s))
                out[s] = writer.delete_document(key)
    finally:
        col.close()
    return out
