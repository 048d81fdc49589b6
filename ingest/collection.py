"""Opening a collection for an ingest, the one rule for the CLI, the Python API and the web UI: the
embedder it keeps (the one it was created with), the manifest a new one records, and the checks a
reopened one passes (the same embedder, the same chunking)."""

from __future__ import annotations

from pathlib import Path

from lectern.errors import ChunkTooLarge, LecternError, ProfileMismatch
from lectern.ingest.chunk import MAX_CONTEXT_TOKENS
from lectern.ingest.embed_base import Embedder
from lectern.ingest.settings import EmbedSettings, IngestSettings
from lectern.ingest.store_backends import as_target
from lectern.ingest.stores import Manifest, Store, Target


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


def check_chunking(embedder: Embedder, chunk_tokens: int) -> None:
    room = embedder.max_tokens - MAX_CONTEXT_TOKENS - 1
    if chunk_tokens > room:
        raise ChunkTooLarge(chunk_tokens, room, embedder.max_tokens, MAX_CONTEXT_TOKENS + 1)
