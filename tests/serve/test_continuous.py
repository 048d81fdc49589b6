"""The continuous batching engine (lectern.serve.continuous) over a toy model: rows joining and leaving
between steps, each row's reply the same as when it runs alone, prompts fed in chunks, the cache
budget, cancellation, and a poisoned row failing alone. Nothing here times anything: the toy model
records every decode, and the tests read that record and the batcher's counters."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lectern.rag.fake import FakeChatModel
from lectern.serve import continuous
from lectern.serve.continuous import ContinuousBatcher, Item
from lectern.serve.jobs import Event, Finish, Job, Sampling

END, POISON = 0, 99
LETTERS = "abcdefghijklmnopqrstuvwxyz ."  # tokens 1..28


class ToySteps:
    """A deterministic model with a KV cache per sequence: a sequence's next token is a function of
    the tokens in its own cache, so a row mixed up with another, fed at a wrong position or left
    with stale cells writes something else. Every decode is recorded; a decode holding POISON
    fails after writing the items before it (a half-done step, as llama.cpp may leave one)."""

    def __init__(self, slots: int, kv_cells: int = 10**7, batch_tokens: int = 64) -> None:
        self.kv_cells, self.batch_tokens = kv_cells, batch_tokens
        self.cache: dict[int, list[int]] = {seq: [] for seq in range(slots)}
        self.logits: dict[int, int] = {}  # a decode's output index -> the sequence
        self.decodes: list[list[Item]] = []
        self.failed: list[list[Item]] = []
        self.wrong: list[str] = []  # what the engine did wrong (a position, a reused sequence)
        self.shared: list[tuple[int, int, int]] = []  # (from, to, length) of each prefix shared
        self.closed = False

    def sampler(self, job: Job, generated: list[int]) -> Any:
        if job.schema == {"poison": True}:
            raise ValueError("this row's grammar cannot be built")
        seed = job.sampling.seed if job.sampling.seed is not None else random.getrandbits(32)
        return (job, random.Random(seed))

    def decode(self, items: list[Item]) -> None:
        self.logits = {}
        for i, (token, pos, seq, wants) in enumerate(items):
            if token == POISON:
                self.failed.append(items)
                raise RuntimeError("the step fell over")
            if pos != len(self.cache[seq]):
                self.wrong.append(f"sequence {seq} fed at {pos} with {len(self.cache[seq])} cached")
            self.cache[seq].append(token)
            if wants:
                self.logits[i] = seq
        self.decodes.append(items)

    def sample(self, sampler: Any, index: int) -> int:
        job, rng = sampler
        cached = self.cache[self.logits[index]]
        token = 1 + (sum(t * (i + 3) for i, t in enumerate(cached)) * 7 + len(cached)) % 29
        if job.sampling.temperature > 0 and rng.random() < job.sampling.temperature / 2:
            token = rng.randrange(1, 30)
        if token == 29:  # the toy's end of reply
            return 0 if not job.sampling.ignore_eos else 1
        return token

    def text(self, ids: list[int]) -> str:
        return "".join(LETTERS[t - 1] for t in ids)

    def is_end(self, token: int) -> bool:
        return token == END

    def forget(self, seq: int) -> None:
        self.cache[seq] = []

    def trim(self, seq: int, length: int) -> None:
        del self.cache[seq][length:]

    def share(self, src: int, dst: int, length: int) -> None:
        if self.cache[dst]:
            self.wrong.append(f"sequence {dst} given a prefix over {len(self.cache[dst])} cells")
        self.cache[dst] = self.cache[src][:length]
        self.shared.append((src, dst, length))

    def release(self, sampler: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Reply:
    """What one job's sink received."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.first = threading.Event()
        self.over = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        (self.first if event[0] == "text" else self.over).set()

    @property
    def text(self) -> str:
        return "".join(e[1] for e in self.events if e[0] == "text")

    @property
    def end(self) -> Event:
        assert self.over.wait(30), "the row never ended"
        return self.events[-1]

    def result(self) -> tuple[str, Event]:
        end = self.end
        return self.text, end


