"""The CLI's edge: flags become settings, library errors one clear line and an exit code, and a bug one
line and the path of a file with the full trace.

Exit codes: 0 done; 1 some files failed and were reported (`ingest`; `delete` of unknown sources);
2 usage or configuration error, or input lectern cannot use; 3 internal error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from lectern.cli.output import err, shown
from lectern.errors import LecternError, report_bug

if TYPE_CHECKING:
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def settings_from_flags(data_dir: Path | None = None, **nested: Any) -> Settings:
    """CLI flags on top of every other settings source; says on stderr which settings files were read."""
    from lectern.rag.settings import load_settings, settings_files

    base = load_settings(data_dir=data_dir)
    files = settings_files(base)
    if files:
        err.print(f"[dim]settings read from: {shown(', '.join(map(str, files)))}[/dim]", highlight=False)
    if not nested:
        return base
    merged = base.model_dump()
    for section, values in nested.items():
        current = merged
        parts = section.split(".")
        for part in parts:
            current = current.setdefault(part, {})
        current.update({k: v for k, v in values.items() if v is not None})
    return type(base).model_validate(merged)


def warn_remote(settings: Settings) -> None:
    """Passages are about to leave this machine for an address the user did not give here: say so."""
    from lectern.rag.settings import remote_llm_notice

    notice = remote_llm_notice(settings)
    if notice:
        err.print(f"[yellow]warning:[/yellow] {shown(notice)}", highlight=False)


def workspace(collection: str | None, settings: Settings) -> Workspace:
    from lectern.rag.workspace import Workspace

    return Workspace(collection=collection, settings=settings)


def internal_error(exc: BaseException) -> NoReturn:
    """A bug, not the user's doing: one line, the full trace in a file, exit 3."""
    line = report_bug(exc, f"lectern {' '.join(sys.argv[1:])}")
    err.print(f"[red]internal error:[/red] {shown(line)}", highlight=False)
    raise typer.Exit(EXIT_INTERNAL) from None


@contextmanager
def edge() -> Iterator[None]:
    """Library errors carry facts; here they become one clear line and exit code 2. Anything else is
    a bug: one line and the path of the full trace, exit 3. No traceback reaches the terminal."""
    from pydantic import ValidationError

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except LecternError as e:
        err.print(f"[red]error:[/red] {shown(str(e))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except ValidationError as e:  # a flag, LECTERN_* variable or settings.toml value out of range
        for problem in e.errors():
            field = ".".join(str(part) for part in problem["loc"])
            err.print(
                f"[red]error:[/red] invalid setting {shown(field)} = {shown(repr(problem.get('input')))}: "
                f"{shown(problem['msg'])}",
                highlight=False,
            )
        raise typer.Exit(EXIT_USAGE) from None
    except OSError as e:  # a path the user gave (or the data dir) that cannot be used
        where = f": {e.filename}" if e.filename else ""
        err.print(f"[red]error:[/red] {shown((e.strerror or str(e)) + where)}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as e:
        internal_error(e)


def llm_flags(
    backend: str | None, model: str | None, adapter: str | None = None, **more: Any
) -> dict[str, Any]:
    return {"backend": backend, "model": model, "adapter": adapter, **more}
