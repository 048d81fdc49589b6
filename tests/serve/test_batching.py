"""The batcher's pieces without a server: what a stream sends around stop strings, and the queue bound."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lectern.errors import ServerBusy
from lectern.rag.fake import FakeChatModel
from lectern.serve.batching import Batcher, Emitter, Event, Job, Sampling


def job(stop: list[str], events: list[Event]) -> Job:
    return Job([], Sampling(stop=stop), sink=events.append)


def sent(events: list[Event]) -> list[str]:
    return [e[1] for e in events if e[0] == "text"]


def test_a_possible_stop_string_is_held_back_until_it_is_known() -> None:
    events: list[Event] = []
    out = Emitter(job(["\n\n"], events))
    assert not out.update("Paris")
    assert not out.update("Paris.\n")  # "\n" may start "\n\n": held
    assert sent(events) == ["Paris", "."]
    assert not out.update("Paris.\nIt")  # it did not: sent with what follows
    assert sent(events) == ["Paris", ".", "\nIt"]
    assert out.update("Paris.\nIt is.\n\nMore")  # the stop string: cut before it, nothing of it sent
    assert "".join(sent(events)) == "Paris.\nIt is."


def test_half_a_character_waits_for_the_rest() -> None:
    events: list[Event] = []
    out = Emitter(job([], events))
    out.update("caf\ufffd")
    assert sent(events) == []
    out.update("café")
    assert sent(events) == ["café"]


def test_at_the_end_a_held_tail_is_flushed() -> None:
    events: list[Event] = []
    out = Emitter(job(["STOP"], events))
    out.update("the end ST")
    assert "".join(sent(events)) == "the end "
    out.flush()  # max_tokens reached: the tail was not a stop string after all
    assert "".join(sent(events)) == "the end ST"


def test_submit_past_the_bound_raises_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    batcher = Batcher(FakeChatModel(), max_batch=1, max_queue=1)
    monkeypatch.setattr(batcher, "_take", lambda: (gate.wait(), [])[1])  # the worker never takes a job
    try:
        done: list[Any] = []
        batcher.submit(Job([], Sampling(), sink=done.append))
        with pytest.raises(ServerBusy) as caught:
            batcher.submit(Job([], Sampling(), sink=done.append))
        assert caught.value.status == 503 and caught.value.retry_after_s >= 1
        batcher.submit(Job([], Sampling(), sink=done.append), bounded=False)  # a request's sub-job
        assert batcher.snapshot()["rejected"] == 1 and batcher.snapshot()["waiting"] == 2
    finally:
        gate.set()
        batcher.close()


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


def test_max_batch_left_out_is_the_backends_own() -> None:
    """Continuous rows on llama.cpp (tests/integration/test_serve_structured_e2e.py reads them off a
    real server), static batches of STATIC_BATCH otherwise; 1 is one at a time on both."""
    from lectern.serve.batching import STATIC_BATCH, make_batcher

    for asked, served in ((None, STATIC_BATCH), (1, 1), (3, 3)):
        batcher = make_batcher(FakeChatModel(), max_batch=asked)
        try:
            assert type(batcher) is Batcher and batcher.max_batch == served
        finally:
            batcher.close()
