"""Configuration errors are exit 2 with one line naming the file, line and key (never exit 3 and a
trace file); unknown keys are errors with a "did you mean"; an empty or unusable data dir is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.cli.edge import EXIT_USAGE
from lectern.errors import SettingsError
from lectern.rag.settings import load_settings
from tests.hostile.conftest import no_traceback


def refused(runner: CliRunner, *parts: str, argv: tuple[str, ...] = ("list",)) -> str:
    result = runner.invoke(app, list(argv))
    no_traceback(result.output)
    assert result.exit_code == EXIT_USAGE, result.output
    text = " ".join(result.output.split())
    assert all(p in text for p in parts), (parts, text)
    return text


@pytest.mark.parametrize(
    ("where", "body", "parts"),
    [
        ("local", '[retrieval]\nk = 5\nmode = "dense\n', ["lectern.toml", "line 3"]),
        ("saved", "[llm]\nbackend = fake\n", ["settings.toml", "line 2"]),
        ("saved", b"\x00\x01\xff\xfe binary \x00", ["settings.toml", "not UTF-8 text"]),
        (
            "local",
            "[retreival]\nk = 3\n",
            ["lectern.toml", "line 1", "retreival", "did you mean 'retrieval'"],
        ),
        ("local", "[retrieval]\nk = 3\nmod = 'bm25'\n", ["line 3", "retrieval.mod", "did you mean 'mode'"]),
        ("saved", "[ingest.embed]\nprofil = 'fast'\n", ["settings.toml", "line 2", "ingest.embed.profil"]),
        ("local", "[retrieval]\nk = 0\n", ["lectern.toml", "retrieval.k"]),
    ],
)
def test_a_bad_settings_file_is_named_with_its_line(
    runner: CliRunner, data_dir: Path, tmp_path: Path, where: str, body: str | bytes, parts: list[str]
) -> None:
    path = tmp_path / "lectern.toml" if where == "local" else data_dir / "settings.toml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    refused(runner, *parts)
    refused(runner, *parts, argv=("search", "otters"))


def test_a_settings_error_is_a_lectern_error_in_the_api(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "settings.toml").write_text("[retreival]\nk = 3\n")
    with pytest.raises(SettingsError, match=r"settings.toml, line 1: unknown key 'retreival'") as caught:
        load_settings()
    assert caught.value.line == 1 and caught.value.key == "retreival"


def test_a_saved_settings_file_reads_back(data_dir: Path) -> None:
    settings = load_settings()
    settings.retrieval.k = 7
    settings.save()
    assert load_settings().retrieval.k == 7  # everything save() writes is a known key


def test_bad_json_in_a_variable_names_the_variable(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LECTERN_INGEST", "{bad json")
    refused(runner, "LECTERN_INGEST", "JSON")


def test_an_empty_data_dir_variable_is_refused(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LECTERN_DATA_DIR", "")
    refused(runner, "data_dir", "empty")
    assert not (tmp_path / "collections").exists()  # the current folder did not become the data dir


def test_a_data_dir_that_is_a_file_is_refused(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    monkeypatch.setenv("LECTERN_DATA_DIR", str(file))
    refused(runner, "not-a-folder", "not a folder")
    refused(runner, "not-a-folder", "not a folder", argv=("list", "--data-dir", os.fspath(file)))
