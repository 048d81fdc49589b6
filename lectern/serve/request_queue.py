"""The server's one model worker: requests queue up, and those that arrive while the model is busy
join the next generation batch. Past `max_queue` waiting requests, `submit` refuses with the wait
a client should honour (Retry-After).

The local transformers model runs a batch together (static_batch.py); any other model is served one
request at a time (one_at_a_time.py), with the same events and cancellation. llama.cpp with more than
one row is batched continuously instead (lectern.serve.continuous, a subclass of this Batcher;
lectern.serve.server.make_batcher picks it). A job that fails in a batch is run again alone, so one bad
row does not fail the others.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel

from lectern.errors import ServerBusy
from lectern.rag.llm import LocalChatModel
from lectern.serve.jobs import Finish, Job
from lectern.serve.one_at_a_time import stream_one
from lectern.serve.static_batch import generate_batch


class Batcher:
    """The worker thread that owns the model; `submit` queues a job, `stats` feeds /health."""

    def __init__(
        self, llm: BaseChatModel, *, max_batch: int = 8, max_queue: int = 32, gather_s: float = 0.02
    ) -> None:
        self.llm = llm
        self.max_batch = max(1, max_batch)
        self.max_queue = max(0, max_queue)
        self.gather_s = gather_s
        """How long an idle worker waits for a first request's companions before it starts a batch
        that is not full: clients whose answers ended together come back within milliseconds of each
        other, and without the wait the first of them would run alone while the rest wait a whole
        batch (batches of 1, 7, 1, 7... instead of 8)."""
        self.waiting: deque[Job] = deque()
        self.running = 0
        self.stats: Counter[str] = Counter()
        """submitted, completed, cancelled (stopped because the client left), failed (the generation
        raised), rejected, batches, batched_rows; tests read these through /health instead of timing
        anything."""
        self.batch_s = 0.0
        """A running average of a batch's seconds: the wait a refused request is told (Retry-After)."""
        self._began = 0.0  # when the running batch started
        self._promised: list[float] = []  # when the refused requests were told to come back
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lectern-model", daemon=True)
        self._thread.start()

    def submit(self, job: Job, *, bounded: bool = True) -> Job:
        """Queue `job`; a bounded submit past `max_queue` waiting jobs raises ServerBusy. Sub-jobs of an
        admitted request (a RAG answer, a summary's map steps) are queued unbounded."""
        with self._cond:
            if bounded and len(self.waiting) >= self.max_queue:
                self._refuse()
            self.stats["submitted"] += 1
            self.waiting.append(job)
            self._cond.notify()
        return job

    def check_capacity(self) -> None:
        """Refuse a new request now if the queue is full (for requests that submit their jobs later)."""
        with self._cond:
            if len(self.waiting) >= self.max_queue:
                self._refuse()

    def _refuse(self) -> None:
        """ServerBusy, with the expected wait for room in the queue: the batches ahead (the running
        one, the waiting rows, and the refused requests already told to come back before this one)
        at a batch's seconds (the running average; 1 s before any batch ended; at least the running
        one's time so far). Clients that honour Retry-After then come back one batch apart, when
        there is room, instead of all at once into the same full queue."""
        self.stats["rejected"] += 1
        now = time.monotonic()
        self._promised = [t for t in self._promised if t > now]
        per = max(self.batch_s or 1.0, now - self._began if self.running else 0.0)
        ahead = 1 + (len(self.waiting) + len(self._promised)) // self.max_batch
        self._promised.append(now + ahead * per)
        raise ServerBusy(len(self.waiting), retry_after_s=ahead * per)

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {
                "waiting": len(self.waiting),
                "running": self.running,
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                **{k: self.stats[k] for k in STAT_NAMES},
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _take(self) -> list[Job]:
        with self._cond:
            while not self.waiting and not self._closed:
                self._cond.wait()
            deadline = time.monotonic() + self.gather_s
            while len(self.waiting) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[Job] = []
            while self.waiting and len(batch) < self.max_batch:
                job = self.waiting.popleft()
                if job.cancelled.is_set():  # gone before it started: nothing to stop
                    self.stats["cancelled"] += 1
                    job.emit(("done", Finish("cancelled", 0)))
                    continue
                batch.append(job)
            self.running = len(batch)
            self._began = time.monotonic()
            return batch

    def _loop(self) -> None:
        while not self._closed:
            batch = self._take()
            if not batch:
                continue
            self.stats["batches"] += 1
            self.stats["batched_rows"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            began = time.monotonic()
            try:
                self._run(batch)
            finally:
                seconds = time.monotonic() - began
                with self._cond:
                    self.running = 0
                    self.batch_s = seconds if not self.batch_s else 0.8 * self.batch_s + 0.2 * seconds

    def _run(self, batch: list[Job]) -> None:
        """The local model generates the batch together; any other model serves it one by one."""
        llm = self.llm
        if isinstance(llm, LocalChatModel):
            self._isolated(batch, lambda jobs: generate_batch(llm, jobs, self.stats))
            return
        for job in batch:
            self._isolated([job], lambda jobs: stream_one(llm, jobs[0], self.stats))

    def _isolated(self, jobs: list[Job], run: Callable[[list[Job]], None]) -> None:
        """Run `jobs` together; when that raises, one bad row must not fail the others: the rows that
        have sent nothing yet run again one by one, and only a row that fails alone (or had already
        sent part of its reply) hears the error."""
        try:
            run(jobs)
            return
        except Exception as error:
            failed: BaseException = error
        unfinished = [job for job in jobs if not job.finished]
        if len(jobs) > 1:
            for job in unfinished:
                if job.started:
                    self._fail(job, failed)
                else:
                    self._isolated([job], run)
            return
        for job in unfinished:
            self._fail(job, failed)

    def _fail(self, job: Job, error: BaseException) -> None:
        self.stats["failed"] += 1
        job.emit(("error", error))


STAT_NAMES = ("submitted", "completed", "cancelled", "failed", "rejected", "batches", "batched_rows",
              "largest_batch", "joined", "isolated_steps", "prompt_tokens_cached")  # fmt: skip
"""Continuous batching's own: joined, rows that joined while others were generating; isolated_steps,
failed steps run again one row at a time; prompt_tokens_cached, prompt tokens a row found in the
cache (a prefix shared with a running or ended row) instead of feeding them."""
