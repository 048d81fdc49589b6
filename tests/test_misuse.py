"""Misuse of the CLI and the Python API: every bad value is one clear error naming the field, with
exit code 2 at the CLI; a bug is one line, exit 3 and a file with the trace; never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.cli.edge import EXIT_INTERNAL, EXIT_USAGE
from lectern.errors import InvalidInput, InvalidName
from lectern.rag.workspace import Workspace


@pytest.fixture
def notes(runner: CliRunner, tmp_path: Path) -> Path:
    """A collection `notes` of a few small files."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"n{i}.txt").write_text(f"Note {i}\n\nThe otters of pool {i} eat crayfish at dawn.\n")
    result = runner.invoke(app, ["ingest", str(folder), "-c", "notes"])
    assert result.exit_code == 0, result.output
    return folder


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and 'File "' not in output, output


# -- k, and every numeric option, checked in one place (rag.limits) ----------------------------------


@pytest.mark.parametrize("k", [-1, 0, 2.5, True, "3", 101, 20000])
def test_search_refuses_a_bad_k(settings, notes: Path, k: object) -> None:  # type: ignore[no-untyped-def]
    """k=-1 returned all candidates but the last, k=0 silently 5, k=2.5 a TypeError, 20000 ran on."""
    ws = Workspace(collection="notes", settings=settings)
    try:
        with pytest.raises(InvalidInput, match=r"invalid k .*(whole number|from 1 to 100)"):
            ws.search("otters", k=k)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="invalid k"):
            ws.retriever(k=k if isinstance(k, int) else 0).invoke("otters")
        assert len(ws.search("otters", k=1)) == 1 and len(ws.search("otters", k=100)) == 6
    finally:
        ws.close()


@pytest.mark.parametrize(("flags", "field"), [(["-k", "0"], "k"), (["-k", "20000", "--mmr"], "k"),
                                              (["--page-min", "0"], "page_min")])  # fmt: skip
def test_cli_search_refuses_bad_numbers(runner: CliRunner, notes: Path, flags: list[str], field: str) -> None:
    result = runner.invoke(app, ["search", "otters", "-c", "notes", *flags])
    assert result.exit_code == EXIT_USAGE and f"invalid {field}" in result.output, result.output
    no_traceback(result.output)


def test_cli_flags_out_of_range_are_usage_errors(runner: CliRunner, notes: Path) -> None:
    result = runner.invoke(app, ["search", "otters", "-c", "notes", "-k", "2.5"])
    assert result.exit_code == EXIT_USAGE  # typer refuses it before lectern runs
    result = runner.invoke(app, ["ask", "otters?", "-c", "notes", "--max-new-tokens", "0"])
    assert result.exit_code == EXIT_USAGE and "max_new_tokens" in result.output
    no_traceback(result.output)


# -- questions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["", "   \n"])
def test_an_empty_question_is_a_clear_error(runner: CliRunner, notes: Path, question: str) -> None:
    """`lectern ask ""` printed a traceback (ValueError from the QA chain)."""
    result = runner.invoke(app, ["ask", question, "-c", "notes"])
    assert result.exit_code == EXIT_USAGE and "invalid question" in result.output and "empty" in result.output
    no_traceback(result.output)


def test_a_question_longer_than_the_setting_is_refused(settings, notes: Path) -> None:  # type: ignore[no-untyped-def]
    """100k characters that fit a 32k window were accepted, and generation ran past 5 minutes."""
    ws = Workspace(collection="notes", settings=settings.model_copy(update={"llm": settings.llm.model_copy(
        update={"backend": "fake"})}))  # fmt: skip
    limit = ws.settings.answer.max_question_tokens
    try:
        sentence = "Which otters eat crayfish at dawn in the pool? "
        for question in (sentence * 40, sentence * 3000):  # over the limit; far over it
            with pytest.raises(InvalidInput, match=f"max_question_tokens = {limit}"):
                ws.ask(question)
            with pytest.raises(InvalidInput, match="max_question_tokens"):
                list(ws.stream_ask(question))
            with pytest.raises(InvalidInput, match="max_question_tokens"):
                ws.chat(question, conversation_id="long")
        assert ws.ask(sentence).answer  # a question of normal length is answered
    finally:
        ws.close()


