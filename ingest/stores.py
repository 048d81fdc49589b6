"""The store interface: what the pipeline, the Searcher, delete, the eval and migrate need of a
collection, and the registry of backends that provide it.

    faiss   folders of SQLite + FAISS + BM25 under <data dir>/collections (ingest.store; the default)
    milvus  a Milvus database: embedded milvus-lite for a file URI, a server for http://... (ingest.milvus_store)

A backend holds named collections (`Backend`); one opened collection is a `Store`; its only way to
change is `Store.writer()`, one writer at a time (`StoreWriter`). `Target` names one collection on
one backend: the pipeline's functions take a Target, or a plain folder Path for the faiss backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lectern.errors import UnknownKey

if TYPE_CHECKING:
    from lectern.ingest.settings import StoreSettings
    from lectern.ingest.store import DocumentRow, Manifest, NewChunk, StoredChunk

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
    """One ranked search: `mode` dense | bm25 | hybrid; `terms` the query's BM25 terms (tokenize.terms,
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


class FaissBackend:
    """Collection folders under `root` (ingest.store.Collection): the default backend."""

    kind = "faiss"

    def __init__(self, root: Path) -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FaissBackend) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def path(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        from lectern.ingest.store import Collection

        return Collection.exists(self.root / name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if self.exists(p.name))

    def where(self, name: str) -> str:
        return str(self.root / name)

    def read_manifest(self, name: str) -> Manifest:
        from lectern.ingest.store import Collection

        return Collection.read_manifest(self.root / name)

    def create(self, name: str, manifest: Manifest) -> Store:
        from lectern.ingest.store import Collection

        return Collection.create(self.root / name, manifest)

    def open(self, name: str) -> Store:
        from lectern.ingest.store import Collection

        return Collection.open(self.root / name)

    def drop(self, name: str) -> None:
        import shutil

        if self.exists(name):
            shutil.rmtree(self.root / name)


def _milvus(settings: StoreSettings, data_dir: Path) -> Backend:
    from lectern.ingest.milvus_store import MilvusBackend

    token = settings.token.get_secret_value() if settings.token is not None else ""
    return MilvusBackend(settings.uri or str(data_dir / "milvus.db"), token, settings.ranker, settings.rrf_k)


BACKENDS: dict[str, Callable[[StoreSettings, Path], Backend]] = {
    "faiss": lambda settings, data_dir: FaissBackend(data_dir / "collections"),
    "milvus": _milvus,
}


def open_backend(settings: StoreSettings, data_dir: Path) -> Backend:
    """The backend the settings choose (store.backend); an unknown one lists the known ones."""
    if settings.backend not in BACKENDS:
        raise UnknownKey("store backend", settings.backend, sorted(BACKENDS))
    return BACKENDS[settings.backend](settings, data_dir)


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


def as_target(where: Path | Target) -> Target:
    """A collection folder (the faiss backend) or a Target, as a Target."""
    if isinstance(where, Target):
        return where
    return Target(FaissBackend(where.parent), where.name)


def parse_location(spec: str, settings: StoreSettings, data_dir: Path) -> tuple[Backend, str | None]:
    """`faiss:NAME` or `milvus:URI[/NAME]` (lectern migrate) as a backend and a collection name (None:
    not given). A milvus-lite URI is a path ending in .db; an empty URI is store.uri, or
    <data dir>/milvus.db. The milvus token and ranker come from the settings."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in BACKENDS:
        raise UnknownKey("store location", spec, [f"{k}:..." for k in BACKENDS])
    if kind == "faiss":
        return BACKENDS["faiss"](settings, data_dir), rest or None
    uri, name = rest, None
    scheme, has_scheme, address = rest.partition("://")
    if has_scheme:
        host, slash, path = address.partition("/")
        uri, name = f"{scheme}://{host}", (path.strip("/") or None) if slash else None
    elif rest and not rest.rstrip("/").endswith(".db"):
        uri, _, name = rest.rstrip("/").rpartition("/")
    merged = settings.model_copy(update={"backend": "milvus", "uri": uri or settings.uri})
    return BACKENDS["milvus"](merged, data_dir), name
