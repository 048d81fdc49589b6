"""Searches while `ingest --force` replaces every document: a reader sees one generation of the
collection from its search to its fetch, so a passage present before and after is never missed.
Interleavings are forced with events, and counted; nothing is timed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from lectern.ingest.faiss_store import Collection
from lectern.rag.workspace import Workspace

PASSAGES = [f"The otters of pool {i} eat crayfish at dawn and sleep at noon." for i in range(8)]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(PASSAGES):
        (folder / f"pool{i}.txt").write_text(text + "\n")
    return folder


def test_a_search_paused_before_its_fetch_still_finds_replaced_rows(
    settings: Any, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader takes its ids from generation G; a writer replaces every row (new ids) and
    commits; then the reader fetches: it used to find nothing of what G named."""
    Workspace(collection="c", settings=settings).ingest([docs])
    reader = Workspace(collection="c", settings=settings)
    searched, written = threading.Event(), threading.Event()
    fetch = Collection.fetch

    def paused(self: Collection, ids: Any) -> Any:
        searched.set()
        assert written.wait(60), "the writer never finished"
        return fetch(self, ids)

    monkeypatch.setattr(Collection, "fetch", paused)
    found: list[Any] = []
    thread = threading.Thread(
        target=lambda: found.extend(reader.search("otters crayfish", k=8, mode="dense"))
    )
    thread.start()
    assert searched.wait(60)
    monkeypatch.setattr(Collection, "fetch", fetch)  # the writer's own reads go straight through
    report = Workspace(collection="c", settings=settings).ingest([docs], force=True)
    assert len(report.updated) == len(PASSAGES)
    written.set()
    thread.join(60)
    assert sorted(Path(h.chunk.source).name for h in found) == [f"pool{i}.txt" for i in range(len(PASSAGES))]
    reader.close()


def test_readers_looping_through_forced_reingests_miss_nothing(settings: Any, docs: Path) -> None:
    """Reader threads search in a loop while the writer forces three re-ingests; the writer waits for
    each reader to finish a search between its writes, so the loops overlap every time."""
    Workspace(collection="c", settings=settings).ingest([docs])
    readers, rounds = 3, 3
    stop = threading.Event()
    searches = [0] * readers
    misses: list[int] = []
    progressed = threading.Semaphore(0)

    def read(n: int) -> None:
        ws = Workspace(collection="c", settings=settings)
        while not stop.is_set():
            hits = ws.search("otters crayfish", k=8, mode="hybrid")
            misses.append(len(PASSAGES) - len({h.chunk.source for h in hits}))
            searches[n] += 1
            progressed.release()
        ws.close()

    threads = [threading.Thread(target=read, args=(n,)) for n in range(readers)]
    for t in threads:
        t.start()
    for _ in range(rounds):
        for _ in range(readers):
            progressed.acquire()
        Workspace(collection="c", settings=settings).ingest([docs], force=True)
    for _ in range(readers):
        progressed.acquire()
    stop.set()
    for t in threads:
        t.join(60)
    assert min(searches) >= 2 and sum(misses) == 0, (searches, misses)
