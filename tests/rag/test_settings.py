"""Settings precedence, one layer at a time: defaults < <data dir>/settings.toml < ./lectern.toml <
LECTERN_* environment < CLI flags. Each layer overrides the one below it, field by field: what a
higher layer leaves unset still comes from the layers below."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lectern.cli.edge import settings_from_flags
from lectern.rag.settings import Settings, load_settings


@pytest.fixture
def layers(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own (no stray ./lectern.toml) and the test's data dir."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def picked(settings: Settings) -> tuple[int, int, float, str]:
    return settings.retrieval.k, settings.llm.max_new_tokens, settings.llm.temperature, settings.answer.prompt


def test_each_layer_overrides_the_one_below(
    layers: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert picked(load_settings()) == (5, 256, 0.0, "concise")  # the defaults

    (data_dir / "settings.toml").write_text(
        '[retrieval]\nk = 6\n[llm]\nmax_new_tokens = 100\ntemperature = 0.1\n[answer]\nprompt = "few_shot"\n'
    )
    assert picked(load_settings()) == (6, 100, 0.1, "few_shot")

    (layers / "lectern.toml").write_text("[retrieval]\nk = 7\n[llm]\ntemperature = 0.2\n")
    assert picked(load_settings()) == (7, 100, 0.2, "few_shot")  # what it leaves unset comes from below

    monkeypatch.setenv("LECTERN_RETRIEVAL__K", "8")
    assert picked(load_settings()) == (8, 100, 0.2, "few_shot")

    assert picked(load_settings(retrieval={"k": 9})) == (9, 100, 0.2, "few_shot")  # the API's overrides
    cli = settings_from_flags(None, retrieval={"k": 9, "mode": None}, llm={"max_new_tokens": None})
    assert picked(cli) == (9, 100, 0.2, "few_shot")  # a flag left out (None) overrides nothing


def test_the_data_dir_itself_follows_the_same_order(
    layers: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where settings.toml is read from is decided first, by the same precedence."""
    local, flag = tmp_path / "from-toml", tmp_path / "from-flag"
    for folder, k in ((data_dir, 11), (local, 12), (flag, 13)):
        folder.mkdir(exist_ok=True)
        (folder / "settings.toml").write_text(f"[retrieval]\nk = {k}\n")
    monkeypatch.delenv("LECTERN_DATA_DIR")
    (layers / "lectern.toml").write_text(f'data_dir = "{local}"\n')
    assert load_settings().data_dir == local and load_settings().retrieval.k == 12
    monkeypatch.setenv("LECTERN_DATA_DIR", str(data_dir))
    assert load_settings().data_dir == data_dir and load_settings().retrieval.k == 11
    settings = settings_from_flags(flag)
    assert settings.data_dir == flag and settings.retrieval.k == 13


def test_saved_settings_round_trip_under_the_environment(data_dir: Path, layers: Path) -> None:
    """What the web UI saves is read back by the CLI; the API key is saved in clear, file private."""
    saved = load_settings(llm={"backend": "openai", "model": "m", "api_key": "sk-1", "temperature": 0.3})
    path = saved.save()
    assert path == data_dir / "settings.toml" and oct(path.stat().st_mode & 0o777) == "0o600"
    again = load_settings()
    assert again.llm.api_key is not None and again.llm.api_key.get_secret_value() == "sk-1"
    assert (again.llm.backend, again.llm.temperature) == ("openai", 0.3)


def test_save_writes_only_what_differs_from_the_defaults(data_dir: Path, layers: Path) -> None:
    """The UI saved about 80 lines of defaults for two changed values, hiding what a person chose."""
    saved = load_settings(retrieval={"k": 3}, llm={"temperature": 0.3})
    text = saved.save().read_text()
    assert tomllib.loads(text) == {"retrieval": {"k": 3}, "llm": {"temperature": 0.3}}
    again = load_settings()
    assert (again.retrieval.k, again.llm.temperature, again.retrieval.mode) == (3, 0.3, "hybrid")
