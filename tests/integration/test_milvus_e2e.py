"""End to end on milvus-lite with the real embedder (MiniLM): ingest, search, ask (the fake LLM) and
delete on sample_docs; and `lectern migrate` from faiss to milvus, counts and top-5 results equal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE

pytest.importorskip("pymilvus")
pytestmark = pytest.mark.e2e
PDF = SAMPLE_DOCS / "marrow_point_light.pdf"
QUESTIONS = [
    "Who designed the tower of the Marrow Point Light?",
    "How is Kestrel Valley cheese aged?",
    "When was the Brennock canal opened?",
    "How do I reset the Quillmate?",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from lectern.ingest.milvus_store import close_client

    folder = tmp_path_factory.mktemp("milvus-e2e")
    yield folder
    close_client(str(folder / "milvus.db"))


def workspace(data: Path, backend: str, name: str) -> Any:
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    settings = Settings(
        data_dir=data, store={"backend": backend}, llm={"backend": "fake"}, ingest={"parse_workers": 0}
    )
    settings.ingest.exclude = [*settings.ingest.exclude, *SAMPLE_EXCLUDE]
    return Workspace(collection=name, settings=settings)


def top5(ws: Any, mode: str) -> list[list[str]]:
    return [[h.chunk.chunk_id for h in ws.search(q, k=5, mode=mode)] for q in QUESTIONS]


def test_ingest_search_ask_delete_on_milvus(data: Path) -> None:
    ws = workspace(data, "milvus", "sample")
    report = ws.ingest([SAMPLE_DOCS])
    assert report.ok and len(report.added) == 4
    assert ws.ingest([SAMPLE_DOCS]).unchanged and ws.collection().stats()["documents"] == 4
    hits = ws.search(QUESTIONS[0], k=3)
    assert Path(hits[0].chunk.source).name == PDF.name and hits[0].chunk.page == 2
    answer = ws.ask(QUESTIONS[0])
    assert answer.contexts and answer.contexts[0].page == 2
    assert Path(answer.contexts[0].source).name == PDF.name
    removed = ws.delete([PDF])
    assert removed[str(PDF)] == 5
    assert PDF.name not in {Path(h.chunk.source).name for h in ws.search(QUESTIONS[0], k=5)}
    assert [Path(d.source).name for d in ws.documents()] == sorted(
        p.name for p in SAMPLE_DOCS.iterdir() if p.name not in (*SAMPLE_EXCLUDE, PDF.name)
    )
    ws.close()


def test_migrate_faiss_to_milvus_keeps_counts_and_results(data: Path) -> None:
    faiss = workspace(data, "faiss", "tomigrate")
    assert faiss.ingest([SAMPLE_DOCS]).ok
    command = ["migrate", "--from", "faiss:tomigrate", "--to", f"milvus:{data / 'milvus.db'}/copy"]
    result = CliRunner().invoke(app, [*command, "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "migrated 4 documents" in result.output
    milvus = workspace(data, "milvus", "copy")
    assert milvus.collection().count_chunks() == faiss.collection().count_chunks()
    assert [d.source for d in milvus.documents()] == [d.source for d in faiss.documents()]
    assert milvus.collection().manifest == faiss.collection().manifest
    for mode in ("dense", "bm25"):  # hybrid is Milvus' own fusion: benchmarked, not equal by design
        assert top5(milvus, mode) == top5(faiss, mode), mode
    again = CliRunner().invoke(app, [*command, "--data-dir", str(data)])
    assert again.exit_code == 0 and "migrated 0 documents" in again.output
    assert "4 already there" in again.output
    faiss.close()
    milvus.close()
