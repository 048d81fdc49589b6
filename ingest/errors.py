"""Typed errors of the ingestion layer: they carry the facts, the edges word them."""

from __future__ import annotations

from pathlib import Path


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


class CollectionNotFound(LecternError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none yet"
        super().__init__(f"no collection named {name!r} (known: {listed})")


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
