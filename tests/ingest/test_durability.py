"""Durability: a writer killed mid-ingest, stale or corrupt snapshot files, and the writers' lock."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from filelock import FileLock

from lectern.errors import IndexLocked
from lectern.ingest import faiss_store
from lectern.ingest.faiss_store import Collection, Writer
from lectern.ingest.fake_embed import FakeEmbedder
from lectern.ingest.pipeline import ingest
from lectern.ingest.settings import IngestSettings
from lectern.ingest.sources import source_key
from lectern.rag.retrieval import Searcher
from lectern.rag.settings import RetrievalSettings
from tests.conftest import FAKE_MODELS
from tests.fixtures.processes import HAS_PROC, session_processes

N_FILES = 60
ROOT = Path(__file__).resolve().parents[2]
CFG = IngestSettings(parse_workers=0, lock_timeout_s=5.0, chunk={"chunk_tokens": 16, "overlap_tokens": 4})

KILLABLE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lectern.ingest.fake_embed import FakeEmbedder
    from lectern.ingest.pipeline import ingest
    from lectern.ingest.settings import IngestSettings

    done, embedded = int(sys.argv[3]), sys.argv[4] == "embedded"
    current = f"doc{done if embedded else done - 1:03d}.txt"  # the one just embedded, or just written

    def stop_here(progress):
        # Tell the parent where the ingest stands, then wait there for its SIGKILL.
        if progress.files_done == done and str(progress.current).endswith(current):
            print("ready", flush=True)
            sys.stdin.readline()

    cfg = IngestSettings(parse_workers=0, chunk={"chunk_tokens": 16, "overlap_tokens": 4})
    ingest([Path(sys.argv[1])], Path(sys.argv[2]), FakeEmbedder(), cfg, progress=stop_here)
    print("finished", flush=True)
    """
)


