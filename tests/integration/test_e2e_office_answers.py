"""End to end over Office files whose answers sit where a plain text reader loses them: a Word table, a
slide's speaker notes, the second block of a later sheet under notes its author wrote above the table,
and a table in a file PowerPoint saved (tests/fixtures/realworld). Ingested with the real packaged
embedder and asked with SmolLM2: the passage that holds each answer comes first, named by its location."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.documents import build_deaths_xlsx, build_docx, build_pptx

pytestmark = pytest.mark.e2e

REALWORLD = Path(__file__).resolve().parents[1] / "fixtures" / "realworld"
CASES = {  # question: (file, the location its passage is cited at, words the passage holds)
    "In which month is the Bramley variety picked?": (
        "orchard.docx", "page 2, Orchard handbook > Harvest", "| Bramley | October |"
    ),
    "What does the winter timetable add on Sundays?": (
        "ferry.pptx", "slide 2: Passenger numbers", "Notes: The winter timetable adds a Sunday sailing"
    ),
    "How old was the astronaut John Glenn when he died?": (
        "deaths.xlsx", "sheet other, rows ", "| John Glenn | astronaut | 95 |"
    ),
    "Which table cell holds the unladen swallows?": ("tbl-cell.pptx", "slide 1", "unladen swallows"),
}  # fmt: skip


@pytest.fixture(scope="module")
def office_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    docs = tmp_path_factory.mktemp("office-docs")
    build_docx(docs / "orchard.docx")
    build_pptx(docs / "ferry.pptx")
    build_deaths_xlsx(docs / "deaths.xlsx")
    for name in ("tbl-cell.pptx", "par-rendered-page-breaks.docx"):
        shutil.copy(REALWORLD / name, docs / name)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("office-data"),
        llm={"backend": "local", "model": "packaged:smollm2", "max_new_tokens": 32, "temperature": 0.0},
    )
    ws = Workspace(collection="office", settings=settings)
    report = ws.ingest([docs])
    assert report.ok and len(report.added) == 5, report.results
    yield ws
    ws.close()


@pytest.mark.parametrize("question", sorted(CASES))
def test_an_answer_in_a_table_notes_or_a_later_sheet_is_found_and_cited(
    office_ws: Any, question: str
) -> None:
    from lectern.rag.types import location

    name, where, words = CASES[question]
    answer = office_ws.ask(question)
    top = answer.contexts[0]
    assert Path(top.source).name == name, [(Path(c.source).name, c.heading) for c in answer.contexts]
    assert location(top.page, top.heading).startswith(where)
    assert words in top.text
    # a citation of this file names the location of one of its passages the answer was given
    given = {location(c.page, c.heading) for c in answer.contexts if Path(c.source).name == name}
    assert all(c.location in given for c in answer.citations if Path(c.source).name == name)
