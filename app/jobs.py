"""Work that outlives the page: an ingest, a summary or an answer runs in a thread the server process
owns, kept in JOBS, not in a script run. Leaving the page, a reload, a second tab or a closed tab do
not stop it; a page finds it again by (kind, key) and reads its progress. Nothing here calls
Streamlit: the pages read a Job, the worker only writes it.

A job's work gets the Job and passes `job.report` as its progress callback; once `job.stop()` is
asked, the next report raises lectern.errors.Stopped, the same way out as any error (an ingest
catches it and keeps the files it finished: ingest.pipeline). The work also runs under
rag.llm.base.stoppable(job.check): an agent stops between its steps, and a model generating here
(the local and llamacpp backends) at its next token.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lectern.errors import Busy, LecternError, Stopped
from lectern.rag.llm.base import stoppable

LOG = logging.getLogger("lectern")
Kind = Literal["ingest", "summary", "answer"]
State = Literal["running", "done", "failed", "stopped"]
_IDS = itertools.count(1)


@dataclass
class Job:
    kind: Kind
    key: str  # what it works on: a collection (ingest, summary) or a conversation (answer)
    collection: str
    label: str  # how messages name it: "the ingest into default"
    id: int = field(default_factory=lambda: next(_IDS))
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    state: State = "running"
    progress: Any = None  # the last thing the work reported (an ingest's Progress, (done, total), text)
    result: Any = None
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() and self.running

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def remaining(self, fraction: float) -> float | None:
        """Seconds left at the rate so far, once there is a rate to go by (None before)."""
        if not self.running or fraction < 0.01 or fraction >= 1.0:
            return None
        return self.elapsed * (1.0 - fraction) / fraction

    def wait(self, timeout: float | None = None) -> bool:
        """Until the job has ended (True) or `timeout` s have passed (False)."""
        return self._ended.wait(timeout)

    def stop(self) -> None:
        """Ask the work to stop at its next report (a model call or a batch of chunks in progress ends first)."""
        self._stop.set()

    def report(self, *progress: Any) -> None:
        """The work's progress callback: keep what it reports; raise Stopped once a stop was asked."""
        self.progress = progress[0] if len(progress) == 1 else progress
        self.check()

    def check(self) -> None:
        """Raise Stopped once a stop was asked (between an agent's steps, a model's tokens)."""
        if self._stop.is_set():
            raise Stopped(self.label)


Work = Callable[[Job], Any]


class Jobs:
    """The server process's jobs: the latest one per (kind, key), and a generation per collection
    that an ended ingest (or a delete) raises, so every open page can tell that the data changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, str], Job] = {}
        self._generations: dict[str, int] = {}

    def start(self, kind: Kind, key: str, collection: str, label: str, work: Work) -> Job:
        """Run `work(job)` in a thread of its own; Busy while the previous job on (kind, key) runs."""
        with self._lock:
            current = self._latest.get((kind, key))
            if current is not None and current.running:
                raise Busy(current.label)
            job = Job(kind, key, collection, label)
            self._latest[(kind, key)] = job
        threading.Thread(
            target=self._run, args=(job, work), name=f"lectern-{kind}-{job.id}", daemon=True
        ).start()
        return job

    def _run(self, job: Job, work: Work) -> None:
        stopped = False
        try:
            with stoppable(job.check):
                job.result = work(job)
            stopped = bool(getattr(job.result, "stopped", False))  # an ingest keeps what it finished
        except Stopped:
            stopped = True
        except LecternError as err:
            job.error = str(err)
        except Exception as err:  # a bug: told on the page in one line, its traceback in the server log
            LOG.exception("%s failed", job.label)
            job.error = f"unexpected {type(err).__name__}: {err}"
        finally:
            job.ended = time.monotonic()
            job.state = "failed" if job.error else "stopped" if stopped else "done"
            if job.kind == "ingest":
                self.changed(job.collection)
            job._ended.set()

    def get(self, kind: Kind, key: str) -> Job | None:
        """The latest job of this kind on this key, running or ended (None: none since the server started)."""
        with self._lock:
            return self._latest.get((kind, key))

    def running(self) -> list[Job]:
        with self._lock:
            return [j for j in self._latest.values() if j.running]

    def forget(self, kind: Kind, key: str) -> None:
        """Drop an ended job, so its result is no longer shown."""
        with self._lock:
            job = self._latest.get((kind, key))
            if job is not None and not job.running:
                del self._latest[(kind, key)]

    def generation(self, collection: str) -> int:
        with self._lock:
            return self._generations.get(collection, 0)

    def changed(self, collection: str) -> None:
        """The collection's documents changed: pages showing it refresh on their next check."""
        with self._lock:
            self._generations[collection] = self._generations.get(collection, 0) + 1


JOBS = Jobs()
"""The one registry of the server process (a module Streamlit imports once and never re-executes)."""
