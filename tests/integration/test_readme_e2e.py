"""The real-model tests of tests/test_readme.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.ui_server import free_port, stop_group, wait_for_health
from tests.test_readme import (
    LECTERN,
    ROOT,
    api_block,
    clean_env,
    make_recipe,
    needs_make,
    run_script,
)

SAMPLE_ADDED = {
    "brennock_canal.txt",
    "kestrel_valley_cheese.html",
    "marrow_point_light.pdf",
    "quillmate_guide.md",
}


SAMPLE_NOT_INGESTED = {"README.md", "make_pdf.py"}


HEALTH_TIMEOUT_S = 120


def fresh_data_dir(tmp_path: Path) -> Path:
    """An empty data dir; converted models come from the session's cache (LECTERN_CACHE_DIR)."""
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_python_api_block_runs_with_real_models(tmp_path: Path) -> None:
    env = clean_env(
        fresh_data_dir(tmp_path),
        LECTERN_LLM__MODEL="packaged:qwen2.5-0.5b",  # what packaged:auto picks on a 2-core CPU
        LECTERN_LLM__MAX_NEW_TOKENS="32",
    )
    result = run_script(api_block(), tmp_path, env, timeout=580)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert re.search(r"['\"]added['\"]: 1\b", lines[0]), result.stdout
    cited = [
        i for i, line in enumerate(lines) if re.match(r"\[\d\] .*marrow_point_light\.pdf p\.\d+: ", line)
    ]
    assert cited, f"no citation line:\n{result.stdout}"
    answer = " ".join(lines[4 : cited[0]])  # after the report and the three hits
    assert "Varley" in answer, f"the answer misses the designer:\n{result.stdout}"


# -- `make run`, the main command path ----------------------------------------------------------------
def lectern_lines(recipe: list[str]) -> dict[str, list[str]]:
    """The recipe lines that call lectern, by subcommand, with this venv's lectern."""
    found: dict[str, list[str]] = {}
    for line in recipe:
        argv = shlex.split(line, comments=True)
        if argv and Path(argv[0]).name == "lectern":
            found[argv[1]] = [str(LECTERN), *argv[1:]]
    return found


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def with_port(argv: list[str], port: int) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--port":
            skip = True
        elif not arg.startswith("--port="):
            out.append(arg)
    return [*out, "--port", str(port)]


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


@needs_make
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_make_run_ingests_sample_docs_and_serves_the_ui(tmp_path: Path) -> None:
    lines = lectern_lines(make_recipe("run"))
    assert set(lines) == {"ingest", "ui"}, f"make run should ingest, then open the UI: {lines}"
    env = clean_env(fresh_data_dir(tmp_path))

    ingest = subprocess.run(lines["ingest"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert ingest.returncode == 0, f"{ingest.stdout}\n{ingest.stderr}"
    collection = option(lines["ingest"], "--collection", "-c")
    listed = subprocess.run(
        [str(LECTERN), "list", "--json", *(["--collection", collection] if collection else [])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    names = {Path(doc["source"]).name for doc in json.loads(listed.stdout)}
    assert not names & SAMPLE_NOT_INGESTED, f"make run ingests {sorted(names & SAMPLE_NOT_INGESTED)}"
    assert names == SAMPLE_ADDED

    ui = option(lines["ui"], "--collection", "-c")
    assert ui == collection, "the UI should open the collection make run ingested"
    port = free_port()
    log_path = tmp_path / "ui.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            with_port(lines["ui"], port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_health(proc, url, log_path, HEALTH_TIMEOUT_S)
            assert get(url + "/") == 200
        finally:
            stop_group(proc)
