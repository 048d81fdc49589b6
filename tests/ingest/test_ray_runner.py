"""The ray ingest runner against the local one, on one Ray started for this module (local mode):
the same chunks (ids, texts, row ids, vectors close), the same searches, bad files reported alike,
and nothing written lost when the Ray run stops."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lectern.errors import RunnerUnavailable, UnknownKey
from lectern.ingest.faiss_store import Collection
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.pipeline import ingest
from lectern.ingest.report import IngestReport
from lectern.ingest.settings import IngestSettings
from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE
from tests.fixtures.bad_inputs import text_pdf


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One Ray for the module (its start is most of these tests' time); the runner uses it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def settings(runner: str, **more: Any) -> IngestSettings:
    return IngestSettings(runner=runner, parse_workers=0, lock_timeout_s=2.0, exclude=SAMPLE_EXCLUDE, **more)


def rows(col_path: Path) -> list[tuple[Any, ...]]:
    col = Collection.open(col_path)
    try:
        return col.db.execute(
            'SELECT id, chunk_id, source, page, heading, start, "end", ordinal, text, context, terms '
            "FROM chunks ORDER BY id"
        ).fetchall()
    finally:
        col.close()


def outcome(report: IngestReport) -> dict[str, tuple[str, int, str | None]]:
    return {Path(r.path).name: (r.status, r.chunks, r.reason) for r in report.results}


def with_bad_files(tmp_path: Path) -> Path:
    """sample_docs plus a truncated PDF and a file in no text encoding."""
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, docs)
    (docs / "truncated.pdf").write_bytes(text_pdf()[:300])
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 16)
    return docs


def test_an_unknown_runner_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownKey, match="local, ray"):
        ingest([SAMPLE_DOCS], tmp_path / "col", FakeEmbedder(), settings("spark"))


def test_without_ray_installed_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    with pytest.raises(RunnerUnavailable, match=r"lectern\[ray\]"):
        ingest([SAMPLE_DOCS], tmp_path / "col", FakeEmbedder(), settings("ray"))


@pytest.mark.ray
def test_reingest_update_and_the_cli_on_ray(
    ray_local: None, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unchanged files skipped, a changed one replaced: the collection equals the local runner's."""
    from typer.testing import CliRunner

    from lectern.cli import app

    docs = with_bad_files(tmp_path)
    local = ingest([docs], tmp_path / "local", FakeEmbedder(), settings("local"))
    monkeypatch.setenv("LECTERN_INGEST__EMBED__MODEL", "fake")
    args = ["ingest", str(docs), "-c", "onray", "--runner", "ray", "--json"]
    args += [f"--exclude={name}" for name in SAMPLE_EXCLUDE]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output  # the two bad files: reported, exit 1
    col_path = data_dir / "collections" / "onray"
    assert rows(col_path) == rows(tmp_path / "local")

    canal = docs / "brennock_canal.txt"
    canal.write_text(canal.read_text() + "\nThe towpath was resurfaced in gravel.\n")
    again_local = ingest([docs], tmp_path / "local", FakeEmbedder(), settings("local"))
    again = ingest([docs], col_path, FakeEmbedder(), settings("ray"))
    assert outcome(again) == outcome(again_local)
    assert outcome(again)["brennock_canal.txt"][0] == "updated"
    assert outcome(again)["quillmate_guide.md"][0] == "unchanged"
    assert rows(col_path) == rows(tmp_path / "local")
    assert len(local.failed) == 2


class FailsOn(FakeEmbedder):
    """The fake embedder, failing on any text with this word: the Ray run stops mid-way."""

    def __init__(self, word: str) -> None:
        super().__init__()
        self.word = word

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if any(self.word in t for t in texts):
            raise RuntimeError(f"embedder down at {self.word!r}")
        return super().embed(texts)


@pytest.mark.ray
def test_a_stopped_run_loses_nothing_written(ray_local: None, tmp_path: Path) -> None:
    """Each file is written or reported failed with the cause; what was written stays, consistent,
    and the next run adds only the rest."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"note{i}.txt").write_text(f"Note {i}\n\nThe heron number {i} nests by weir {i}.\n")
    (docs / "note3.txt").write_text("Note 3\n\nThe kingfisher poison word sits here.\n")
    cfg = settings("ray", ray={"embed_batch": 1})
    report = ingest([docs], tmp_path / "col", FailsOn("kingfisher"), cfg)
    status = outcome(report)
    assert status["note3.txt"][0] == "failed"
    assert "the Ray run stopped" in (status["note3.txt"][2] or "")
    assert "embedder down" in (status["note3.txt"][2] or "")
    added = {name for name, (s, _, _) in status.items() if s == "added"}
    assert set(status) == {f"note{i}.txt" for i in range(6)}
    col = Collection.open(tmp_path / "col")
    try:
        assert {Path(d.source).name for d in col.documents()} == added
        assert col.snapshot().size == col.count_chunks() == len(added)
    finally:
        col.close()
    again = ingest([docs], tmp_path / "col", FakeEmbedder(), cfg)
    assert {n for n, (s, _, _) in outcome(again).items() if s == "unchanged"} == added
    assert {n for n, (s, _, _) in outcome(again).items() if s == "added"} == set(status) - added
