"""The store interface and its records: what the pipeline, the Searcher, delete, the eval and migrate
need of a collection, whichever backend holds it (ingest.store_backends names them: faiss_store,
milvus_store).

A backend holds named collections (`Backend`); one opened collection is a `Store`; its only way to
change is `Store.writer()`, one writer at a time (`StoreWriter`, `take_writer_lock`). `Target` names
one collection on one backend: the pipeline's functions take a Target, or a plain folder Path for
the faiss backend. The records are what goes in and comes out: a `Manifest` per collection, a
`DocumentRow` per file, a `NewChunk` written and a `StoredChunk` read back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from filelock import FileLock, Timeout

from lectern.errors import ChunkingMismatch, IndexLocked, IndexMismatch
from lectern.ingest.bm25_terms import TOKENIZER

FORMAT_VERSION = 1
LOG = logging.getLogger("lectern")

Scored = list[tuple[int, float, float | None, float | None]]
"""Ranked chunks: row id, score, dense score, BM25 score (None where that search did not run)."""


@dataclass(frozen=True)
class Filters:
    """Metadata filters, applied inside the index search so k results still come back."""

    sources: tuple[str, ...] = ()
    page_min: int | None = None
    page_max: int | None = None

    @property
    def empty(self) -> bool:
        return not self.sources and self.page_min is None and self.page_max is None


@dataclass(frozen=True)
class SearchRequest:
    """One ranked search: `mode` dense | bm25 | hybrid; `terms` the query's BM25 terms (bm25_terms.terms,
    spelled); `fetch_k` candidates per search before fusion; the weights are lectern's own fusion's
    (and Milvus' weighted ranker's)."""

    mode: str
    qvec: np.ndarray | None
    terms: Sequence[str]
    k: int
    fetch_k: int
    filters: Filters | None = None
    dense_weight: float = 0.4
    bm25_weight: float = 0.6


# --- records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    embedder: dict[str, Any]
    dimension: int
    chunking: dict[str, Any]
    index: dict[str, Any]
    profile: str | None = None
    metric: str = "inner_product"
    normalized: bool = True
    bm25_tokenizer: str = TOKENIZER
    format_version: int = FORMAT_VERSION
    created: float = field(default_factory=time.time)

    def check_compatible(self, embedder: dict[str, Any], dimension: int, where: Path | str) -> None:
        """Opening a collection with another embedder would return silent garbage: refuse."""
        if self.format_version != FORMAT_VERSION:
            raise IndexMismatch(
                f"{where}: format version {self.format_version}, this lectern reads {FORMAT_VERSION}"
            )
        if self.embedder.get("name") != embedder.get("name") or self.dimension != dimension:
            raise IndexMismatch(
                f"{where} was built with embedder {self.embedder.get('name')} ({self.dimension} dims), "
                f"not {embedder.get('name')} ({dimension} dims); use the same profile or a new collection"
            )
        if self.bm25_tokenizer != TOKENIZER:
            raise IndexMismatch(f"{where}: BM25 tokenizer {self.bm25_tokenizer}, expected {TOKENIZER}")

    def check_chunking(self, chunking: dict[str, Any], where: Path | str) -> None:
        """New documents must be cut like the ones already in: refuse other chunk sizes."""
        if self.chunking and self.chunking != chunking:
            raise ChunkingMismatch(where, self.chunking, chunking)


@dataclass(frozen=True)
class StoredChunk:
    id: int
    chunk_id: str
    source: str
    page: int | None
    heading: str | None
    start: int
    end: int
    ordinal: int
    text: str
    title: str | None


@dataclass(frozen=True)
class DocumentRow:
    source: str
    content_hash: str
    title: str | None
    format: str | None
    pages: int
    chunks: int
    bytes: int
    warnings: list[str]
    ingested_at: float


@dataclass
class NewChunk:
    chunk_id: str
    page: int | None
    heading: str | None
    start: int
    end: int
    ordinal: int
    text: str
    context: str
    terms: list[str]


# --- the interface -----------------------------------------------------------------------------------


class StoreWriter(Protocol):
    def replace_document(self, doc: DocumentRow, chunks: Sequence[NewChunk], vectors: np.ndarray) -> None: ...

    def replace_document_parts(
        self, doc: DocumentRow, parts: Iterable[tuple[Sequence[NewChunk], np.ndarray]]
    ) -> int: ...

    def delete_document(self, source: str) -> int: ...

    def persist(self) -> None: ...


class Store(Protocol):
    """One opened collection, whatever holds it."""

    manifest: Manifest

    @property
    def name(self) -> str: ...

    @property
    def where(self) -> str:
        """How messages name it: its folder, or the Milvus URI and collection."""
        ...

    def search(self, request: SearchRequest) -> Scored: ...

    def term_idf(self, words: Sequence[str]) -> tuple[dict[str, float], float]:
        """BM25's IDF of each of `words` the collection holds, and the IDF of a word it does not."""
        ...

    def vocabulary(self, words: Sequence[str]) -> Mapping[str, int]:
        """Those of `words` the collection holds (with a number of the backend's: a term id, a count)."""
        ...

    @property
    def corrects_spelling(self) -> bool:
        """Whether term_idf is cheap enough for Searcher.spelled's hundreds of candidate words."""
        ...

    def reading(self) -> AbstractContextManager[None]:
        """One view of the collection for a whole search, from its ids to its fetch, whatever a
        writer commits meanwhile."""
        ...

    def fetch(self, ids: Sequence[int]) -> dict[int, StoredChunk]: ...

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]: ...

    def documents(self) -> list[DocumentRow]: ...

    def document(self, source: str) -> DocumentRow | None: ...

    def content_hashes(self) -> dict[str, str]: ...

    def chunks_of(self, source: str) -> list[StoredChunk]: ...

    def export(self, source: str) -> tuple[list[NewChunk], np.ndarray]:
        """A document's chunks as written (context and BM25 terms too) and their vectors: migrate."""
        ...

    def count_chunks(self) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def writer(self, timeout: float = 30.0) -> AbstractContextManager[StoreWriter]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Named collections in one place (a folder of folders, a Milvus database)."""

    kind: str

    def exists(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...

    def where(self, name: str) -> str: ...

    def read_manifest(self, name: str) -> Manifest: ...

    def create(self, name: str, manifest: Manifest) -> Store: ...

    def open(self, name: str) -> Store: ...

    def drop(self, name: str) -> None: ...


@dataclass(frozen=True)
class Target:
    """One named collection on one backend."""

    backend: Backend
    name: str

    @property
    def where(self) -> str:
        return self.backend.where(self.name)

    def exists(self) -> bool:
        return self.backend.exists(self.name)

    def open(self) -> Store:
        return self.backend.open(self.name)


def take_writer_lock(lock: FileLock, name: str, where: object, timeout: float) -> None:
    """Acquire a collection's writers' lock (any store): at once when it is free; else say so (log
    "lectern", which the CLI prints) and wait up to `timeout` s, then IndexLocked naming `where`."""
    try:
        lock.acquire(blocking=False)
    except Timeout:
        if timeout > 0:
            LOG.warning(
                "collection %r is being written by another process: waiting up to %g s for it to "
                "finish (lock %s)", name, timeout, lock.lock_file,
            )  # fmt: skip
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise IndexLocked(
                f"{where} is being written by another process (lock held for over {timeout:g} s)"
            ) from None
