"""What a stream sends around stop strings: held back while it may be one, cut at one, flushed at the end."""

from __future__ import annotations

from lectern.serve.jobs import Event, Job, Sampling
from lectern.serve.stop_strings import Emitter, held_back


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


def test_held_back_is_the_longest_tail_that_starts_a_stop_string() -> None:
    assert held_back("a <tool", ["<tool_call>", "<t"]) == 5
    assert held_back("a <", ["<tool_call>"]) == 1
    assert held_back("done", ["<tool_call>"]) == 0
