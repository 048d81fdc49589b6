"""Copy a collection from one store backend to another (`lectern migrate`): documents, chunks and
their vectors as stored, without re-embedding; the manifest goes along, so the copy refuses another
embedder just as the original does. Documents the destination already holds unchanged are skipped,
so a migration stopped part way is finished by running it again."""

from __future__ import annotations

from dataclasses import dataclass, field

from lectern.errors import LecternError
from lectern.ingest.stores import Store, Target


@dataclass
class MigrateReport:
    source: str
    destination: str
    documents: int = 0
    chunks: int = 0
    unchanged: list[str] = field(default_factory=list)


def migrate(source: Target, destination: Target, lock_timeout_s: float = 30.0) -> MigrateReport:
    """Every document of `source` into `destination` (created with the source's manifest if new)."""
    if source.backend == destination.backend and source.name == destination.name:
        raise LecternError(f"{source.where}: a collection cannot be migrated onto itself")
    src = source.open()
    try:
        dst = _open_destination(src, destination)
        report = MigrateReport(src.where, dst.where)
        try:
            # the source's writers wait while it is copied, so the copy is of one state of it
            with src.writer(lock_timeout_s), dst.writer(lock_timeout_s) as writer:
                known = dst.content_hashes()
                for doc in src.documents():
                    if known.get(doc.source) == doc.content_hash:
                        report.unchanged.append(doc.source)
                        continue
                    chunks, vectors = src.export(doc.source)
                    writer.replace_document(doc, chunks, vectors)
                    report.documents += 1
                    report.chunks += len(chunks)
        finally:
            dst.close()
    finally:
        src.close()
    return report


def _open_destination(src: Store, destination: Target) -> Store:
    """The destination, new with the source's manifest, or existing with the same embedder and chunking."""
    if not destination.exists():
        return destination.backend.create(destination.name, src.manifest)
    dst = destination.open()
    try:
        dst.manifest.check_compatible(src.manifest.embedder, src.manifest.dimension, dst.where)
        dst.manifest.check_chunking(src.manifest.chunking, dst.where)
    except LecternError:
        dst.close()
        raise
    return dst
