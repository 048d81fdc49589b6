"""One loopback rule (lectern.exposure) for `lectern ui`, `lectern serve` and the remote-model warning:
the same host is loopback or not for all three, and beyond it both servers refuse with one message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.exposure import is_loopback
from tests.fixtures.ui_server import free_port

LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "localhost.", "LocalHost",
            "api.localhost", " 127.0.0.1 "]  # fmt: skip
BEYOND = ["0.0.0.0", "::", "[::]", "192.168.1.10", "example.org", "localhost.example.org", "notlocalhost",
          "::ffff:10.0.0.1"]  # fmt: skip


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", BEYOND)
def test_hosts_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> list[tuple[str, str]]:
    """What `ui` and `serve` would have started, and on which host; nothing starts."""
    import lectern.cli
    import lectern.serve

    calls: list[tuple[str, str]] = []
    monkeypatch.delenv("LECTERN_UI_PASSWORD", raising=False)
    monkeypatch.delenv("LECTERN_SERVE_API_KEY", raising=False)
    monkeypatch.setenv("LECTERN_DATA_DIR", str(data_dir))
    monkeypatch.setattr(
        lectern.cli.ui,
        "replace_process",
        lambda cmd, env: calls.append(("ui", cmd[cmd.index("--server.address") + 1])),
    )
    monkeypatch.setattr(lectern.serve, "run", lambda settings, **kw: calls.append(("serve", kw["host"])))
    return calls


def _both(host: str) -> list[Any]:
    runner, port = CliRunner(), str(free_port())
    return [
        runner.invoke(app, ["ui", "--host", host, "--port", port]),
        runner.invoke(app, ["serve", "--host", host, "--port", port, "--backend", "fake"]),
    ]


@pytest.mark.parametrize("host", ["[::1]", "::1", "localhost", "127.0.0.2"])
def test_ui_and_serve_agree_a_loopback_host_needs_no_secret(
    started: list[tuple[str, str]], host: str
) -> None:
    ui, serve = _both(host)
    assert ui.exit_code == 0 and serve.exit_code == 0, (ui.output, serve.output)
    assert [name for name, _ in started] == ["ui", "serve"]
    assert started[0][1] == host.strip("[]")  # Streamlit takes the address without brackets


@pytest.mark.parametrize("host", ["[::]", "0.0.0.0", "example.org"])
def test_ui_and_serve_agree_beyond_loopback_and_say_it_alike(
    started: list[tuple[str, str]], host: str
) -> None:
    ui, serve = _both(host)
    assert ui.exit_code == 2 and serve.exit_code == 2 and started == []
    for result, how in ((ui, "--no-password"), (serve, "--insecure-no-api-key")):
        text = " ".join(result.output.split())
        assert f"--host {host} exposes" in text and f"or pass {how} to accept the risk" in text, text


def test_an_empty_api_key_is_refused_before_anything_starts(started: list[tuple[str, str]]) -> None:
    runner = CliRunner()
    for args in (["--api-key", ""], ["--api-key", "  "], ["--api-key", "good", "--api-key", ""]):
        result = runner.invoke(app, ["serve", "--host", "0.0.0.0", *args, "--backend", "fake"])
        assert result.exit_code == 2 and "--api-key" in result.output and "empty" in result.output, (
            result.output
        )
    # an empty LECTERN_SERVE_API_KEY is no key at all (click ignores it): beyond loopback, refused
    result = runner.invoke(
        app, ["serve", "--host", "0.0.0.0", "--backend", "fake"], env={"LECTERN_SERVE_API_KEY": ""}
    )
    assert result.exit_code == 2 and "exposes" in result.output, result.output
    assert started == []


def test_the_remote_model_warning_uses_the_same_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lectern.rag.settings import load_settings, remote_llm_notice

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LECTERN_LLM__BASE_URL", raising=False)
    for host, warned in (("[::1]", False), ("api.localhost", False), ("10.1.2.3", True)):
        (tmp_path / "lectern.toml").write_text(
            f'[llm]\nbackend = "openai"\nbase_url = "http://{host}:8000/v1"\nmodel = "m"\n'
        )
        notice = remote_llm_notice(load_settings(data_dir=tmp_path / "data"))
        assert (notice is not None) == warned, host
