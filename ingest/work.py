"""What every ingest runner is handed and does alike (pipeline.RUNNERS: local_runner, ray_runner):
`Work`, the changed files with the open writer and the report; vectors embedded EMBED_SLICE chunks
at a time; a file written in one transaction; a long text file streamed here a batch at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lectern.errors import DocumentError, EmptyDocument
from lectern.ingest.chunk import embedding_text, iter_chunks
from lectern.ingest.embed_base import Embedder
from lectern.ingest.loaders import LOADERS, load_text, stream_text
from lectern.ingest.parse import Job, Parsed, new_chunks, offsets_fn
from lectern.ingest.report import FileResult, IngestReport, Progress, ProgressFn, failure_reason
from lectern.ingest.settings import IngestSettings
from lectern.ingest.sources import link_note
from lectern.ingest.stores import DocumentRow, NewChunk, StoreWriter

EMBED_SLICE = 256  # chunks embedded per call: bounds memory and keeps progress moving


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
                warnings=[*link_note(path, parsed.source), *parsed.warnings],
                ocr_pages=parsed.ocr_pages, ocr_cached=parsed.ocr_cached, ocr_seconds=parsed.ocr_seconds,
            )
        )  # fmt: skip


Runner = Callable[[Work], None]


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
            warnings = [*link_note(path, job[1]), *warnings]
            work.done(FileResult(str(path), work.status(job[1]), n, pages, warnings=warnings))
    return [job for job in work.jobs if not _streams(job[0], job[3], work.settings)]


def _streams(path: Path, size: int, settings: IngestSettings) -> bool:
    """Whether a file goes through _write_streamed: a text file over ingest.stream_bytes."""
    return size > settings.stream_bytes and LOADERS.get(path.suffix.lower()) is load_text


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
    offsets = offsets_fn(embedder.tokenizer_file)
    doc, units, warnings = stream_text(path)
    state.pages += doc.pages
    state.pages_total += doc.pages
    done_before = state.bytes_done
    chunking = settings.chunk

    def parts() -> Iterator[tuple[list[NewChunk], np.ndarray]]:
        chunks = iter_chunks(doc, source, offsets, chunking.chunk_tokens, chunking.overlap_tokens, units)
        batch: list[NewChunk] = []
        written = 0
        for chunk in new_chunks(doc, chunks, offsets):
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
