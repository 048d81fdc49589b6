"""The store backends by name (store.backend), and the ways to name one collection on one:

    faiss   folders of SQLite + FAISS + BM25 under <data dir>/collections (ingest.faiss_store; the default)
    milvus  a Milvus database: embedded milvus-lite for a file URI, a server for http://... (ingest.milvus_store)

What a backend and a collection provide is ingest.stores, the store interface.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lectern.errors import UnknownKey
from lectern.ingest.faiss_store import FaissBackend
from lectern.ingest.stores import Backend, Target

if TYPE_CHECKING:
    from lectern.ingest.settings import StoreSettings


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
