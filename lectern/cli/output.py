"""What the CLI prints: Rich on a terminal, plain unwrapped lines off one; user text escaped; JSON
printable whatever file names it holds; lectern's log lines as notes on stderr."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape


class PlainOffTerminal(Console):
    """Rich on a terminal. Off one (a pipe, a log file) lines are never wrapped and tables take their
    natural width: Rich's default of 80 columns there cut sentences and paths mid-way. Checked at
    each print, so a test's captured stream and a real pipe are treated alike."""

    UNWRAPPED = 1 << 20  # columns: wider than any line lectern prints

    @property
    def size(self) -> ConsoleDimensions:
        measured = super().size
        return measured if self.is_terminal else ConsoleDimensions(self.UNWRAPPED, measured.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = PlainOffTerminal()
err = PlainOffTerminal(stderr=True)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _visible(char: str) -> str:
    code = ord(char)
    return f"\\x{code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code:02x}"  # a surrogate: the raw byte


def shown(text: object) -> str:
    """User text (a path, title, heading, passage, message) as Rich prints it: what looks like markup
    (`[/quote]`) as it is, and control characters (an ANSI escape in a file name) and the undecodable
    bytes of a file name escaped (`\\x1b`). Every print of user text goes through here."""
    return escape(_CONTROL.sub(lambda m: _visible(m.group()), str(text)))


def _printable(data: Any) -> Any:
    """JSON data with what a file name holds that is not UTF-8 spelled out (\\xe9), as shown() does:
    stdout cannot take it raw."""
    if isinstance(data, str):
        return _SURROGATE.sub(lambda m: _visible(m.group()), data)
    if isinstance(data, dict):
        return {key: _printable(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_printable(value) for value in data]
    return data


def print_json(text: str) -> None:
    """Every --json output: the JSON text `text`, printable whatever names it holds."""
    out.print_json(json.dumps(_printable(json.loads(text))))


class NotesToStderr(logging.Handler):
    """lectern's own log lines (a writer waiting for the lock, say) as notes on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[dim]note:[/dim] {shown(record.getMessage())}", highlight=False)
