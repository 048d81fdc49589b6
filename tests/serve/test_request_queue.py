"""The model worker's queue without a server: the bound, and the wait a refused request is told."""

from __future__ import annotations

from typing import Any

import pytest

from lectern.errors import ServerBusy
from lectern.rag.fake import FakeChatModel
from lectern.serve.jobs import Job, Sampling
from lectern.serve.request_queue import Batcher


def test_submit_past_the_bound_raises_and_counts() -> None:
    batcher = Batcher(FakeChatModel(), max_batch=1, max_queue=1)
    batcher.close()  # its worker stops before it can take a job: the queue only fills
    batcher._thread.join(10)
    done: list[Any] = []
    batcher.submit(Job([], Sampling(), sink=done.append))
    with pytest.raises(ServerBusy) as caught:
        batcher.submit(Job([], Sampling(), sink=done.append))
    assert caught.value.status == 503 and caught.value.retry_after_s >= 1
    batcher.submit(Job([], Sampling(), sink=done.append), bounded=False)  # a request's sub-job
    assert batcher.snapshot()["rejected"] == 1 and batcher.snapshot()["waiting"] == 2


def test_the_refused_are_told_to_come_back_one_batch_apart() -> None:
    batcher = Batcher(FakeChatModel(), max_batch=2, max_queue=2)
    batcher.close()  # its worker stops: the queue only fills
    batcher._thread.join(10)
    batcher.batch_s = 3.0  # a batch has taken 3 s
    for _ in range(2):
        batcher.submit(Job([], Sampling(), sink=lambda e: None))
    waits = []
    for _ in range(4):
        with pytest.raises(ServerBusy) as caught:
            batcher.submit(Job([], Sampling(), sink=lambda e: None))
        waits.append(caught.value.retry_after_s)
    # 2 waiting = one batch ahead after the running one; each refused one takes a place ahead of the next
    assert waits == [6.0, 6.0, 9.0, 9.0]