def test_cli_chat_refuses_a_long_question_and_goes_on(runner: CliRunner, notes: Path) -> None:
    long = "Which otters eat crayfish at dawn? " * 200
    result = runner.invoke(app, ["chat", "-c", "notes"], input=f"{long}\nWhich otters eat crayfish?\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "max_question_tokens" in result.output and result.output.count("lectern>") == 1
    no_traceback(result.output)


# -- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["notes\n", "notes\n\n", "../x", "a/b", ".hidden", "x" * 65])
def test_collection_names_match_as_whole_strings(settings, name: str) -> None:  # type: ignore[no-untyped-def]
    """`$` matched before a final newline: "notes\\n" was accepted and became a folder name."""
    with pytest.raises(InvalidName):
        Workspace(collection=name, settings=settings)


def test_chat_refuses_a_bad_conversation_id_at_start(runner: CliRunner, notes: Path) -> None:
    """`--conversation ../../x` started, then failed on every question."""
    result = runner.invoke(
        app, ["chat", "-c", "notes", "--conversation", "../../x"], input="otters?\n/quit\n"
    )
    assert result.exit_code == EXIT_USAGE and "invalid conversation id" in result.output
    assert "chatting with" not in result.output and "lectern>" not in result.output
    no_traceback(result.output)


# -- the error edge and exit codes ---------------------------------------------------------------------


def test_an_internal_error_is_one_line_and_a_trace_file(
    runner: CliRunner, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: one injected into search) is exit 3, one line naming the file with the trace."""

    def broken(self, query, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyError("a bug in lectern")

    monkeypatch.setattr(Workspace, "search", broken)
    result = runner.invoke(app, ["search", "otters", "-c", "notes"])
    assert result.exit_code == EXIT_INTERNAL
    no_traceback(result.output)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error: KeyError"), result.output
    trace = Path(re.search(r"full trace in (\S+?);", lines[0]).group(1))  # type: ignore[union-attr]
    try:
        text = trace.read_text()
        assert "Traceback" in text and "a bug in lectern" in text and "broken" in text
    finally:
        trace.unlink()


def test_exit_codes_are_documented(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    text = " ".join(result.output.split())
    assert "Exit codes: 0 done; 1 some files failed" in text and "2 usage" in text and "3 internal" in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "| 3 |" in readme and "| 2 |" in readme and "| 1 |" in readme


def test_ingest_exit_codes(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "ok.txt").write_text("Fine text about otters.\n")
    assert runner.invoke(app, ["ingest", str(folder), "-c", "mix"]).exit_code == 0
    (folder / "empty.txt").write_bytes(b"")
    assert runner.invoke(app, ["ingest", str(folder), "-c", "mix"]).exit_code == 1  # reported failures
    assert runner.invoke(app, ["ingest", str(folder), "-c", "bad/name"]).exit_code == EXIT_USAGE
    assert runner.invoke(app, ["ingest", str(folder), "--workers", "-1"]).exit_code == EXIT_USAGE


# -- where data may go ----------------------------------------------------------------------------------


def test_settings_files_are_named_and_a_remote_model_server_is_warned_about(
    runner: CliRunner, notes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ./lectern.toml that points the openai backend off this machine sent the passages silently."""
    monkeypatch.delenv("LECTERN_LLM__BACKEND")
    monkeypatch.setenv("LECTERN_LLM__TIMEOUT_S", "2")
    remote = "http://192.0.2.7:9/v1"  # TEST-NET-1: documentation only, nothing answers
    (tmp_path / "lectern.toml").write_text(f'[llm]\nbackend = "openai"\nbase_url = "{remote}"\nmodel = "m"\n')
    result = runner.invoke(app, ["ask", "Which otters eat crayfish?", "-c", "notes"])
    no_traceback(result.output)
    text = " ".join(result.output.split())
    assert f"settings read from: {tmp_path / 'lectern.toml'}" in text
    assert f"warning: retrieved passages will be sent to {remote}" in text
    assert result.exit_code in (0, EXIT_USAGE)  # answered by abstaining, or the server is unreachable

    monkeypatch.setenv("LECTERN_LLM__BASE_URL", remote)  # given by the user in this shell: no warning
    assert "warning" not in runner.invoke(app, ["ask", "Which otters eat crayfish?", "-c", "notes"]).output
    monkeypatch.delenv("LECTERN_LLM__BASE_URL")
    (tmp_path / "lectern.toml").write_text('[llm]\nbackend = "fake"\nbase_url = "http://127.0.0.1:8000/v1"\n')
    result = runner.invoke(app, ["ask", "Which otters eat crayfish?", "-c", "notes"])
    assert result.exit_code == 0 and "warning" not in result.output and "settings read from" in result.output
