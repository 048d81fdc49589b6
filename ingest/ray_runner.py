"""The `ray` ingest runner: Ray Data parses and embeds, this process writes (`pip install lectern[ray]`).

ingest.pipeline.ingest has listed and hashed the files here and skipped the unchanged ones before
any work. Long text files (ingest.stream_bytes) are streamed here as the local runner streams them;
every other changed file becomes one row of a Ray dataset:

    parse   `map_batches` tasks, one file per call: load, chunk and BM25 terms
            (ingest.parse.parse_or_error), one row per chunk, or one row that carries the file's error;
    embed   `map_batches` over EmbedChunks in an actor pool (`ray.data.ActorPoolStrategy`): the
            embedder is built once per actor; one actor per GPU, `num_gpus=1`, when the cluster has GPUs;
    write   here, a file at a time in one transaction each, through the collection's Writer, in the
            order of the files: the collection holds what the local runner writes (chunk ids, row ids,
            counts), and a bad file is reported with the same reason.

If the run stops (an actor dies, the cluster goes), every file written so far stays written and
each one that was not is reported as failed with the cause. Without an address Ray starts on this
machine for the ingest (no dashboard, quiet) and stops after it; a session already started in this
process (a notebook, the tests) is used and left running. On a cluster every node needs lectern, its
packaged embedder and the files at the same path (a shared filesystem).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lectern.errors import RunnerUnavailable
from lectern.ingest.chunk import embedding_text
from lectern.ingest.document import NO_OPTIONS, LoadOptions
from lectern.ingest.embed import embedder_recipe
from lectern.ingest.embed_base import Embedder
from lectern.ingest.parse import Job, Parsed, load_options, parse_or_error
from lectern.ingest.report import FileResult, failure_reason
from lectern.ingest.settings import RaySettings
from lectern.ingest.stores import NewChunk
from lectern.ingest.work import EMBED_SLICE, Work, run_streamed

PARSE_BLOCKS_MAX = 1024  # one block per file up to this many: parse tasks spread over the cluster
PARSE_MEMORY = 512 << 20  # bytes a parse task reserves
Batch = dict[str, Any]


def parse_files(
    batch: Batch,
    tokenizer_file: str | None,
    chunk_tokens: int,
    overlap: int,
    options: LoadOptions = NO_OPTIONS,
) -> Batch:
    """A Ray task: these files' chunks, a row each (the file's facts on its first row), or one row
    with the file's error. Columns: job, rows (the file's row count), meta, chunk and text (JSON)."""
    out: dict[str, list[Any]] = {"job": [], "rows": [], "meta": [], "chunk": [], "text": []}

    def row(job: int, rows: int, meta: str, chunk: str, text: str) -> None:
        for key, value in zip(out, (job, rows, meta, chunk, text), strict=True):
            out[key].append(value)

    for i in range(len(batch["job"])):
        job = int(batch["job"][i])
        path = Path(str(batch["path"][i]))
        parsed = parse_or_error(
            (path, str(batch["source"][i]), str(batch["hash"][i]), int(batch["size"][i])),
            tokenizer_file, chunk_tokens, overlap, None, options,
        )  # fmt: skip
        if not isinstance(parsed, Parsed):
            row(job, 1, json.dumps({"error": failure_reason(parsed)}), "", "")
            continue
        meta = json.dumps(
            {
                "title": parsed.title,
                "format": parsed.format,
                "pages": parsed.pages,
                "warnings": parsed.warnings,
                "ocr": [parsed.ocr_pages, parsed.ocr_cached, parsed.ocr_seconds],
            }
        )
        for n, ch in enumerate(parsed.chunks):
            text = embedding_text(ch.context, ch.text)
            row(job, len(parsed.chunks), meta if n == 0 else "", json.dumps(dataclasses.asdict(ch)), text)
    return out


class EmbedChunks:
    """A Ray actor of the embedding pool: the embedder is built once, then embeds batch after batch."""

    def __init__(self, recipe: Callable[[], Embedder]) -> None:
        self.embedder = recipe()

    def __call__(self, batch: Batch) -> Batch:
        """Each file's chunks in the local runner's slices (ingest.work.EMBED_SLICE, from its first
        chunk), so that a file whole in one batch gets the local runner's vectors."""
        vectors = np.zeros((len(batch["chunk"]), self.embedder.dimension), dtype=np.float32)
        files: dict[int, list[int]] = {}
        for i, c in enumerate(batch["chunk"]):
            if c:  # not the rows of failed files
                files.setdefault(int(batch["job"][i]), []).append(i)
        for rows in files.values():
            for lo in range(0, len(rows), EMBED_SLICE):
                part = rows[lo : lo + EMBED_SLICE]
                vectors[part] = self.embedder.embed([str(batch["text"][i]) for i in part])
        return {**batch, "vector": vectors}


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RunnerUnavailable(
            "ray", f"Ray Data is not installed ({err}): pip install 'lectern[ray]'"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(settings: RaySettings) -> Iterator[Any]:
    """Ray for one ingest: this process's session if it has one, else the cluster at `address`, else
    a Ray started on this machine (stopped after)."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    try:
        if settings.address:
            ray.init(address=settings.address, **quiet)
        else:
            ray.init(num_cpus=local_cpus(settings), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"no Ray cluster at {settings.address!r}" if settings.address else "Ray did not start here"
        raise RunnerUnavailable("ray", f"{where}: {err}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def local_cpus(settings: RaySettings) -> int:
    """CPUs Ray is told this machine has: its cores, and at least enough for the embedding actors plus
    one parse task (fewer and the parse tasks would wait for ever behind the actors)."""
    if settings.num_cpus:
        return settings.num_cpus
    actors = settings.embed_actors or 1
    return max(os.cpu_count() or 1, math.ceil(actors * settings.actor_cpus) + 1)


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Rows come back in the files' order; no progress bars, banners or INFO lines (the CLI reports)."""
    ctx = ray.data.DataContext.get_current()
    log = logging.getLogger("ray.data")
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start)
    level = log.level
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        log.setLevel(level)


