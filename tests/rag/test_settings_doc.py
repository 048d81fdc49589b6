"""docs/SETTINGS.md is generated from the settings models' descriptions and kept current."""

from __future__ import annotations

from pathlib import Path

from lectern.rag.settings_doc import DOC, env_name, main, missing_descriptions, render


def test_every_setting_says_what_it_does() -> None:
    assert missing_descriptions() == []


def test_settings_md_is_current() -> None:
    assert main(["--check"]) == 0, "docs/SETTINGS.md is stale: run python -m lectern.rag.settings_doc"


def test_a_stale_file_fails_the_check_and_the_generator_mends_it(tmp_path: Path) -> None:
    stale = tmp_path / "SETTINGS.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("| `llm.model` |", "| `llm.modell` |"))
    assert main(["--check", "--out", str(stale)]) == 1
    assert main(["--out", str(stale)]) == 0
    assert main(["--check", "--out", str(stale)]) == 0


def test_each_row_names_its_environment_variable() -> None:
    text = render()
    assert "| `ingest.embed.profile` |" in text and f"`{env_name('ingest.embed.profile')}`" in text
    assert env_name("ingest.embed.profile") == "LECTERN_INGEST__EMBED__PROFILE"