KILLABLE_IN_SNAPSHOT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from lectern.ingest.fake_embed import FakeEmbedder
    from lectern.ingest.pipeline import ingest
    from lectern.ingest.settings import IngestSettings

    real_replace = os.replace

    def pausing_replace(src, dst, *args, **kwargs):
        # The snapshot file is written under its temporary name and not yet renamed: stop here.
        if os.path.basename(os.fspath(dst)).startswith(sys.argv[3]):
            print("ready", flush=True)
            sys.stdin.readline()
        return real_replace(src, dst, *args, **kwargs)

    os.replace = pausing_replace  # ingest.atomic renames with os.replace
    cfg = IngestSettings(parse_workers=0, chunk={"chunk_tokens": 16, "overlap_tokens": 4})
    ingest([Path(sys.argv[1])], Path(sys.argv[2]), FakeEmbedder(), cfg)
    print("finished", flush=True)
    """
)


def kill_when_ready(args: list[str]) -> None:
    """Run a killable script, wait until it says where it stopped, SIGKILL it there."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().decode().strip()
        assert line == "ready", proc.stderr.read().decode()  # it stopped where asked, not finished
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def write_files(folder: Path, n: int = N_FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(f"token{i}x{j}" for j in range(50))
        (folder / f"doc{i:03d}.txt").write_text(f"Document {i}\n\nmarker{i} {body}. Shared closing words.\n")
    return folder


def documents_count(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def check_consistent(col_path: Path) -> Collection:
    """Every document present has all its chunks; the snapshot matches SQLite; search works."""
    col = Collection.open(col_path)
    docs = col.documents()
    for d in docs:
        assert d.chunks == len(col.chunks_of(d.source)) > 0, d.source
    ids = col.db.execute("SELECT chunk_id FROM chunks").fetchall()
    assert len(ids) == len(set(ids)) == sum(d.chunks for d in docs)
    assert col.snapshot().size == col.count_chunks()
    if docs:
        first = docs[0].source
        marker = Path(first).stem.replace("doc", "").lstrip("0") or "0"
        hits = Searcher(col, FakeEmbedder(), RetrievalSettings()).search(f"marker{marker}", k=3, mode="bm25")
        assert hits and hits[0].chunk.source == first
    return col


@pytest.mark.parametrize(
    ("done", "where"),
    [(3, "committed"), (5, "embedded")],
    ids=["between-documents", "embedded-not-written"],
)
def test_sigkill_mid_ingest_leaves_a_consistent_collection(tmp_path: Path, done: int, where: str) -> None:
    """The child says where it stands and waits there: the kill lands at a known point, no sleeps.
    "committed": after `done` documents were written; "embedded": the next one is embedded, not written."""
    docs = write_files(tmp_path / "docs")
    col_path = tmp_path / "col"
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(docs), str(col_path), str(done), where],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().decode().strip()
        assert line == "ready", proc.stderr.read().decode()  # it stopped where asked, not finished
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert documents_count(col_path / "chunks.sqlite") == done  # the kill landed mid-ingest

    col = check_consistent(col_path)
    col.close()

    report = ingest([docs], col_path, FakeEmbedder(), CFG)  # the lock of the dead writer is free
    assert report.ok
    assert (
        len(report.unchanged) >= 3
        and len(report.unchanged) + len(report.added) + len(report.updated) == N_FILES
    )
    col = check_consistent(col_path)
    try:
        assert len(col.documents()) == N_FILES
        state = json.loads((col_path / "state.json").read_text())
        assert state["generation"] == col.generation()
    finally:
        col.close()


@pytest.fixture
def built(tmp_path: Path) -> Path:
    ingest([write_files(tmp_path / "docs", 12)], tmp_path / "col", FakeEmbedder(), CFG)
    return tmp_path / "col"


def marker_source(col_path: Path, i: int, mode: str = "bm25") -> str | None:
    """The source of the best hit for a word only document i has (the fake embedder is too coarse for
    single-word dense queries, so dense results are checked against brute force in `check_dense`)."""
    col = Collection.open(col_path)
    try:
        hits = Searcher(col, FakeEmbedder(), RetrievalSettings()).search(f"marker{i}", k=1, mode=mode)
        return Path(hits[0].chunk.source).name if hits else None
    finally:
        col.close()


def check_dense(col_path: Path, query: str = "token3x7 token3x8 token3x9 Document 3", k: int = 5) -> None:
    """The snapshot's dense top-k equals brute force over the vectors stored in SQLite, scores too."""
    col = Collection.open(col_path)
    try:
        rows = col.db.execute("SELECT id, vector FROM chunks").fetchall()
        q = FakeEmbedder().embed_query(query)
        truth = sorted(((float(np.frombuffer(v, dtype=np.float32) @ q), i) for i, v in rows), reverse=True)
        got = col.snapshot().dense(q, k)
        assert [round(s, 4) for _, s in got] == [round(s, 4) for s, _ in truth[:k]]
        assert {i for i, _ in got} <= {i for s, i in truth if s >= truth[k - 1][0] - 1e-5}
    finally:
        col.close()


def test_writer_killed_before_persist_is_repaired(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite committed, snapshot files not written (the writer died in between)."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "late.txt").write_text("Late\n\nmarker99 arrives after the snapshot.\n")
    with monkeypatch.context() as m:
        m.setattr(Writer, "persist", lambda self: None)
        ingest([extra], built, FakeEmbedder(), CFG)
    state = json.loads((built / "state.json").read_text())
    col = Collection.open(built)
    try:
        assert state["generation"] < col.generation()
    finally:
        col.close()
    assert marker_source(built, 99) == "late.txt"  # the reader rebuilt from SQLite
    assert marker_source(built, 4) == "doc004.txt"
    check_dense(built, "marker99 arrives after the snapshot")
    ingest([extra], built, FakeEmbedder(), CFG)  # nothing changed, yet the writer persists the repair
    col = check_consistent(built)
    try:
        assert json.loads((built / "state.json").read_text())["generation"] == col.generation()
    finally:
        col.close()


def test_stale_state_generation_is_not_trusted(built: Path) -> None:
    state = json.loads((built / "state.json").read_text())
    state["generation"] -= 1
    (built / "state.json").write_text(json.dumps(state))
    (built / state["faiss"]).write_bytes(b"")  # would crash a reader that trusted it
    assert marker_source(built, 7) == "doc007.txt"
    check_dense(built)
    check_consistent(built).close()


def test_missing_snapshot_files_are_rebuilt(built: Path) -> None:
    for p in [*built.glob("index-*.faiss"), *built.glob("bm25-*.npz")]:
        p.unlink()
    assert marker_source(built, 5) == "doc005.txt"
    check_dense(built)
    (built / "state.json").unlink()
    assert marker_source(built, 6, mode="hybrid") == "doc006.txt"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_unreadable_index_file_is_rebuilt(built: Path, damage: str) -> None:
    faiss_file = built / json.loads((built / "state.json").read_text())["faiss"]
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    assert marker_source(built, 3) == "doc003.txt"
    check_dense(built)
    check_consistent(built).close()


def test_bm25_file_that_numpy_refuses_is_rebuilt(built: Path) -> None:
    bm25_file = built / json.loads((built / "state.json").read_text())["bm25"]
    bm25_file.write_bytes(b"not an npz file at all")
    assert marker_source(built, 8) == "doc008.txt"


def test_truncated_bm25_file_is_rebuilt(built: Path) -> None:
    bm25_file = built / json.loads((built / "state.json").read_text())["bm25"]
    data = bm25_file.read_bytes()
    bm25_file.write_bytes(data[: len(data) // 2])
    assert marker_source(built, 8) == "doc008.txt"
    check_consistent(built).close()


def test_index_file_damaged_in_place_is_not_trusted(built: Path) -> None:
    faiss_file = built / json.loads((built / "state.json").read_text())["faiss"]
    data = bytearray(faiss_file.read_bytes())
    data[200:1200] = b"A" * 1000  # same size, parses, vectors wrong
    faiss_file.write_bytes(bytes(data))
    col = Collection.open(built)
    try:
        hits = Searcher(col, FakeEmbedder(), RetrievalSettings()).search("marker3", k=3, mode="dense")
        assert all(-1.0001 <= h.score <= 1.0001 for h in hits)  # cosine of unit vectors
    finally:
        col.close()
    check_dense(built)


class SpyLock(FileLock):
    """The store's FileLock, recording each timeout it was given and announcing each acquire."""

    timeouts: ClassVar[list[float]] = []
    trying: ClassVar[threading.Event] = threading.Event()

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        # A writer tries once without blocking (to say that it waits), then waits: one entry per lock.
        if not getattr(self, "_spied", False):
            self._spied = True
            SpyLock.timeouts.append(float(self.timeout))
        SpyLock.trying.set()
        return super().acquire(*args, **kwargs)


@pytest.fixture
def spy_lock(monkeypatch: pytest.MonkeyPatch) -> type[SpyLock]:
    monkeypatch.setattr(faiss_store, "FileLock", SpyLock)
    SpyLock.timeouts = []
    SpyLock.trying = threading.Event()
    return SpyLock


def test_second_writer_gets_index_locked(built: Path, tmp_path: Path, spy_lock: type[SpyLock]) -> None:
    holder = Collection.open(built)
    other = Collection.open(built)
    try:
        with holder.writer(timeout=1):
            with (
                pytest.raises(IndexLocked, match="being written by another process"),
                other.writer(timeout=0.3),
            ):
                pass
            with pytest.raises(IndexLocked):
                ingest(
                    [tmp_path / "docs"], built, FakeEmbedder(), CFG.model_copy(update={"lock_timeout_s": 0.2})
                )
        assert spy_lock.timeouts == [1.0, 0.3, 0.2]  # each waited for its own timeout, not forever
        with other.writer(timeout=0.3):  # released: the next writer gets in
            pass
    finally:
        holder.close()
        other.close()


def test_second_writer_waits_for_the_first(built: Path, tmp_path: Path, spy_lock: type[SpyLock]) -> None:
    """Ordered by events, not sleeps: the holder has the lock, the ingest asks for it, then the
    holder lets go; the ingest gets in only after that."""
    holder = Collection.open(built)
    held, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        with holder.writer(timeout=1):
            held.set()
            release.wait(60)
            order.append("holder lets go")

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "late.txt").write_text("Late\n\nmarker77 waits its turn.\n")
    reports: list[Any] = []

    def add() -> None:
        reports.append(
            ingest([extra], built, FakeEmbedder(), CFG, progress=lambda p: order.append("ingest in"))
        )

    holding = threading.Thread(target=hold)
    holding.start()
    assert held.wait(60)
    spy_lock.trying.clear()
    adding = threading.Thread(target=add)
    try:
        adding.start()
        assert spy_lock.trying.wait(60)  # the ingest asks for the lock while the holder has it
        release.set()
        adding.join(60)
        assert order[0] == "holder lets go" and "ingest in" in order  # it only got in afterwards
        assert [r.status for r in reports[0].results] == ["added"]
    finally:
        release.set()
        holding.join()
        adding.join()
        holder.close()
    assert marker_source(built, 77) == "late.txt"
    assert source_key(extra / "late.txt") in Collection.open(built).content_hashes()


@pytest.mark.parametrize("target", ["index-", "bm25-", "state.json"])
def test_sigkill_during_the_snapshot_write_leaves_no_temporaries_behind(tmp_path: Path, target: str) -> None:
    """A kill between writing a snapshot file and renaming it left `.index-N.faiss.XXXX.tmp` (or the
    BM25 or state one) that no later run removed; the next writer removes it, under the lock."""
    docs = write_files(tmp_path / "docs", 20)
    col_path = tmp_path / "col"
    ingest([docs], col_path, FakeEmbedder(), CFG)  # a first generation on disk
    (docs / "doc020.txt").write_text("Document 20\n\nmarker20 arrives in the second run.\n")
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE_IN_SNAPSHOT)
    kill_when_ready([sys.executable, str(script), str(docs), str(col_path), target])

    left = [p.name for p in col_path.glob(".*.tmp")]
    assert any(name.startswith("." + target) for name in left), left  # the kill landed mid-write
    col = check_consistent(col_path)  # readers rebuild what the dead writer did not publish
    col.close()
    assert marker_source(col_path, 20) == "doc020.txt"

    report = ingest([docs], col_path, FakeEmbedder(), CFG)
    assert report.ok and len(report.unchanged) == 21
    assert list(col_path.glob(".*.tmp")) == []
    col = check_consistent(col_path)
    try:
        assert len(col.documents()) == 21
        assert json.loads((col_path / "state.json").read_text())["generation"] == col.generation()
    finally:
        col.close()


def test_a_second_writer_says_it_is_waiting_then_goes_on(built: Path, tmp_path: Path) -> None:
    """A real `lectern ingest` against a collection whose lock another process holds: it used to wait
    without a word. Ordered by what it prints, not by sleeps."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "late.txt").write_text("Late\n\nmarker55 waits its turn.\n")
    data = tmp_path / "data"
    (data / "collections").mkdir(parents=True)
    os.symlink(built, data / "collections" / "col")
    env = {
        **os.environ,
        **FAKE_MODELS,
        "LECTERN_DATA_DIR": str(data),
        "LECTERN_INGEST__CHUNK__CHUNK_TOKENS": "16",
        "LECTERN_INGEST__CHUNK__OVERLAP_TOKENS": "4",
        "LECTERN_INGEST__LOCK_TIMEOUT_S": "600",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    lock = FileLock(str(built / ".lock"))
    lock.acquire()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lectern.cli", "ingest", str(extra), "-c", "col"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stderr.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            line = lines.get(timeout=120)  # a deadline only: it speaks before it waits
        except queue.Empty:
            pytest.fail("the second writer waited without a word")
        assert "collection 'col' is being written by another process: waiting up to 600 s" in line, line
        assert proc.poll() is None  # it waits; nothing has been written
        lock.release()
        out, errors = proc.communicate(timeout=120)
    finally:
        if lock.is_locked:
            lock.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    assert "added 1" in out
    assert marker_source(built, 55) == "late.txt"


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to list processes")
def test_sigkill_of_ingest_leaves_no_process_behind(tmp_path: Path) -> None:
    """`lectern ingest` killed with SIGKILL (as the OOM killer does): its parse workers and
    multiprocessing's resource tracker stayed alive under init, blocked, holding its stdout and
    stderr open. Now every process of it is gone within 10 s and the pipes reach end-of-file."""
    docs = write_files(tmp_path / "docs", 600)
    env = {
        **os.environ,
        **FAKE_MODELS,
        "LECTERN_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lectern.cli", "ingest", str(docs), "-c", "col", "--workers", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    sid = proc.pid  # its own session: everything it starts is listed under its pid
    try:
        deadline = time.monotonic() + 120  # a deadline only: the pool starts within seconds
        while not any("multiprocessing" in cmd for cmd in session_processes(sid).values()):
            assert proc.poll() is None, "the ingest finished before its parse worker was seen"
            assert time.monotonic() < deadline, "no parse worker started"
            time.sleep(0.05)
        helpers = {pid: cmd for pid, cmd in session_processes(sid).items() if pid != proc.pid}
        assert helpers, "nothing but the ingest itself to outlive it"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while (left := session_processes(sid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == {}, f"still alive after the ingest was killed: {left}"
        closed: list[bytes] = []
        reader = threading.Thread(target=lambda: closed.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(10)
        assert closed, "its stdout is still held open"
    finally:
        for pid in session_processes(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
