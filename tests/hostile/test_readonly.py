"""A collection on a read-only disk (a remount, a snapshot, another user's share): `list`, `search`
and `ask` read it; nothing a reader does needs a lock file or SQLite's -shm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app


def read_only(data: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lectern ARGV` with `data` read-only: a read-only bind mount in a mount namespace of its own
    as root (root writes through permissions), permissions taken away otherwise."""
    cli = [sys.executable, "-m", "lectern.cli", *argv]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [data, *data.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    script = f'mount --bind -o ro "{data}" "{data}" && touch "{data}/probe" 2>/dev/null && exit 99; exec "$@"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *cli], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if done.returncode == 99 or "mount:" in done.stderr or "unshare:" in done.stderr:
        pytest.skip(f"no read-only mount here: {done.stderr.strip()[:200]}")
    return done


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("unshare"), reason="needs unshare as root")
def test_list_search_and_ask_read_a_read_only_collection(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text("Otters eat crayfish at dawn.\n\nHerons wait in the reeds.\n")
    assert runner.invoke(app, ["ingest", str(docs), "-c", "notes"]).exit_code == 0
    env = dict(os.environ) | {"PYTHONPATH": os.getcwd() + os.pathsep + str(Path(__file__).parents[2])}
    for argv, expect in (
        (["list", "-c", "notes"], "otters.txt"),
        (["list"], "notes"),
        (["search", "crayfish", "-c", "notes"], "Otters eat crayfish"),
        (["ask", "What do otters eat?", "-c", "notes"], "otters.txt"),
    ):
        done = read_only(data_dir, argv, env)
        assert done.returncode == 0 and expect in done.stdout, (argv, done.stdout, done.stderr)
    assert not list(data_dir.rglob("*-shm")) and not list(data_dir.rglob("probe"))
    done = read_only(data_dir, ["ingest", str(docs), "-c", "notes", "--force"], env)
    assert done.returncode == 2 and "read-only" in done.stderr.lower(), done.stderr  # one clear line
