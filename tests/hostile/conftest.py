"""The hostile-input corpus, generated at test time (small): names and text that look like Rich
markup or hold control characters, and a CLI runner over a fresh data dir with the fake models."""

from __future__ import annotations

# Forum exports quote like this; Rich reads `[/x]` as a closing tag and raised MarkupError.
MARKUP = ["[/x]", "[/quote]", "[/cyan]", "[bold]", "[link=file:///etc]x[/link]", "\\[/x]", "end\\"]
ANSI_NAME = "ansi\x1b[31mred.txt"


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and 'File "' not in output and "internal error" not in output, output
