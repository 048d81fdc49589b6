"""Ingest: files to chunks to vectors to a collection, incremental, idempotent and reported.

`ingest` lists the files (ingest.walk.iter_files; one path per file: ingest.sources), hashes them and
skips the unchanged ones before any is parsed, opens the collection by the one rule
(ingest.collection), and hands the changed ones to a runner of RUNNERS (the `ingest.runner` setting):
`local` (ingest.local_runner: parse worker processes while this process embeds) or `ray`
(ingest.ray_runner: Ray Data on this machine or a cluster). Both are handed a Work (ingest.work) and
write through Work.write, so they build the same collection; a changed file replaces exactly its own
chunks in one transaction, so an ingest killed at any moment leaves every file either fully old or
fully new. What happened to each file comes back as an IngestReport (ingest.report).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from lectern.errors import DocumentError, Stopped, UnknownKey
from lectern.ingest.collection import check_chunking, open_collection
from lectern.ingest.embed_base import Embedder
from lectern.ingest.local_runner import run_local
from lectern.ingest.parse import Job
from lectern.ingest.report import FileResult, IngestReport, Progress, ProgressFn
from lectern.ingest.settings import IngestSettings
from lectern.ingest.sources import (
    file_hash,
    link_note,
    one_path_per_file,
    source_key,
    stored_inodes,
    stored_twin,
)
from lectern.ingest.store_backends import as_target
from lectern.ingest.stores import Target
from lectern.ingest.walk import iter_files
from lectern.ingest.work import Runner, Work

PAGE_COUNT_S = 2.0  # at most this long counting PDFs' pages before parsing (progress totals)


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
    check_chunking(embedder, settings.chunk.chunk_tokens)
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
    files = one_path_per_file(files, report)
    state = Progress(files_total=len(files))
    col = open_collection(target, embedder, settings)
    try:
        with col.writer(settings.lock_timeout_s) as writer:
            known = col.content_hashes()
            stored = stored_inodes(known, {source_key(p) for p in files})
            jobs: list[Job] = []
            for path in files:
                source = source_key(path)
                twin = stored_twin(path, stored)
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
                        FileResult(str(path), "unchanged", warnings=link_note(path, source))
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
