"""The CLI's output off a terminal (a pipe, a log): plain lines, never wrapped mid-sentence; ingest
rows that differ where their paths differ; a second process on a milvus-lite database told who holds
it in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.cli.ingest import distinguishing
from tests.conftest import FAKE_MODELS

ROOT = Path(__file__).resolve().parents[1]


def deep_folder(base: Path) -> Path:
    """A folder whose path is far wider than a terminal (about 300 characters)."""
    folder = base.joinpath(*[f"a-rather-long-folder-name-{i:02d}" for i in range(10)])
    folder.mkdir(parents=True)
    return folder


def test_rows_show_what_tells_the_paths_apart() -> None:
    paths = ["/data/projects/manuals/pump/a.pdf", "/data/projects/manuals/pump/sub/b.txt"]
    assert distinguishing(paths) == (["a.pdf", "sub/b.txt"], "/data/projects/manuals/pump")
    assert distinguishing(["/data/x.txt"]) == (["/data/x.txt"], "")
    assert distinguishing(["/a/x.txt", "/b/y.txt"]) == (["/a/x.txt", "/b/y.txt"], "")  # only / shared
    assert distinguishing(["rel/x.txt", "/abs/y.txt"]) == (["rel/x.txt", "/abs/y.txt"], "")


def test_a_deep_folder_ingests_into_unwrapped_lines_with_distinct_rows(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder = deep_folder(tmp_path / "docs")
    (folder / "otters.txt").write_text("The river otters of Glenmore eat crayfish at dawn.\n")
    (folder / "canal.md").write_text("# Canal\n\nThe canal has forty-two locks.\n")
    result = runner.invoke(app, ["ingest", str(folder), "-c", "deep"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"files under {folder}:" in lines, result.output  # one line, whole
    assert any("otters.txt" in line and "added" in line for line in lines), result.output
    assert any("canal.md" in line and "added" in line for line in lines), result.output
    summary = [line for line in lines if line.startswith("added 2, updated 0")]
    assert summary and summary[0].endswith("chunks/s)"), result.output  # not cut at 80 columns


def test_piped_output_is_plain_and_unwrapped_on_stdout_and_stderr(tmp_path: Path) -> None:
    """A real pipe, no COLUMNS: what a log or `| tee` gets."""
    folder = deep_folder(tmp_path / "docs")
    (folder / "otters.txt").write_text("The river otters of Glenmore eat crayfish at dawn.\n")
    (folder / "canal.md").write_text("# Canal\n\nThe canal has forty-two locks.\n")
    cwd = deep_folder(tmp_path / "work")
    (cwd / "lectern.toml").write_text('collection = "piped"\n')  # its path is said on stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_") and k != "COLUMNS"}
    env |= FAKE_MODELS | {
        "LECTERN_DATA_DIR": str(tmp_path / "data"),
        "LECTERN_CACHE_DIR": os.environ["LECTERN_CACHE_DIR"],
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "lectern.cli", "ingest", str(folder)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout + done.stderr  # no colours or cursor moves in a pipe
    assert f"settings read from: {cwd / 'lectern.toml'}" in done.stderr.splitlines(), done.stderr
    assert f"files under {folder}:" in done.stdout.splitlines(), done.stdout
    assert any(
        line.startswith("added 2,") and line.endswith("chunks/s)") for line in done.stdout.splitlines()
    )


def test_transformers_loads_quietly() -> None:
    from transformers.utils import logging as hf_logging

    from lectern.ingest.hf_logging import quiet

    hf_logging.enable_progress_bar()
    quiet()
    assert not hf_logging.is_progress_bar_enabled()  # no "Loading weights" bar on stderr


HOLD = """
import sys, time
from pymilvus import MilvusClient
client = MilvusClient(uri=sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.timeout(180)
def test_a_second_process_on_a_milvus_lite_database_is_told_who_holds_it(
    runner: CliRunner, fake_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lectern list` while another process (the UI, say) has the database open: one line naming
    that process, exit 2, no milvus-lite traceback."""
    pytest.importorskip("milvus_lite")
    db = fake_models / "milvus.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read() if holder.stderr else ""
        monkeypatch.setenv("LECTERN_STORE__BACKEND", "milvus")
        result = runner.invoke(app, ["list"])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.output
        assert (
            f"cannot open the Milvus database {db}: another process holds it (pid {holder.pid}" in errors[0]
        )
        assert "Traceback" not in result.output and "DataDirLockedError" not in result.output
    finally:
        holder.kill()
        holder.wait(timeout=30)
    deadline = time.monotonic() + 30  # the lock goes with the process: the database opens again
    from lectern.ingest.milvus_store import close_client, lock_holder

    while lock_holder(db) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    result = runner.invoke(app, ["list"])
    close_client(str(db))
    assert result.exit_code == 0, result.output
