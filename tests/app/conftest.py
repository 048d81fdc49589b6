"""Fixtures for the web UI tests: a temporary data dir with the fake LLM and fake embedder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lectern.app.jobs import Jobs
from tests.conftest import FAKE_MODELS

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "app" / "main.py"
SAMPLE_DOCS = ROOT / "sample_docs"


@pytest.fixture(autouse=True)
def jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jobs]:
    """A registry of the server's jobs (app.jobs) for this test alone; its jobs end before the next."""
    from lectern.app import jobs as module

    fresh = module.Jobs()
    monkeypatch.setattr(module, "JOBS", fresh)
    yield fresh
    for job in fresh.running():
        job.stop()
        job.wait(120)


def settle(at: AppTest) -> AppTest:
    """Wait for the jobs the page started (an ingest, a summary, an answer), then run it again to
    show what they made: what a person sees once the progress bar is gone."""
    from lectern.app import jobs

    for job in jobs.JOBS.running():
        assert job.wait(120), f"{job.label} did not end"
    return at.run()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LECTERN_* pointing at a temporary data dir with the fakes; inline parsing keeps tests quick."""
    data = tmp_path / "data"
    monkeypatch.setenv("LECTERN_DATA_DIR", str(data))
    monkeypatch.setenv("LECTERN_COLLECTION", "default")
    for key, value in FAKE_MODELS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray ./lectern.toml
    return data


@pytest.fixture
def open_app(data_dir: Path) -> Callable[..., AppTest]:
    """An AppTest of app/main.py on the given page ("library", "ask", ...), already run once."""

    def make(page: str = "library", **query: str) -> AppTest:
        at = AppTest.from_file(str(MAIN), default_timeout=120)
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        if page != "library":
            at.switch_page(f"views/{page}.py")
            at.run()
        assert not at.exception, at.exception
        return at

    return make


@pytest.fixture
def ingested(data_dir: Path) -> Path:
    """The sample documents ingested into the `default` collection through the Python API."""
    from lectern.rag.workspace import Workspace

    ws = Workspace()
    report = ws.ingest([SAMPLE_DOCS])
    ws.close()
    assert report.added
    return data_dir
