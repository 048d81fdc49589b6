"""Atomic writes: a reader, or a restart after a crash, sees the old file or the new one, never a part.

The one recipe, for files and for whole folders (converted models): write a temporary name in the
same folder, flush, fsync, rename over the target, fsync the folder so the rename itself survives a
power cut. Every file lectern writes in place goes through here (ingest, rag and app alike).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} where it is missing, unreadable or not an object: how lectern
    reads its own small JSON files and a model folder's configs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


ROOM_MARGIN = 64 * 1024**2
"""Space kept free beyond what a write is known to need (its metadata, the file system's own)."""


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk of `folder`, or of its nearest existing parent."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def ensure_room(folder: Path, needed: int, what: str) -> None:
    """Refuse, with NotEnoughDisk, a write of `needed` bytes that `folder`'s disk cannot hold, before
    minutes of work end in a half-written file and a bare 'No space left on device'."""
    from lectern.errors import NotEnoughDisk

    free = free_bytes(folder)
    if needed + ROOM_MARGIN > free:
        raise NotEnoughDisk(what, Path(folder), needed, free)


def out_of_disk(error: BaseException) -> bool:
    """Whether `error` is the disk filling up: an OSError with ENOSPC, or a library's own error that
    says so (safetensors' SafetensorError only carries the text)."""
    import errno

    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)  # safetensors' words, and SQLite's (SQLITE_FULL)
    return "No space left on device" in text or "database or disk is full" in text


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic there
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: Path, mode: str = "wb", *, perms: int = 0o644, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """A file open for writing whose content replaces `path` only when the block ends without error.

    The handle's `name` is the temporary path, for checks that read the file back before it is
    published. `perms` are the new file's permissions (0o600 for files that may hold secrets)."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes: mode {mode!r} has no 'w'")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, perms)
        os.close(fd)
        with open(tmp, mode, encoding=encoding if "b" not in mode else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, *, perms: int = 0o644) -> None:
    with atomic_open(path, "wb", perms=perms) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, *, perms: int = 0o644, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", perms=perms, encoding=encoding) as fh:
        fh.write(text)


_FOLDER_TMP = re.compile(r"^\..+?(?:\.(\d+))?\.[a-z0-9_]{8}\.tmp$")
ABANDONED_AFTER_S = 86400.0
"""A temporary folder that names no process (made before they did) is abandoned after a day."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_abandoned_folders(folder: Path) -> list[Path]:
    """Delete the temporary folders of atomic_folder whose process is gone (a model conversion
    killed half-way left one of 269 MB, forever); a live process's folder is left to it."""
    removed: list[Path] = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _FOLDER_TMP.match(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            pid = match.group(1)
            if pid is not None and (_alive(int(pid)) or int(pid) == os.getpid()):
                continue
            if pid is None and time.time() - entry.stat().st_mtime < ABANDONED_AFTER_S:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_folder(target: Path, *, done: str) -> Iterator[Path]:
    """A temporary folder beside `target`, renamed to `target` when the block ends without error.

    `done` names the file that marks a complete folder: when another process published `target`
    first (the rename fails and `target/done` exists), its copy is kept and ours is dropped."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_folders(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as fh:
                    os.fsync(fh.fileno())
            fsync_dir(Path(root))
        try:
            tmp.rename(target)
        except OSError:
            if not (target / done).is_file():  # not a lost race with another process: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
