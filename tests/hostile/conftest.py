"""The hostile-input corpus, generated at test time (small): names and text that look like Rich
markup or hold control characters, and a CLI runner over a fresh data dir with the fake models."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

# Forum exports quote like this; Rich reads `[/x]` as a closing tag and raised MarkupError.
MARKUP = ["[/x]", "[/quote]", "[/cyan]", "[bold]", "[link=file:///etc]x[/link]", "\\[/x]", "end\\"]
ANSI_NAME = "ansi\x1b[31mred.txt"


@pytest.fixture
def runner(data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("LECTERN_INGEST__EMBED__MODEL", "fake")
    monkeypatch.setenv("LECTERN_INGEST__PARSE_WORKERS", "0")
    monkeypatch.setenv("LECTERN_LLM__BACKEND", "fake")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.chdir(tmp_path)  # no stray ./lectern.toml
    return CliRunner()


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and 'File "' not in output and "internal error" not in output, output
