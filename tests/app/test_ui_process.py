"""`lectern ui` as a service manager runs it: a real process, a real SIGTERM, a process listing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.conftest import ROOT
from tests.conftest import FAKE_MODELS
from tests.fixtures.processes import HAS_PROC, session_processes
from tests.fixtures.ui_server import child_env, free_port, wait_for_health

STARTUP_S = 120  # a deadline only: Streamlit starts in seconds


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to list processes")
def test_sigterm_to_lectern_ui_stops_streamlit(tmp_path: Path) -> None:
    """`lectern ui` ran Streamlit with subprocess.call: a SIGTERM to it (systemd, docker stop) ended
    lectern and left Streamlit serving. It now execs Streamlit, so the signal reaches the server."""
    port = free_port()
    env = child_env()
    env.update(
        FAKE_MODELS,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lectern.cli", "ui", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(proc, url, log_path, STARTUP_S)
            os.kill(proc.pid, signal.SIGTERM)  # to `lectern ui` alone, as a service manager does
            proc.wait(60)
            deadline = time.monotonic() + 60
            while (left := session_processes(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert left == {}, f"still running after SIGTERM to lectern ui: {left}"
            with pytest.raises(OSError):
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=5)
        finally:
            for pid in session_processes(proc.pid):
                os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
