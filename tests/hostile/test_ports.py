"""A port out of range or in use is one clear line and exit 2 before any model loads, for `serve`
and for `ui`; a free port serves as before (the socket bound first is the one uvicorn serves)."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.cli.edge import EXIT_USAGE
from tests.fixtures.ui_server import LECTERN, child_env, free_port, lectern_serve
from tests.hostile.conftest import no_traceback


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any model load (there must be none) and any exec of Streamlit."""
    calls: list[str] = []
    import lectern.cli
    import lectern.rag.workspace

    monkeypatch.setattr(lectern.rag.workspace, "shared_llm", lambda *a, **k: calls.append("model"))
    monkeypatch.setattr(lectern.cli.ui, "replace_process", lambda *a, **k: calls.append("exec"))
    return calls


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_a_port_in_use_is_refused_before_any_model(
    runner: CliRunner, taken: int, no_model: list[str], command: str
) -> None:
    result = runner.invoke(app, [command, "--port", str(taken)])
    no_traceback(result.output)
    assert result.exit_code == EXIT_USAGE and no_model == [], result.output
    assert f"port {taken} on 127.0.0.1 is in use" in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["serve", "ui"])
@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_a_port_out_of_range_is_refused(
    runner: CliRunner, no_model: list[str], command: str, port: str
) -> None:
    result = runner.invoke(app, [command, "--port", port])
    no_traceback(result.output)
    assert result.exit_code == EXIT_USAGE and no_model == [], result.output
    assert "Invalid value for '--port'" in result.output


def test_ui_on_a_free_port_goes_on_to_streamlit(runner: CliRunner, no_model: list[str]) -> None:
    result = runner.invoke(app, ["ui", "--port", str(free_port())])
    assert result.exit_code == 0 and no_model == ["exec"], result.output


def test_real_serve_on_a_free_port_and_on_a_taken_one(tmp_path: Path, taken: int) -> None:
    """A real `lectern serve` (fake model): it serves on the socket it bound first; a second one on a
    port in use exits 2 with the line, no uvicorn traceback."""
    env = child_env() | {"LECTERN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": os.getcwd()}
    log = tmp_path / "serve.log"
    with (
        lectern_serve(["--backend", "fake"], env, log, timeout_s=120) as url,
        urllib.request.urlopen(f"{url}/health", timeout=5) as r,
    ):
        assert r.status == 200
    busy = subprocess.run(
        [str(LECTERN), "serve", "--backend", "fake", "--port", str(taken)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert busy.returncode == EXIT_USAGE, busy.stderr
    assert "Traceback" not in busy.stderr and f"port {taken} on 127.0.0.1 is in use" in busy.stderr
