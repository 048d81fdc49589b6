"""The server's jobs (app.jobs) without Streamlit: a job outlives the script run that started it,
Stop keeps the files an ingest finished, one job at a time per key, and its progress counters."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from lectern.app.jobs import Job, Jobs
from lectern.errors import Busy, DocumentError
from lectern.ingest.report import IngestReport, Progress
from lectern.rag.workspace import Workspace


def texts(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"note{i}.txt"
        path.write_text(f"Note {i}: the keeper rows to island {i} on Fridays. " * (20 + i))
        paths.append(path)
    return paths


def test_a_job_outlives_the_run_that_started_it(data_dir: Path) -> None:
    """A script run (a thread that ends, as a page's run does on a reload) starts an ingest; the job
    goes on without it, and a later run finds it by its collection."""
    jobs = Jobs()
    docs = texts(data_dir.parent / "docs", 3)

    def work(job: Job) -> IngestReport:
        ws = Workspace()
        try:
            return ws.ingest(docs, progress=job.report)
        finally:
            ws.close()

    starter = threading.Thread(target=jobs.start, args=("ingest", "default", "default", "The ingest", work))
    starter.start()
    starter.join()  # the run that started it is over
    job = jobs.get("ingest", "default")
    assert job is not None and job.wait(120)
    assert job.state == "done" and isinstance(job.result, IngestReport)
    assert len(job.result.added) == 3
    assert jobs.generation("default") == 1  # pages showing the collection refresh
    assert not jobs.running()


def test_stop_keeps_the_files_finished_and_the_next_ingest_adds_the_rest(data_dir: Path) -> None:
    jobs = Jobs()
    docs = texts(data_dir.parent / "docs", 3)
    one_done, go = threading.Event(), threading.Event()

    def work(job: Job) -> IngestReport:
        def progress(p: Progress) -> None:
            if p.files_done == 1 and not one_done.is_set():  # hold after the first file is written
                one_done.set()
                go.wait(60)
            job.report(p)

        ws = Workspace()
        try:
            return ws.ingest(docs, progress=progress)
        finally:
            ws.close()

    job = jobs.start("ingest", "default", "default", "The ingest into default", work)
    assert one_done.wait(120)
    assert job.running and not job.stopping
    job.stop()
    assert job.stopping
    go.set()
    assert job.wait(120)
    assert job.state == "stopped" and job.error is None
    report = job.result
    assert isinstance(report, IngestReport) and report.stopped
    assert [r.status for r in report.results] == ["added"]
    ws = Workspace()
    assert [Path(d.source).name for d in ws.documents()] == ["note0.txt"]  # kept, and readable
    again = ws.ingest(docs)
    ws.close()
    assert sorted(r.status for r in again.results) == ["added", "added", "unchanged"]


def test_one_job_at_a_time_per_key_and_errors_are_one_line(data_dir: Path) -> None:
    jobs = Jobs()
    release = threading.Event()

    def waits(job: Job) -> str:
        release.wait(60)
        return "first"

    first = jobs.start("answer", "conv", "default", "The answer to the previous question", waits)
    with pytest.raises(Busy, match="The answer to the previous question is still running"):
        jobs.start("answer", "conv", "default", "The answer", lambda job: "second")
    other = jobs.start("answer", "other-conv", "default", "Another", lambda job: "beside it")
    release.set()
    assert first.wait(60) and other.wait(60)
    assert (first.result, other.result) == ("first", "beside it")
    assert jobs.get("answer", "conv") is first

    def fails(job: Job) -> None:
        raise DocumentError("/d/x.pdf", "broken")

    def bug(job: Job) -> None:
        raise ValueError("a bug")

    failed = jobs.start("answer", "conv", "default", "The answer", fails)
    assert failed.wait(60) and failed.state == "failed" and failed.error == "/d/x.pdf: broken"
    crashed = jobs.start("summary", "default", "default", "The summary", bug)
    assert crashed.wait(60) and crashed.error == "unexpected ValueError: a bug"
    jobs.forget("summary", "default")
    assert jobs.get("summary", "default") is None


def test_progress_counts_bytes_and_a_streamed_file_moves_through_its_size(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single large text file sat at 99% with no total: its bytes are now the total, and the
    bytes done move as it is chunked and embedded."""
    monkeypatch.setenv("LECTERN_INGEST__STREAM_BYTES", "20000")  # this file is streamed
    folder = data_dir.parent / "docs"
    small = texts(folder, 1)[0]
    big = folder / "big.txt"
    big.write_text("".join(f"Line {i}: the ferry leaves pier {i % 7} at dawn.\n" for i in range(18000)))
    seen: list[tuple[int, int, int, float]] = []

    def record(p: Progress) -> None:
        seen.append((p.files_done, p.bytes_done, p.bytes_total, p.fraction))

    ws = Workspace()
    report = ws.ingest([small, big], progress=record)
    ws.close()
    total = small.stat().st_size + big.stat().st_size
    assert report.ok and not report.stopped
    assert {t for _, _, t, _ in seen} == {total}  # known from the first report
    done = [d for _, d, _, _ in seen]
    assert done == sorted(done) and done[-1] == total
    partial = [f for files, _, _, f in seen if files < 2 and 0 < f < 1]
    assert len(set(partial)) > 3  # the big file moved the bar while it was read
    assert seen[-1][3] == 1.0


def test_the_time_left_comes_from_the_rate_so_far() -> None:
    job = Job("ingest", "default", "default", "The ingest")
    job.started -= 30  # 30 s in
    assert job.remaining(0.0) is None  # no rate yet
    left = job.remaining(0.25)
    assert left is not None and 89 < left < 91
    job.report(Progress(files_total=2))
    assert isinstance(job.progress, Progress)
    job.report(3, 8)
    assert job.progress == (3, 8)


def test_a_model_called_in_a_job_sees_its_stop(ingested: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat answer stopped only at its next streamed word (the page's report); the model calls a
    job makes (the follow-up's rewrite, the answer) run under the job's stop check, which the local
    and llamacpp backends consult after each token (tests/rag/test_llm_contract.py)."""
    from lectern.rag.fake import FakeChatModel
    from lectern.rag.llm.base import Interrupt

    seen: list[bool] = []
    real_stream, real_generate = FakeChatModel._stream, FakeChatModel._generate

    def stream(self: FakeChatModel, *args: Any, **kwargs: Any) -> Any:
        seen.append(Interrupt.current() is not None)
        yield from real_stream(self, *args, **kwargs)

    def generate(self: FakeChatModel, *args: Any, **kwargs: Any) -> Any:
        seen.append(Interrupt.current() is not None)
        return real_generate(self, *args, **kwargs)

    monkeypatch.setattr(FakeChatModel, "_stream", stream)
    monkeypatch.setattr(FakeChatModel, "_generate", generate)
    jobs = Jobs()

    def work(job: Job) -> Any:
        ws = Workspace()
        try:
            return list(ws.chat_session().stream_ask("talk", "Who designed the tower?"))[-1]
        finally:
            ws.close()

    job = jobs.start("answer", "talk", "default", "The answer", work)
    assert job.wait(120) and job.state == "done", job.error
    assert seen and all(seen), seen
