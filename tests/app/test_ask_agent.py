"""The Ask page's Agent switch, with the fake model (which plays a one-search agent)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import settle


def test_agent_switch_shows_steps_answer_and_citations_and_keeps_them(
    open_app: Callable[..., AppTest], ingested: Path
) -> None:
    at = open_app("ask")
    at.toggle[0].set_value(True).run()
    at = settle(at.chat_input[0].set_value("Who designed the tower?").run())
    assert not at.exception, at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    answer = at.chat_message[1]
    labels = [e.label for e in answer.expander]
    assert labels[0].startswith("The agent's ") and labels[0].endswith(" steps")
    steps = [c.value for c in answer.expander[0].caption]
    # numbered from 1: the plan is a model call, then the searches
    assert steps[0].startswith("Step 1: a model call")
    assert steps[1].startswith("Step 2: search(query='Who designed the tower?')")
    assert any(label.startswith("[1] ") for label in labels)  # the citation
    assert "[1]" in answer.markdown[0].value

    # the agent's run is part of the conversation: a reload shows it, steps and all
    again = open_app("ask", conversation=at.query_params["conversation"])
    assert [m.name for m in again.chat_message] == ["user", "assistant"]
    assert again.chat_message[1].expander[0].label == labels[0]


def test_stop_ends_an_agent_run_and_the_steps_done_are_kept(
    open_app: Callable[..., AppTest], ingested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent could not be stopped (the page had no Stop for it, and a stop waited for its end);
    now Stop ends it at its next step, and the conversation keeps the question, the steps done and
    that it was stopped."""
    from lectern.app.jobs import JOBS
    from lectern.rag.fake import FakeChatModel

    in_call, go = threading.Event(), threading.Event()
    real = FakeChatModel._generate

    def held(self: FakeChatModel, *args: Any, **kwargs: Any) -> Any:
        in_call.set()
        assert go.wait(60)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FakeChatModel, "_generate", held)
    at = open_app("ask")
    at.toggle[0].set_value(True).run()
    at = at.chat_input[0].set_value("Who designed the tower?").run()
    assert in_call.wait(60)  # the agent's first model call (its plan) is under way
    (job,) = JOBS.running()
    job.stop()
    go.set()
    assert job.wait(60) and job.state == "stopped", (job.state, job.error)
    again = open_app("ask", conversation=at.query_params["conversation"])
    assert [m.name for m in again.chat_message] == ["user", "assistant"]
    answer = again.chat_message[1]
    assert answer.expander[0].label == "The agent's 1 step"
    assert answer.expander[0].caption[0].value.startswith("Step 1: a model call")
    assert "was stopped" in answer.error[0].value
