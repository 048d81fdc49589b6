"""`lectern ask --agent` with the fake model: the answer, its sources and, with --verbose, the steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app


@pytest.fixture
def runner(runner: CliRunner, tmp_path: Path) -> CliRunner:
    """The shared runner (tests/conftest.py), with a collection of one file ingested."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text("The river otters of Glenmore eat crayfish at dawn.\n")
    assert runner.invoke(app, ["ingest", str(docs)]).exit_code == 0
    return runner


def test_ask_agent_verbose_prints_steps_answer_and_sources(runner: CliRunner) -> None:
    """The default plans (a model call), searches, answers; --no-plan runs the tool loop."""
    result = runner.invoke(app, ["ask", "What do the otters eat?", "--agent", "--verbose"])
    assert result.exit_code == 0, result.output
    assert "1. model:" in result.output
    assert "2. search(query='What do the otters eat?') -> " in result.output and "chunks [1]" in result.output
    assert "stopped by answer" in result.output
    assert "crayfish" in result.output and "otters.txt" in result.output
    loop = runner.invoke(app, ["ask", "What do the otters eat?", "--agent", "--verbose", "--no-plan"])
    assert loop.exit_code == 0, loop.output
    assert "1. search(query='What do the otters eat?') -> " in loop.output and "2. model:" in loop.output
    assert "crayfish" in loop.output and "otters.txt" in loop.output


def test_ask_agent_quiet_and_json(runner: CliRunner) -> None:
    quiet = runner.invoke(app, ["ask", "What do the otters eat?", "--agent"])
    assert quiet.exit_code == 0 and "search(" not in quiet.output and "crayfish" in quiet.output
    raw = runner.invoke(app, ["ask", "What do the otters eat?", "--agent", "--json"])
    start = raw.output.index("{")
    data = json.loads(raw.output[start:])
    assert data["stopped_by"] == "answer" and [s["tool"] for s in data["steps"]][-2:] == ["search", None]
    assert data["answer"]["citations"][0]["source"].endswith("otters.txt")


def test_ask_agent_step_limit_flag_is_checked(runner: CliRunner) -> None:
    result = runner.invoke(app, ["ask", "q?", "--agent", "--max-steps", "0"])
    assert result.exit_code == 2


def test_an_adapter_with_the_fake_backend_is_an_error_not_ignored(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", "What do the otters eat?", "--adapter", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "llm.adapter" in result.output and "fake backend cannot load a LoRA adapter" in result.output


def test_eval_answers_takes_adapter(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lectern.rag.evaluate_answers as evaluate_answers

    seen: list[object] = []
    monkeypatch.setattr(
        evaluate_answers, "eval_answers_command", lambda qa, settings, *a, **k: seen.append(settings)
    )
    result = runner.invoke(
        app, ["eval", "answers", "--qa-dir", str(tmp_path), "--adapter", str(tmp_path / "a")]
    )
    assert result.exit_code == 0, result.output
    assert seen[0].llm.adapter == str(tmp_path / "a")  # type: ignore[attr-defined]
