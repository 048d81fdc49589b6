"""The Ask page's Agent switch, with the fake model (which plays a one-search agent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest


def test_agent_switch_shows_steps_answer_and_citations(
    open_app: Callable[..., AppTest], ingested: Path
) -> None:
    at = open_app("ask")
    at.toggle[0].set_value(True).run()
    at.chat_input[0].set_value("Who designed the tower?").run()
    assert not at.exception, at.exception
    answer = at.chat_message[1]
    labels = [e.label for e in answer.expander]
    # step 1 is the plan (a model call); then the searches, each an expander
    assert labels[0].startswith("Step 2: search(query='Who designed the tower?')")
    assert any(label.startswith("[1] ") for label in labels)  # the citation
    assert "[1]" in answer.markdown[0].value
    assert "stopped by answer" in " ".join(c.value for c in answer.caption)
