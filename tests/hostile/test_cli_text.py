"""User text (paths, titles, headings, passages) reaches the terminal as text: what looks like Rich
markup is printed as it is and never crashes a command; control characters are shown escaped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from tests.hostile.conftest import ANSI_NAME, MARKUP, no_traceback


@pytest.fixture
def forum(runner: CliRunner, tmp_path: Path) -> Path:
    """A collection `forum`: markup in a file name, a title, a heading and passages; an ANSI name."""
    top = tmp_path / "forum ["  # the paths below read `forum [/quote] ...`: a closing tag
    folder = top / "quote] posts"
    folder.mkdir(parents=True)
    for i, tag in enumerate(MARKUP):
        (folder / f"post{i} {tag.replace('/', '_')}[x].md").write_text(
            f"# Otters {tag} thread {i}\n\n## Reply {tag}\n\n"
            f"[quote]The otters {tag} of pool {i} eat crayfish[/quote] at dawn [/cyan] said {tag}.\n"
        )
    (folder / "title [x].html").write_text(
        "<html><head><title>Otters [/quote] title</title></head><body><p>Otters [/x] swim.</p></body></html>"
    )
    (folder / ANSI_NAME).write_text("Otters in red ink eat crayfish.\n")
    result = runner.invoke(app, ["ingest", str(folder), "-c", "forum"])
    no_traceback(result.output)
    assert result.exit_code == 0, result.output
    assert "[/quote]" in result.output and "\x1b" not in result.output
    return folder


def test_ingest_list_search_and_summarize_print_markup_as_text(runner: CliRunner, forum: Path) -> None:
    for argv in (
        ["ingest", str(forum), "-c", "forum"],  # the re-ingest of the folder (all unchanged)
        ["list", "-c", "forum"],
        ["search", "otters crayfish [/x]", "-c", "forum", "-k", "20"],
        ["summarize", "-c", "forum", "--query", "otters [/quote]"],
        ["ask", "Which otters [/cyan] eat crayfish?", "-c", "forum"],
    ):
        result = runner.invoke(app, argv)
        no_traceback(result.output)
        assert result.exit_code == 0, (argv, result.output)
        assert "\x1b" not in result.output, argv  # the ANSI name is shown escaped, never raw
    listing = runner.invoke(app, ["list", "-c", "forum"]).output
    assert (
        "Otters [/quote] title" in listing
        and "forum [/quote] posts" in listing
        and "ansi\\x1b[31mred.txt" in listing
    )
    found = runner.invoke(app, ["search", "otters crayfish", "-c", "forum", "-k", "20"]).output
    assert "[/cyan]" in found and "Reply [/quote]" in found and "ansi\\x1b[31mred.txt" in found


def test_json_output_keeps_the_text_as_it_is(runner: CliRunner, forum: Path) -> None:
    docs = json.loads(runner.invoke(app, ["list", "-c", "forum", "--json"]).output)
    assert any(d["source"].endswith(ANSI_NAME) for d in docs)  # JSON escapes it; the name is exact


def test_the_helper_escapes_markup_and_controls() -> None:
    from rich.console import Console

    from lectern.cli.output import shown

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for tag in [*MARKUP, "a\x1b[2Jb", "bell\x07", "nul\x00", "bad\udcff.txt", "tab\tok"]:
        console.print(shown(tag))
    text = console.export_text()
    assert all(t in text for t in MARKUP)
    assert "a\\x1b[2Jb" in text and "bell\\x07" in text and "nul\\x00" in text and "bad\\xff.txt" in text
    assert "\x1b" not in text
