"""How a file is known in a collection: its source key (the absolute path, symbolic links resolved),
its content hash, and one path to each file however many links reach it in one run or are stored."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from lectern.ingest.report import FileResult, IngestReport


def file_hash(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def source_key(path: Path) -> str:
    """How a file is known in a collection: its absolute path, with the bytes of a name that is not
    UTF-8 (a Latin-1 name on an old disk) spelled out as \\xe9: SQLite, JSON and terminals take it."""
    return _spelled(str(path.resolve()))


def _spelled(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def link_note(path: Path, source: str) -> list[str]:
    """Said of a file reached through a symbolic link: the collection knows it by its target's path."""
    return [] if _spelled(os.path.abspath(path)) == source else [f"a symbolic link: stored as {source}"]


def one_path_per_file(files: list[Path], report: IngestReport) -> list[Path]:
    """One path to each file, its own rather than a symbolic link's, and the first of its hard links
    (one device and inode): another path to it is reported and skipped, so that a file is never
    ingested twice in one run."""
    keys = [source_key(p) for p in files]
    chosen: dict[str, Path] = {}
    for path, key in zip(files, keys, strict=True):
        own = _spelled(os.path.abspath(path)) == key
        if key not in chosen or (own and _spelled(os.path.abspath(chosen[key])) != key):
            chosen[key] = path
    inodes: dict[tuple[int, int], Path] = {}
    kept: list[Path] = []
    for path, key in zip(files, keys, strict=True):
        if chosen[key] is not path:
            if chosen[key] != path:
                reason = f"same file as {chosen[key]} (a symbolic link)"
                report.results.append(FileResult(str(path), "skipped", reason=reason))
            continue
        try:
            info = path.stat()
        except OSError:
            kept.append(path)  # hashing it reports why it cannot be read
            continue
        first = inodes.setdefault((info.st_dev, info.st_ino), path)
        if first is path:
            kept.append(path)
        else:
            reason = f"same file as {first} (a hard link)"
            report.results.append(FileResult(str(path), "skipped", reason=reason))
    return kept


def stored_inodes(known: dict[str, str], now: set[str]) -> dict[tuple[int, int], str]:
    """The device and inode of each stored document not in this run (a stat each; one that is gone
    or renamed has none), so that a hard link to one is not ingested a second time."""
    inodes: dict[tuple[int, int], str] = {}
    for source in known.keys() - now:
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(source)
            inodes[(info.st_dev, info.st_ino)] = source
    return inodes


def stored_twin(path: Path, stored: dict[tuple[int, int], str]) -> str | None:
    if not stored:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return stored.get((info.st_dev, info.st_ino))
