"""The rules the CLI once held itself, now the library's (rag.workspace): summarizing a file the
collection does not hold yet ingests it first, `migrate` resolves its locations and refuses an
unnamed or missing source before copying anything, an ingest's own --include/--exclude globs leave
the settings as they were, and deleting from a missing collection is CollectionNotFound."""

from __future__ import annotations

from pathlib import Path

import pytest

from lectern.errors import CollectionNotFound, DocumentError, InvalidInput, InvalidName, LecternError
from lectern.rag.settings import Settings
from lectern.rag.workspace import Workspace, migrate_collection


def test_a_file_not_yet_ingested_is_ingested_once(fake_ws: Workspace, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Herons\n\nThe grey herons nest in the old beeches.\n")
    assert not fake_ws.exists
    key = fake_ws.ensure_ingested(note)
    assert fake_ws.exists and [d.source for d in fake_ws.documents()] == [key]
    note.write_text("Herons\n\nChanged: a changed file is the collection's as ingested.\n")
    assert fake_ws.ensure_ingested(note) == key  # held already: not ingested again
    assert "beeches" in fake_ws.collection().chunks_of(key)[0].text
    docs, scope = fake_ws.scope_documents(source=note)
    assert scope == f"document {note}" and len(docs) == 1


def test_a_file_that_cannot_be_ingested_is_a_document_error(fake_ws: Workspace, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not a pdf at all")
    with pytest.raises(DocumentError, match=r"broken\.pdf"):
        fake_ws.ensure_ingested(broken)


def test_migrate_resolves_names_and_copies(fake_ws: Workspace, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Alpha\n\nSome text about alpha.\n")
    assert fake_ws.ingest([tmp_path / "a.txt"]).ok
    report = migrate_collection("faiss:test", "faiss:copy", settings)
    assert (report.documents, report.chunks) == (1, 1)
    copy = Workspace(collection="copy", settings=settings)
    assert [d.source for d in copy.documents()] == [d.source for d in fake_ws.documents()]
    copy.close()
    again = migrate_collection("faiss:test", "faiss:copy", settings)
    assert again.documents == 0 and len(again.unchanged) == 1  # a stopped migration finishes on a rerun


def test_migrate_refuses_before_copying(settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="name the collection"):
        migrate_collection("faiss:", "faiss:copy", settings)
    with pytest.raises(CollectionNotFound, match="nothing"):
        migrate_collection("faiss:nothing", "faiss:copy", settings)
    with pytest.raises(InvalidName):
        migrate_collection("faiss:../up", "faiss:copy", settings)
    with pytest.raises(LecternError, match="store location"):
        migrate_collection("sqlite:x", "faiss:copy", settings)


def test_an_ingests_own_globs_apply_to_it_alone(fake_ws: Workspace, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.md", "b.md", "c.txt"):
        (docs / name).write_text(f"{name}\n\nSome text of {name}.\n")
    before = fake_ws.settings.model_dump()
    report = fake_ws.ingest([docs], include=["*.md"], exclude=["b.*"])
    assert sorted(Path(r.path).name for r in report.results if r.status == "added") == ["a.md"]
    assert fake_ws.settings.model_dump() == before  # the settings are not changed by the call
    again = fake_ws.ingest([docs])  # the settings' own globs: every file, a.md unchanged
    assert sorted(Path(r.path).name for r in again.results if r.status == "added") == ["b.md", "c.txt"]


def test_deleting_from_a_missing_collection_names_the_ones_there_are(fake_ws: Workspace) -> None:
    assert not fake_ws.exists
    with pytest.raises(CollectionNotFound):
        fake_ws.delete(["x.txt"])
    assert not fake_ws.exists
