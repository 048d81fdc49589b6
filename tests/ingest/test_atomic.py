"""ingest.atomic: the one recipe for writing a file or a folder so that readers never see a part of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lectern.ingest import atomic
from lectern.ingest.atomic import atomic_folder, atomic_open, atomic_write_bytes, atomic_write_text


def test_write_replaces_the_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    atomic_write_text(target, "naïve café\n")
    assert target.read_text(encoding="utf-8") == "naïve café\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w", encoding="utf-8") as fh:
        fh.write("half of the new")
        raise RuntimeError("the writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_the_temp_file_is_beside_the_target_and_readable_before_publishing(tmp_path: Path) -> None:
    target = tmp_path / "m.bin"
    with atomic_open(target) as fh:
        fh.write(b"abc")
        fh.flush()
        assert Path(fh.name).parent == tmp_path and Path(fh.name).read_bytes() == b"abc"
        assert not target.exists()
    assert target.read_bytes() == b"abc"


def test_permissions(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "public", "x")
    atomic_write_text(tmp_path / "secret", "x", perms=0o600)
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_file_and_folder_are_fsynced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that makes it durable: fsync the data, rename, fsync the folder."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    atomic_write_bytes(tmp_path / "f", b"data")
    assert events == ["fsync", "rename", "fsync"]


def test_atomic_folder_publishes_a_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    with atomic_folder(target, done="done.json") as tmp:
        assert tmp.parent == target.parent and not target.exists()
        (tmp / "weights").write_bytes(b"w")
        (tmp / "done.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["done.json", "weights"]
    assert [p.name for p in target.parent.iterdir()] == ["m"]


def test_atomic_folder_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m"
    with pytest.raises(ValueError), atomic_folder(target, done="done.json") as tmp:
        (tmp / "weights").write_bytes(b"w")
        raise ValueError("conversion failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_keeps_a_concurrent_winner(tmp_path: Path) -> None:
    target = tmp_path / "m"
    with atomic_folder(target, done="done.json") as tmp:
        (tmp / "done.json").write_text("ours")
        target.mkdir()  # another process published first
        (target / "done.json").write_text("theirs")
    assert (target / "done.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_a_write_the_disk_cannot_hold_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lectern.errors import NotEnoughDisk

    real = atomic.shutil.disk_usage
    seen: list[str] = []

    def usage(path: str | Path) -> object:
        seen.append(str(path))
        return real(path)._replace(free=300 * 1024**2)  # 300 MiB free

    monkeypatch.setattr(atomic.shutil, "disk_usage", usage)
    atomic.ensure_room(tmp_path / "not" / "yet", 200 * 1024**2, "a test write")  # fits, with the margin
    assert seen == [str(tmp_path)]  # measured on the nearest folder that exists
    with pytest.raises(NotEnoughDisk) as refused:
        atomic.ensure_room(tmp_path, 1024**3, "converting m.gguf (float32)")
    message = str(refused.value)
    assert "converting m.gguf (float32) needs about 1.0 GiB" in message and str(tmp_path) in message
    assert "300.0 MiB free" in message and "LECTERN_CACHE_DIR" in message
    assert not (tmp_path / "not").exists()


def test_out_of_disk_is_recognised_by_errno_or_by_a_library_s_words() -> None:
    import errno

    assert atomic.out_of_disk(OSError(errno.ENOSPC, "No space left on device"))
    assert atomic.out_of_disk(
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    )
    assert not atomic.out_of_disk(OSError(errno.EACCES, "Permission denied"))
