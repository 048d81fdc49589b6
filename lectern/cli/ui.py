"""`lectern ui`: the Streamlit web UI, which replaces this process."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from lectern.cli.edge import EXIT_USAGE, edge
from lectern.cli.options import CollectionOpt, DataDir
from lectern.cli.output import err, shown
from lectern.errors import InvalidInput


def replace_process(argv: list[str], env: dict[str, str]) -> NoReturn:
    """Become `argv`: a SIGTERM to `lectern ui` (a service manager, a container stop) reaches Streamlit
    itself, and no child is left serving when this process is gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def ui(
    collection: CollectionOpt = None,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to bind; beyond loopback a password (or --no-password) is required.")
    ] = "127.0.0.1",
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file", help="A file holding the password the UI asks for (or LECTERN_UI_PASSWORD)."
        ),
    ] = None,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Serve beyond loopback without a password (logged).")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Open the Streamlit web UI (it replaces this process: signals reach Streamlit itself)."""
    import importlib.util

    from lectern.exposure import WEB_UI, bare_host, check_exposure

    with edge():
        spec = importlib.util.find_spec("lectern.app")
        if spec is None or not spec.submodule_search_locations:
            err.print("[red]error:[/red] the app package is not installed")
            raise typer.Exit(EXIT_USAGE)
        main = Path(next(iter(spec.submodule_search_locations))) / "main.py"
        env = dict(os.environ)
        if password_file is not None:
            env["LECTERN_UI_PASSWORD"] = password_file.read_text(encoding="utf-8").strip()
            if not env["LECTERN_UI_PASSWORD"]:
                raise InvalidInput("--password-file", str(password_file), "the file is empty")
        if not env.get("LECTERN_UI_PASSWORD"):
            env.pop("LECTERN_UI_PASSWORD", None)
        warning = check_exposure(host, WEB_UI, bool(env.get("LECTERN_UI_PASSWORD")), no_password)
        if warning:
            err.print(f"[yellow]warning:[/yellow] {shown(warning)}", highlight=False)
        if data_dir is not None:
            env["LECTERN_DATA_DIR"] = str(data_dir)
        if collection is not None:
            env["LECTERN_COLLECTION"] = collection
        from lectern.serve import listen

        listen(host, port).close()  # in use: one line now, not Streamlit's after it started
    # toolbarMode minimal: a served app, not a developer's session (no "Deploy" button, no dev menu).
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(main), "--server.port", str(port), "--server.address", bare_host(host),
        "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
    ]  # fmt: skip
    replace_process(cmd, env)
