"""`lectern ask` as a user runs it, in a new process, with the packaged Qwen 0.5B on the default
backend (auto): llama.cpp runs the packaged GGUF in place, says so, and answers with a citation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_DOCS, SESSION_CACHE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not __import__("importlib").util.find_spec("llama_cpp"), reason="llama-cpp-python not installed"
    ),
]
ROOT = Path(__file__).resolve().parents[2]


def _lectern(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lectern.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ask_with_the_packaged_model_on_llamacpp(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env |= {
        "LECTERN_DATA_DIR": str(tmp_path / "data"),
        "LECTERN_CACHE_DIR": str(SESSION_CACHE),  # the session's: the 0.5B's parts are joined once
        "LECTERN_INGEST__EMBED__MODEL": "fake",
        "LECTERN_INGEST__PARSE_WORKERS": "0",
        "LECTERN_LLM__DEVICE": "cpu",
    }
    docs = ["ingest", str(SAMPLE_DOCS), "-c", "sample", "--exclude", "README.md", "--exclude", "make_pdf.py"]
    assert _lectern(docs, env).returncode == 0
    question = "Who designed the tower of the Marrow Point Light?"
    run = _lectern(["ask", question, "-c", "sample", "--model", "packaged:qwen2.5-0.5b"], env)
    assert run.returncode == 0, run.stderr
    assert "backend: llamacpp (auto: a GGUF model on a CPU)" in run.stderr
    assert "Varley" in run.stdout and "Sources" in run.stdout, run.stdout
    converted = [p.name for p in (SESSION_CACHE / "models").glob("qwen2.5-0.5b-*")]
    packaged = SESSION_CACHE / "models" / "packaged" / "qwen2.5-0.5b"
    assert (packaged / "Qwen2.5-Coder-0.5B-Instruct.gguf.sha256").is_file()  # joined once, then used as is
    assert not [p for p in packaged.iterdir() if p.name.startswith(".")]  # nothing half-written beside it
    again = _lectern(
        ["ask", question, "-c", "sample", "--model", "packaged:qwen2.5-0.5b", "--backend", "llamacpp"], env
    )
    assert again.returncode == 0 and "Varley" in again.stdout
    assert [p.name for p in (SESSION_CACHE / "models").glob("qwen2.5-0.5b-*")] == converted  # no conversion