def prompt(word: str, n: int = 0) -> list[int]:
    return [LETTERS.index(c) + 1 for c in (word * (n // len(word) + 1))[: n or len(word)]]


def job(ids: list[int], **sampling: Any) -> tuple[Job, Reply]:
    reply = Reply()
    sampling.setdefault("max_tokens", 12)
    return Job([], Sampling(**sampling), reply, prompt_ids=ids), reply


@pytest.fixture
def engine() -> Iterator[Any]:
    """`engine(slots, **steps)`: a ContinuousBatcher over a new ToySteps; (batcher, steps)."""
    made: list[ContinuousBatcher] = []

    def make(slots: int = 4, **options: Any) -> tuple[ContinuousBatcher, ToySteps]:
        steps = ToySteps(slots, **options)
        batcher = ContinuousBatcher(FakeChatModel(), steps, max_batch=slots, max_queue=64)
        made.append(batcher)
        return batcher, steps

    yield make
    for batcher in made:
        batcher.close()


def alone(engine: Any, ids: list[int], **sampling: Any) -> tuple[str, Event]:
    """The reply a job gets when it is the only row."""
    batcher, _ = engine(1)
    j, reply = job(ids, **sampling)
    batcher.submit(j)
    return reply.result()


def test_a_request_joins_rows_that_are_generating_and_both_replies_are_their_own(engine: Any) -> None:
    batcher, steps = engine(4)
    long, held = job(prompt("canal"), max_tokens=10**6, ignore_eos=True)
    batcher.submit(long)
    assert held.first.wait(30)  # the first row is generating
    late, reply = job(prompt("lighthouse"), stop=["zz"])
    batcher.submit(late)
    answered = reply.result()
    long.cancelled.set()
    assert held.end == ("done", Finish("cancelled", held.end[1].completion_tokens))
    assert answered == alone(engine, prompt("lighthouse"), stop=["zz"])
    stats = batcher.snapshot()
    assert stats["joined"] == 1 and stats["largest_batch"] == 2
    mixed = [d for d in steps.decodes if {item[2] for item in d} == {0, 1}]
    assert mixed and all(len([i for i in d if i[2] == 0]) == 1 for d in mixed)  # one token of the first row
    assert steps.wrong == []


def test_each_row_replies_as_it_would_alone(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows with their own stop strings, limits, temperatures and seeds, prompts longer than a
    chunk, joining at different steps: each reply and finish is that of the row run alone."""
    monkeypatch.setattr(continuous, "PREFILL_TOKENS", 5)
    cases: list[tuple[list[int], dict[str, Any]]] = [
        (prompt("printing press", 30), {"max_tokens": 20}),
        (prompt("walk"), {"max_tokens": 15, "stop": ["e"]}),
        (prompt("cheese cave", 17), {"max_tokens": 25, "temperature": 0.9, "seed": 7}),
        (prompt("lens"), {"max_tokens": 8, "temperature": 1.5, "seed": 2**40 + 3}),
        (prompt("autumn"), {"max_tokens": 40}),  # ends on the toy's end token
        (prompt("a", 3), {"max_tokens": 30, "ignore_eos": True}),
    ]
    batcher, steps = engine(3)
    replies = []
    for ids, sampling in cases:
        j, reply = job(ids, **sampling)
        replies.append(reply)
        batcher.submit(j)
    for (ids, sampling), reply in zip(cases, replies, strict=True):
        assert reply.result() == alone(engine, ids, **sampling)
    assert steps.wrong == [] and batcher.snapshot()["completed"] == len(cases)


def test_a_long_prompt_is_fed_in_chunks_beside_the_generating_rows(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(continuous, "PREFILL_TOKENS", 8)
    batcher, steps = engine(2)
    long, held = job(prompt("tick"), max_tokens=10**6, ignore_eos=True)
    batcher.submit(long)
    assert held.first.wait(30)
    late, reply = job(prompt("reading room", 50), max_tokens=3)
    batcher.submit(late)
    assert reply.end[0] == "done"
    long.cancelled.set()
    assert held.end[1].reason == "cancelled"
    feeding = [d for d in steps.decodes if any(i[2] == 1 and not i[3] for i in d)]
    assert len(feeding) >= 50 // 8  # the prompt went in over several steps...
    assert all(len([i for i in d if i[2] == 1]) <= 8 for d in feeding)  # ...a chunk each
    assert all(any(i[2] == 0 for i in d) for d in feeding)  # and the first row went on in each


def test_a_row_waits_for_cache_cells_then_joins(engine: Any) -> None:
    batcher, steps = engine(4, kv_cells=40)
    first, one = job(prompt("abcde"), max_tokens=20, ignore_eos=True)
    second, two = job(prompt("vwxyz"), max_tokens=20, ignore_eos=True)
    batcher.submit(first)
    batcher.submit(second)
    assert one.end[0] == two.end[0] == "done"
    assert not [d for d in steps.decodes if {i[2] for i in d} == {0, 1}]  # 25 + 25 cells > 40
    assert batcher.snapshot()["largest_batch"] == 1


def test_a_cancelled_row_leaves_and_its_cells_go_to_the_next_row(engine: Any) -> None:
    batcher, steps = engine(1, kv_cells=64)
    j, reply = job(prompt("tick"), max_tokens=10**6, ignore_eos=True)
    batcher.submit(j)
    assert reply.first.wait(30)
    j.cancelled.set()
    assert reply.end[0] == "done" and reply.end[1].reason == "cancelled"
    waiting, gone = job(prompt("tock"))
    waiting.cancelled.set()  # gone before it started
    batcher.submit(waiting)
    assert gone.end == ("done", Finish("cancelled", 0))
    stats = batcher.snapshot()
    assert stats["cancelled"] == 2 and stats["running"] == 0
    assert batcher.ended and steps.cache[0]  # kept for its prefix...
    other, replied = job(prompt("zzzz"), max_tokens=60)  # ...until a row needs the cells
    batcher.submit(other)
    assert replied.result() == alone(engine, prompt("zzzz"), max_tokens=60)
    assert steps.wrong == [] and batcher.snapshot()["prompt_tokens_cached"] == 0


def test_a_prompt_is_fed_from_where_an_ended_row_left_it(engine: Any) -> None:
    """A chat's next turn: the prompt repeats the last one, reply and all, then adds to it; only the
    new tokens are fed, and the reply is the one a fresh cache gives."""
    batcher, steps = engine(2)
    first = prompt("printing press", 30)
    j, reply = job(first, max_tokens=10)
    batcher.submit(j)
    said, end = reply.result()
    assert end == ("done", Finish("length", 10))
    follow = first + [LETTERS.index(c) + 1 for c in said] + prompt("and then", 8)
    fed_before = len(steps.decodes)
    again, replied = job(follow, max_tokens=10)
    batcher.submit(again)
    assert replied.result() == alone(engine, follow, max_tokens=10)
    new = [i for d in steps.decodes[fed_before:] for i in d if not i[3] or i[1] < len(follow)]
    assert min(i[1] for i in new) == len(first) + len(said) - 1  # all before was in the cache
    assert batcher.snapshot()["prompt_tokens_cached"] == len(first) + len(said) - 1
    assert steps.wrong == [] and steps.shared == []  # it took the ended row's own sequence


def test_rows_running_together_share_their_common_prefix(engine: Any) -> None:
    batcher, steps = engine(3)
    system = prompt("you are a helpful lighthouse keeper", 40)
    long, held = job(system + prompt("tick", 4), max_tokens=10**6, ignore_eos=True)
    batcher.submit(long)
    assert held.first.wait(30)
    asks = [system + prompt(word, 5) for word in ("canal", "meadow")]  # no first letter in common
    replies = []
    for ids in asks:
        j, reply = job(ids, max_tokens=8)
        replies.append(reply)
        batcher.submit(j)
    for ids, reply in zip(asks, replies, strict=True):
        assert reply.result() == alone(engine, ids, max_tokens=8)
    long.cancelled.set()
    assert held.end[1].reason == "cancelled"
    assert {length for _, _, length in steps.shared} == {len(system)}
    assert steps.wrong == [] and batcher.snapshot()["prompt_tokens_cached"] >= 2 * len(system)


def test_with_every_sequence_held_by_an_ended_row_a_new_row_takes_the_oldest(engine: Any) -> None:
    batcher, steps = engine(2)
    for word in ("alpha", "bravo", "charlie"):
        j, reply = job(prompt(word, 12), max_tokens=4)
        batcher.submit(j)
        assert reply.result() == alone(engine, prompt(word, 12), max_tokens=4)
    assert len(batcher.ended) == 2 and steps.wrong == []
    assert [steps.cache[seq][:5] for seq in batcher.ended] == [prompt("bravo"), prompt("charl")]


def test_a_seeded_row_on_an_idle_server_starts_on_an_empty_cache(engine: Any) -> None:
    """Its reply must not depend on what the cache held: no prefix taken, the ended rows' cells freed."""
    batcher, steps = engine(2)
    for word in ("alpha", "bravo"):
        j, reply = job(prompt(word, 12), max_tokens=4)
        batcher.submit(j)
        reply.result()
    assert len(batcher.ended) == 2
    seeded = prompt("alpha", 12) + prompt("zulu", 4)  # its prefix is an ended row's
    replies = []
    for _ in range(2):
        j, reply = job(seeded, max_tokens=8, temperature=1.0, seed=7)
        batcher.submit(j)
        replies.append(reply.result())
        assert batcher.snapshot()["prompt_tokens_cached"] == 0  # fed from the start, both times
    assert replies[0] == replies[1] == alone(engine, seeded, max_tokens=8, temperature=1.0, seed=7)
    assert list(batcher.ended) == [0] and steps.cache[1] == [] and steps.wrong == []


def test_a_row_whose_sampler_cannot_be_built_fails_alone(engine: Any) -> None:
    batcher, _ = engine(4)
    good, ok = job(prompt("press"))
    bad, failed = job(prompt("press"))
    bad.schema = {"poison": True}
    batcher.submit(good)
    batcher.submit(bad)
    assert failed.end[0] == "error" and "grammar" in str(failed.end[1])
    assert ok.result() == alone(engine, prompt("press"))
    assert batcher.snapshot()["failed"] == 1


def test_a_step_that_fails_is_run_again_row_by_row_and_only_the_poisoned_row_fails(engine: Any) -> None:
    """A generating row, a poisoned prompt and a good prompt in one step: the step fails half-done;
    it is undone and run one row at a time, so the generating row goes on (its reply already
    streaming), the good prompt is answered, and only the poisoned row hears the error."""
    batcher, steps = engine(4)
    long, held = job(prompt("canal"), max_tokens=40, ignore_eos=True)
    batcher.submit(long)
    assert held.first.wait(30)
    with batcher._cond:  # both join at the same step
        poisoned, failed = job([*prompt("lens"), POISON])
        good, ok = job(prompt("autumn"))
        batcher.waiting.extend([poisoned, good])
        batcher._cond.notify()
    assert failed.end[0] == "error" and "fell over" in str(failed.end[1])
    assert ok.end[0] == "done" and held.end[0] == "done"
    assert held.result() == alone(engine, prompt("canal"), max_tokens=40, ignore_eos=True)
    assert ok.result() == alone(engine, prompt("autumn"))
    assert any(len({i[2] for i in d}) > 1 for d in steps.failed)  # it failed as a batch of rows
    stats = batcher.snapshot()
    assert stats["failed"] == 1 and stats["isolated_steps"] >= 1 and steps.wrong == []


def test_a_prompt_with_no_tokens_fails_alone(engine: Any) -> None:
    batcher, _ = engine(2)
    empty, failed = job([])
    batcher.submit(empty)
    assert failed.end[0] == "error"
    fine, ok = job(prompt("ok"))
    batcher.submit(fine)
    assert ok.end[0] == "done"


def test_closing_ends_the_running_rows_and_frees_the_context(engine: Any) -> None:
    batcher, steps = engine(2)
    j, reply = job(prompt("tick"), max_tokens=10**6, ignore_eos=True)
    batcher.submit(j)
    assert reply.first.wait(30)
    batcher.close()
    assert reply.end[1].reason == "cancelled"
    batcher._thread.join(30)
    assert steps.closed


def test_past_the_queue_bound_a_request_is_refused_with_a_wait() -> None:
    from lectern.errors import ServerBusy

    steps = ToySteps(1)
    batcher = ContinuousBatcher(FakeChatModel(), steps, max_batch=1, max_queue=2)
    try:
        held, reply = job(prompt("tick"), max_tokens=10**6, ignore_eos=True)
        batcher.submit(held)
        assert reply.first.wait(30)  # running: the queue counts only the waiting
        batcher.submit(job(prompt("a"))[0])
        batcher.submit(job(prompt("b"))[0])
        with pytest.raises(ServerBusy) as refused:
            batcher.submit(job(prompt("c"))[0])
        assert refused.value.retry_after_s > 0 and batcher.snapshot()["rejected"] == 1
        held.cancelled.set()
    finally:
        batcher.close()
