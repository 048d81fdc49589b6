"""Typed errors of the ingestion layer: they carry the facts, the edges word them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class LecternError(Exception):
    """Base of every error lectern raises on purpose."""


class DocumentError(LecternError):
    """A single input file could not be used; ingestion of the others goes on."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")

    def __reduce__(self) -> tuple[type[DocumentError], tuple[str, str]]:
        """Picklable with its fields: parse workers send these across processes."""
        return (self.__class__, (self.path, self.detail))


class UnsupportedFormat(DocumentError):
    reason = "unsupported format"


class EmptyDocument(DocumentError):
    reason = "empty"


class CorruptDocument(DocumentError):
    reason = "corrupt"


class EncryptedDocument(DocumentError):
    reason = "encrypted"


class EncodingError(DocumentError):
    reason = "encoding"


class IndexMismatch(LecternError):
    """The collection was built with another embedder, dimension or format than asked for."""


class ProfileMismatch(IndexMismatch):
    """A collection keeps the embedder it was created with: another profile was asked for."""

    def __init__(self, collection: str, created: str, requested: str) -> None:
        self.collection = collection
        self.created = created
        self.requested = requested
        super().__init__(
            f"collection {collection!r} was created with profile {created!r}, not {requested!r}: "
            "the profile is fixed at creation; leave it unset or use a new collection"
        )


class ChunkingMismatch(LecternError):
    """Documents chunked unlike the collection's (its manifest records the chunking) would mix chunk
    sizes in one index and skew both BM25 and dense scores."""

    def __init__(self, where: str | Path, recorded: dict[str, Any], requested: dict[str, Any]) -> None:
        self.where = str(where)
        self.recorded = recorded
        self.requested = requested
        super().__init__(
            f"{self.where} was chunked with {_pairs(recorded)}; these settings ask for {_pairs(requested)}: "
            "use the collection's chunking or a new collection"
        )


class ChunkTooLarge(LecternError):
    """chunk_tokens does not fit the embedder's window: chunks would be truncated when embedded."""

    def __init__(self, chunk_tokens: int, room: int, window: int, title_tokens: int) -> None:
        self.chunk_tokens = chunk_tokens
        self.room = room
        super().__init__(
            f"chunk_tokens={chunk_tokens} does not fit the embedder's window: at most {room} "
            f"({window} word pieces less {title_tokens} for the title line)"
        )


class EmbedderNotFound(LecternError):
    """The embedder asked for is not on this machine (a missing folder or packaged model)."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"embedder {model!r} not found: {detail}")


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


class CollectionNotFound(LecternError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none yet"
        super().__init__(f"no collection named {name!r} (known: {listed})")


class DocumentNotFound(LecternError):
    """A source asked for by name is not in the collection; `known` lists (some of) those that are."""

    SHOWN = 5

    def __init__(self, source: str, collection: str, known: list[str]) -> None:
        self.source = source
        self.collection = collection
        self.known = known
        listed = ", ".join(known[: self.SHOWN]) if known else "none yet"
        if len(known) > self.SHOWN:
            listed += f" and {len(known) - self.SHOWN} more"
        super().__init__(f"no document {source!r} in collection {collection!r} (known: {listed})")


class InvalidName(LecternError):
    """A collection or conversation name that could escape its folder."""


class UnknownKey(LecternError):
    """A registry lookup with a key it does not hold: the message lists the known ones."""

    def __init__(self, what: str, key: str, known: list[str]) -> None:
        self.key = key
        self.known = known
        super().__init__(f"unknown {what} {key!r}; known: {', '.join(sorted(known))}")


class IndexLocked(LecternError):
    """Another writer holds the collection's lock."""