def embed_pool(ray: Any, settings: RaySettings) -> dict[str, Any]:
    """map_batches' arguments for the embedding actors: one per GPU with `num_gpus=1` where the cluster
    has GPUs, else `embed_actors` (default 1) holding `actor_cpus` each; a batch is one parsed file
    (one block of the parse step) unless `embed_batch` says how many chunks."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = settings.embed_actors or max(1, gpus)
    pool: dict[str, Any] = {
        "compute": ray.data.ActorPoolStrategy(size=actors),
        "num_cpus": settings.actor_cpus,
        "batch_size": settings.embed_batch,
    }
    if gpus:
        pool["num_gpus"] = 1
    return pool


def dataset(ray: Any, jobs: list[Job], work: Work) -> Any:
    """The files as a Ray dataset, parsed by tasks and embedded by the actor pool."""
    items = [
        {"job": i, "path": str(path), "source": source, "hash": digest, "size": size}
        for i, (path, source, digest, size) in enumerate(jobs)
    ]
    chunking = work.settings.chunk
    parse_args = {
        "tokenizer_file": work.embedder.tokenizer_file,
        "chunk_tokens": chunking.chunk_tokens,
        "overlap": chunking.overlap_tokens,
        "options": load_options(work.settings),
    }
    return (
        ray.data.from_items(items, override_num_blocks=min(len(items), PARSE_BLOCKS_MAX))
        # memory: what a parse task reserves (a long PDF's text and chunks); the parse also stays a
        # task step of its own by it: Ray fuses a task step into the actor step after it when their
        # resources match, and the files would then be parsed by the embedding actors, in turn.
        .map_batches(parse_files, batch_size=1, fn_kwargs=parse_args, num_cpus=1, memory=PARSE_MEMORY)
        .map_batches(
            EmbedChunks,
            fn_constructor_args=(embedder_recipe(work.embedder),),
            **embed_pool(ray, work.settings.ray),
        )
    )


@dataclasses.dataclass
class _File:
    """One file's rows as they come back, until all are in."""

    rows: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    chunks: list[NewChunk] = dataclasses.field(default_factory=list)
    vectors: list[np.ndarray] = dataclasses.field(default_factory=list)


def write_rows(rows: Iterator[Batch], jobs: list[Job], work: Work) -> None:
    """Each file written (or reported failed) as soon as its last row is back."""
    pending: dict[int, _File] = {}
    for batch in rows:
        for i in range(len(batch["job"])):
            index = int(batch["job"][i])
            f = pending.setdefault(index, _File(int(batch["rows"][i])))
            if batch["meta"][i]:
                f.meta = json.loads(str(batch["meta"][i]))
            if batch["chunk"][i]:
                f.chunks.append(NewChunk(**json.loads(str(batch["chunk"][i]))))
                f.vectors.append(batch["vector"][i])
                work.state.chunks += 1
                work.state.chunks_embedded += 1
            if len(f.chunks) == f.rows or "error" in f.meta:
                _finish(jobs[index], pending.pop(index), work)


def _finish(job: Job, f: _File, work: Work) -> None:
    path, source, digest, size = job
    work.state.current = str(path)
    if "error" in f.meta:
        work.done(FileResult(str(path), "failed", reason=f.meta["error"]))
        return
    m = f.meta
    parsed = Parsed(
        source, digest, size, m["title"], m["format"], m["pages"], m["warnings"], f.chunks, None, *m["ocr"]
    )
    work.parsed(path, parsed)
    work.state.pages += parsed.pages
    work.write(path, parsed, np.vstack(f.vectors))


class RayRunStopped(Exception):
    """Ray stopped giving rows back (an actor or task failed, the cluster went): `cause` says why."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)


def _from_ray(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Ray's rows; a failure of Ray's side is RayRunStopped, so that one of this side (the writer's)
    still propagates as it does from the local runner."""
    try:
        yield from batches
    except Exception as err:
        raise RayRunStopped(" ".join(cause_of(err).split())[:300]) from err


def run_ray(work: Work) -> None:
    jobs = run_streamed(work)
    if not jobs:
        return
    with ray_session(work.settings.ray) as ray, _data_context(ray):
        ds = dataset(ray, jobs, work)
        try:
            write_rows(_from_ray(ds.iter_batches(batch_size=None, batch_format="numpy")), jobs, work)
        except RayRunStopped as stop:  # what was written stays; each file that was not is reported
            done = {r.path for r in work.report.results}
            reason = f"not ingested, the Ray run stopped: {stop.cause}"
            for path, *_ in jobs:
                if str(path) not in done:
                    work.done(FileResult(str(path), "failed", reason=reason))


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cause_of(err: BaseException) -> str:
    """One line for the report: the exception the user's code raised, which Ray's wrappers
    (RayTaskError, UserCodeException) carry only as the text of its traceback."""
    text = _ANSI.sub("", str(err))
    for m in _RAISED.finditer(text):
        if not m.group(1).startswith("ray."):
            return f"{m.group(1)}: {m.group(2)}"
    lines = text.strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
