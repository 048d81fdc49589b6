"""A decompression bomb is one failed file within bounded memory, and a file that kills its parse
worker fails alone: it is never parsed again in the ingest's own process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from lectern.errors import DecompressionBomb
from lectern.ingest.loaders import load
from tests.conftest import FAKE_MODELS, SAMPLE_DOCS
from tests.hostile.corpus import bomb_pdf

GIB = 1 << 30


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of text-showing operators in one page's content stream, about 4 MB on disk."""
    return bomb_pdf(tmp_path_factory.mktemp("bomb") / "bomb.pdf", GIB)


def test_a_bomb_pdf_fails_within_a_small_budget(bomb: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBomb, match=r"bomb.pdf: a stream inflates past \d+ MiB"):
            load(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak  # the file is read (4 MB); what it inflates to is counted, not kept


def test_pdfs_under_the_budget_still_load(tmp_path: Path) -> None:
    assert load(bomb_pdf(tmp_path / "fine.pdf", 1 << 20)).units  # 1 MiB of page content: fine
    for pdf in sorted(SAMPLE_DOCS.glob("*.pdf")):
        assert load(pdf).units, pdf


def _ingest(
    folder: Path, data: Path, prefix: list[str], extra_path: str = "", **settings: str
) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")} | settings
    env |= FAKE_MODELS | {
        "LECTERN_DATA_DIR": str(data), "LECTERN_INGEST__PARSE_WORKERS": "1",
        "LECTERN_CACHE_DIR": os.environ["LECTERN_CACHE_DIR"],
        "PYTHONPATH": os.pathsep.join(p for p in (extra_path, str(Path(__file__).parents[2])) if p),
    }  # fmt: skip
    cli = [sys.executable, "-m", "lectern.cli", "ingest", str(folder), "-c", "c", "--json"]
    done = subprocess.run([*prefix, *cli], env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def _good_files(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(10):
        (folder / f"good{i}.txt").write_text(f"Good file {i}: the otters of pool {i} eat crayfish.\n")


@pytest.mark.skipif(not shutil.which("prlimit"), reason="needs prlimit to limit memory")
def test_a_bomb_under_a_memory_limit_costs_only_itself(bomb: Path, tmp_path: Path) -> None:
    """Under a 1.5 GB address-space limit the worker, then the fallback in the main process, died
    (rc 134) and no good file was written; now the bomb fails alone."""
    folder = tmp_path / "docs"
    _good_files(folder)
    shutil.copy(bomb, folder / "bomb.pdf")
    rc, report = _ingest(folder, tmp_path / "data", ["prlimit", f"--as={3 * GIB // 2}"])
    assert rc == 1 and report["added"] == 10 and report["failed"] == 1, (rc, report)
    (failed,) = [f for f in report["files"] if f["status"] == "failed"]
    assert failed["path"].endswith("bomb.pdf") and "decompression bomb" in failed["reason"]


KILLER = """
import os, signal, threading
from pathlib import Path
import lectern.ingest.loaders as load
from lectern.ingest.document import NO_OPTIONS

_text = load.LOADERS[".txt"]

def killer(path: Path, options=NO_OPTIONS):  # a Loader: (path, LoadOptions)
    if Path(path).name == "killer.txt":  # what the OOM killer does to a process parsing a bomb
        os.kill(os.getpid(), signal.SIGKILL)
    if Path(path).name == "stuck.txt":  # a parser that never returns
        threading.Event().wait()
    return _text(path, options)

load.LOADERS[".txt"] = killer
"""


def test_a_file_that_kills_its_worker_is_not_parsed_in_the_main_process(tmp_path: Path) -> None:
    """Every process of the ingest (a sitecustomize on its path) dies parsing killer.txt: the main
    process used to parse it again itself after the worker died, and died too."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILLER)
    folder = tmp_path / "docs"
    _good_files(folder)
    (folder / "killer.txt").write_text("This file kills whoever parses it.\n")
    rc, report = _ingest(folder, tmp_path / "data", [], extra_path=str(hooks))
    assert rc == 1 and report["added"] == 10 and report["failed"] == 1, (rc, report)
    (failed,) = [f for f in report["files"] if f["status"] == "failed"]
    assert failed["path"].endswith("killer.txt") and "parse process was killed" in failed["reason"]


def test_a_pdf_of_many_pages_stops_at_the_text_budget() -> None:
    """Streams each under the budget, but more text than a file may hold: checked page by page."""
    import lectern.ingest.pdf as pdf

    sample = next(SAMPLE_DOCS.glob("*.pdf"))
    for parser in pdf.PARSERS.values():
        with pytest.raises(DecompressionBomb, match=r"text passes 1,000 characters .*pdf_max_text_chars"):
            parser(sample, sample.read_bytes(), 1000)


def test_the_pdf_budgets_are_ingest_settings(tmp_path: Path) -> None:
    """ingest.pdf_max_stream_bytes and ingest.pdf_max_text_chars reach the loader in the parse worker
    (they were constants): a 1 MiB page stream passes the default and fails under 512 KiB, the error
    naming the setting; a budget no real page passes is refused when the settings are read."""
    from pydantic import ValidationError

    from lectern.ingest.fake_embed import FakeEmbedder
    from lectern.ingest.pipeline import ingest
    from lectern.ingest.settings import IngestSettings

    (tmp_path / "docs").mkdir()
    page = bomb_pdf(tmp_path / "docs" / "page.pdf", 1 << 20)
    shutil.copy(next(SAMPLE_DOCS.glob("*.pdf")), tmp_path / "docs" / "sample.pdf")
    default = ingest([page.parent], tmp_path / "a", FakeEmbedder(), IngestSettings(parse_workers=1))
    assert default.ok and len(default.added) == 2, default.results
    tight = IngestSettings(parse_workers=1, pdf_max_stream_bytes=512 << 10, pdf_max_text_chars=1000)
    report = ingest([page.parent], tmp_path / "b", FakeEmbedder(), tight)
    reasons = {Path(r.path).name: r.reason or "" for r in report.failed}
    assert "inflates past 524,288 bytes" in reasons["page.pdf"], reasons
    assert "pdf_max_stream_bytes" in reasons["page.pdf"]
    assert "text passes 1,000 characters" in reasons["sample.pdf"], reasons
    for bad in ({"pdf_max_stream_bytes": 100}, {"pdf_max_text_chars": 0}, {"pdf_max_stream_bytes": "big"}):
        with pytest.raises(ValidationError):
            IngestSettings(**bad)


def test_a_file_whose_parse_never_ends_fails_at_the_timeout(tmp_path: Path) -> None:
    """A parser stuck on one file held the whole ingest forever; past ingest.parse_timeout_s its
    worker is stopped and it fails alone (the files beside it are parsed again)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILLER)
    folder = tmp_path / "docs"
    _good_files(folder)
    (folder / "stuck.txt").write_text("No parser ever finishes this file.\n")
    # The test waits the timeout out (it was 60 s, a minute of the suite). The first file's wait
    # includes its worker's start (spawn and imports: about a second on 2 idle cores, a few on busy
    # ones), so 15 s leaves room for a busy machine; the files after it find the worker warm.
    settings = {"LECTERN_INGEST__PARSE_TIMEOUT_S": "15"}
    rc, report = _ingest(folder, tmp_path / "data", ["timeout", "300"], extra_path=str(hooks), **settings)
    assert rc == 1 and report["added"] == 10 and report["failed"] == 1, (rc, report)
    (failed,) = [f for f in report["files"] if f["status"] == "failed"]
    assert failed["path"].endswith("stuck.txt") and "not parsed within 15 s" in failed["reason"]
