"""Walking folders for files to ingest: include and exclude globs (like .gitignore), symbolic links
followed only when asked and never out of the folder or round in a loop, and every path passed over
reported with its reason."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from lectern.errors import DocumentError
from lectern.ingest.loaders import is_supported


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over '/'-separated relative paths: `*` stays in one folder, `**/` spans zero or more folders.

    A pattern without '/' matches the name at any depth ("*.pdf"), and "dir/**" also matches "dir" itself,
    so that excluding it prunes the whole folder.
    """
    pattern = pattern.strip().lstrip("/").removeprefix("./")
    if "/" not in pattern.rstrip("/"):
        pattern = "**/" + pattern
    pattern = pattern.rstrip("/") if not pattern.endswith("**/") else pattern
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _matches(rel: str, patterns: list[re.Pattern[str]]) -> bool:
    return any(p.fullmatch(rel) for p in patterns)


def _excluded(rel: str, patterns: list[re.Pattern[str]]) -> bool:
    """Excluded when the path or any folder above it matches, like .gitignore."""
    parts = rel.split("/")
    return any(_matches("/".join(parts[: i + 1]), patterns) for i in range(len(parts)))


@dataclass(frozen=True)
class Skipped:
    """A path the walk did not hand to a loader, and why (an ingest reports each one)."""

    path: Path
    reason: str


@dataclass
class Walk:
    """What a folder walk found: `files` to load, and everything it passed over with the reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return exc.strerror or type(exc).__name__


def _inside(real: str, boundary: str) -> bool:
    return real == boundary or real.startswith(boundary.rstrip(os.sep) + os.sep)


def iter_files(root: Path, include: list[str], exclude: list[str], *, follow_links: bool = False) -> Walk:
    """Supported files under root in sorted order, and the paths skipped with a reason each.

    Globs apply to the path relative to root; an empty `include` takes everything. A file-system
    error on one path (a link loop, a dangling link, a folder that cannot be listed) skips that
    path, with its reason, and the walk goes on. Symbolic links are followed when they lead inside
    root; those that lead outside it are skipped unless `follow_links`, files and folders alike.
    Each folder is walked once, so a link back up cannot recurse forever.
    """
    root = Path(root)
    walk = Walk()
    try:
        mode = os.stat(root).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if root.is_symlink():
                raise DocumentError(root, "dangling symbolic link: its target does not exist") from None
            raise DocumentError(root, "no such file or directory") from None
        raise DocumentError(root, f"cannot open: {_os_reason(exc)}") from None
    if stat.S_ISREG(mode):
        if is_supported(root):
            walk.files.append(root)
        else:
            walk.skipped.append(Skipped(root, "unsupported file type"))
        return walk
    if not stat.S_ISDIR(mode):  # /dev/zero, a FIFO: reading one would never end
        raise DocumentError(root, "not a regular file (a pipe, socket or device)")
    boundary = os.path.realpath(root)
    includes = [_glob_regex(p) for p in include if p.strip()]
    excludes = [_glob_regex(p) for p in exclude if p.strip()]
    found: list[tuple[str, Path]] = []
    skipped: list[tuple[str, Skipped]] = []
    seen: set[str] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            rel = folder.relative_to(root).as_posix()
            skipped.append((rel, Skipped(folder, f"cannot list folder: {_os_reason(exc)}")))
            continue
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if _excluded(rel, excludes):
                continue
            try:
                if entry.is_symlink():
                    os.stat(entry.path)  # a loop or a missing target raises here
                    target = os.path.realpath(entry.path)
                    if not follow_links and not _inside(target, boundary):
                        reason = (
                            f"symbolic link to {target}, outside {boundary} (--follow-links to ingest it)"
                        )
                        skipped.append((rel, Skipped(path, reason)))
                        continue
                directory = entry.is_dir()
                regular = not directory and entry.is_file()
            except OSError as exc:
                if exc.errno == errno.ENOENT and entry.is_symlink():
                    reason = f"dangling symbolic link to {os.readlink(entry.path)}"
                else:
                    reason = _os_reason(exc)
                skipped.append((rel, Skipped(path, reason)))
                continue
            if directory:
                pending.append(path)
            elif not includes or _matches(rel, includes):
                if regular:
                    found.append((rel, path))
                else:
                    skipped.append((rel, Skipped(path, "not a regular file (a pipe, socket or device)")))
    found.sort(key=lambda item: item[0].split("/"))
    for _, p in found:
        if is_supported(p):
            walk.files.append(p)
        else:
            skipped.append((p.relative_to(root).as_posix(), Skipped(p, "unsupported file type")))
    skipped.sort(key=lambda item: item[0].split("/"))
    walk.skipped = [s for _, s in skipped]
    return walk
