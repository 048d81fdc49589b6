"""End to end over one file of each new kind (Word, PowerPoint, Excel, CSV, EPUB, an image and a
scanned PDF): ingested with the real packaged embedder through parse workers (OCR included), then asked
with SmolLM2; the passage that holds each answer is retrieved first and named by its location."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.documents import make_documents

pytestmark = pytest.mark.e2e

QUESTIONS = {
    "orchard.docx": "When should the pear trees be pruned?",
    "ferry.pptx": "What does the winter timetable add on Sundays?",
    "stores.xlsx": "How many brass hinges are in bin B9?",
    "rivers.csv": "What was the peak river level at Perth?",
    "estuary.epub": "Where did the miller keep his flour?",
    "logbook.png": "How many gannets did the lighthouse keeper log?",
    "scanned.pdf": "What did the tide gauge at Leith read?",
}
WHERE = {  # how the location of each file's passage reads in a citation
    "orchard.docx": "page 1, Orchard handbook > Pruning",
    "ferry.pptx": "slide 2: Passenger numbers",
    "stores.xlsx": "sheet Stock, rows 52-62",
    "rivers.csv": "rows 2-4",
    "estuary.epub": "chapter 2: The old mill",
    "logbook.png": "(OCR)",
    "scanned.pdf": "page 1 (OCR)",
}


@pytest.fixture(scope="module")
def formats_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    docs = tmp_path_factory.mktemp("formats-docs")
    facts = make_documents(docs)
    assert set(facts) == set(QUESTIONS)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("formats-data"),
        llm={"backend": "local", "model": "packaged:smollm2", "max_new_tokens": 48, "temperature": 0.0},
    )
    settings.ingest.parse_workers = 2  # the OCR runs in the parse workers, as on a user's machine
    ws = Workspace(collection="formats", settings=settings)
    ocr_seen: list[int] = []
    report = ws.ingest([docs], progress=lambda p: ocr_seen.append(p.ocr_pages))
    assert report.ok and len(report.added) == len(QUESTIONS), report.results
    assert report.summary()["ocr_pages"] == 2 and ocr_seen[-1] == 2
    assert any((settings.cache_dir / "ocr").rglob("*.json"))  # the OCR cache is the user's cache
    yield ws
    ws.close()


@pytest.mark.parametrize("name", sorted(QUESTIONS))
def test_each_kind_of_file_answers_with_its_location(formats_ws: Any, name: str) -> None:
    from lectern.rag.types import location

    answer = formats_ws.ask(QUESTIONS[name])
    top = answer.contexts[0]
    assert Path(top.source).name == name, [(Path(c.source).name, c.heading) for c in answer.contexts]
    assert location(top.page, top.heading) == WHERE[name]
    for citation in answer.citations:
        if Path(citation.source).name == name:
            assert citation.location == WHERE[name]
            assert citation.ocr == (name in ("logbook.png", "scanned.pdf"))
