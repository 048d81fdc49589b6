"""Tests of `lectern migrate` and the store locations it reads, with the fake embedder."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lectern.cli import app
from lectern.errors import UnknownKey
from lectern.ingest.faiss_store import FaissBackend
from lectern.ingest.settings import StoreSettings
from lectern.ingest.store_backends import parse_location

pytest.importorskip("pymilvus")


@pytest.mark.parametrize(
    ("spec", "uri", "name"),
    [
        ("milvus:", "DATA/milvus.db", None),
        ("milvus:/db/milvus.db", "/db/milvus.db", None),
        ("milvus:/db/milvus.db/docs", "/db/milvus.db", "docs"),
        ("milvus:http://localhost:19530", "http://localhost:19530", None),
        ("milvus:http://localhost:19530/docs", "http://localhost:19530", "docs"),
    ],
)
def test_milvus_locations(spec: str, uri: str, name: str | None, tmp_path: Path) -> None:
    backend, parsed = parse_location(spec, StoreSettings(), tmp_path)
    assert getattr(backend, "uri", None) == uri.replace("DATA", str(tmp_path)) and parsed == name


def test_faiss_locations_and_unknown_kinds(tmp_path: Path) -> None:
    assert parse_location("faiss:docs", StoreSettings(), tmp_path) == (
        FaissBackend(tmp_path / "collections"),
        "docs",
    )
    with pytest.raises(
        UnknownKey, match=re.escape("store location 'chroma:x'; known: faiss:..., milvus:...")
    ):
        parse_location("chroma:x", StoreSettings(), tmp_path)


@pytest.fixture
def runner(runner: CliRunner, data_dir: Path) -> Iterator[CliRunner]:
    """The shared runner (tests/conftest.py); this process's milvus-lite client closed after."""
    from lectern.ingest.milvus_store import close_client

    yield runner
    close_client(str(data_dir / "milvus.db"))


def ingest(runner: CliRunner, folder: Path, *args: str) -> None:
    result = runner.invoke(app, ["ingest", str(folder), "-c", "docs", *args])
    assert result.exit_code == 0, result.output


def test_migrate_there_and_back(runner: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"d{i}.txt").write_text(f"Document {i}\n\nThe lighthouse keeper {i} logged the storm.\n")
    ingest(runner, folder)
    there = runner.invoke(app, ["migrate", "--from", "faiss:docs", "--to", "milvus:"])
    assert there.exit_code == 0, there.output
    assert "migrated 3 documents (3 chunks)" in there.output and "milvus.db/docs" in there.output
    back = runner.invoke(
        app, ["migrate", "--from", f"milvus:{data_dir / 'milvus.db'}/docs", "--to", "faiss:back"]
    )
    assert back.exit_code == 0, back.output
    listed = runner.invoke(app, ["list", "-c", "back", "--json"])
    assert listed.exit_code == 0 and listed.output.count('"source"') == 3

    from lectern.rag.settings import load_settings
    from lectern.rag.workspace import Workspace

    settings = load_settings()
    original, returned = Workspace("docs", settings), Workspace("back", settings)
    hits: list[Any] = [
        ws.search("lighthouse keeper 2 storm", k=3, mode="bm25") for ws in (original, returned)
    ]
    assert [h.chunk.chunk_id for h in hits[0]] == [h.chunk.chunk_id for h in hits[1]]
    original.close()
    returned.close()


def test_migrate_refusals(runner: CliRunner, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["migrate", "--from", "faiss:nothing", "--to", "milvus:"])
    assert missing.exit_code == 2 and "nothing" in missing.output
    unnamed = runner.invoke(app, ["migrate", "--from", "faiss:", "--to", "milvus:"])
    assert unnamed.exit_code == 2 and "invalid --from" in unnamed.output
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha\n\nSome text about alpha.\n")
    ingest(runner, folder)
    itself = runner.invoke(app, ["migrate", "--from", "faiss:docs", "--to", "faiss:docs"])
    assert itself.exit_code == 2 and "onto itself" in itself.output
