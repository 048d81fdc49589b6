"""The `local` ingest runner: worker processes parse (ingest.parse) while this process embeds and
writes, so both cores stay busy. The pool is spawned, its workers exit with the ingest, and a file
that kills or outlasts its worker fails alone."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lectern.errors import DocumentError
from lectern.ingest.embed import table_folder
from lectern.ingest.embed_base import Embedder
from lectern.ingest.parse import Job, Parsed, exit_with_parent, load_options, parse_file, parse_or_error
from lectern.ingest.settings import IngestSettings
from lectern.ingest.work import Work, run_streamed


def parse_workers(settings: IngestSettings, embedder: Embedder) -> int:
    if settings.parse_workers is not None:
        return settings.parse_workers
    cores = os.cpu_count() or 1
    heavy = embedder.identity.get("kind") == "sentence-transformers"
    return max(1, cores - 1) if heavy else cores


def _pool(workers: int, events: Any) -> cf.Executor:
    # spawn: the parent holds torch threads; a forked child could inherit a held lock.
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent,
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
