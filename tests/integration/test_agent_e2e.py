"""One bounded agent run with the real default model (packaged:qwen2.5-0.5b) on sample_docs.

What a 0.5B model did here (CPU, greedy, 2026-11-29; it is Qwen2.5-Coder-0.5B-Instruct): left to
itself it answered "Who designed the Marrow Point lighthouse tower?" from memory without calling a
tool ("John Marrow", uncited). In the tool loop, with the first search done for it, it called
search(question) again at every step and, asked to answer at the step limit, abstained although
passages [1]-[4] held "Edith Varley". In plan and execute (the default) its plan was a poor one
("Google Maps, Wikipedia"), but the question's own search ran beside it and the chain-style answer
from the best sentences was "Edith Varley designed the Marrow Point lighthouse tower. [1]".
Its direct tool calls are valid JSON (a 48-token limit can cut one short: reported as invalid).
The contract is what this test checks: plan, searches, one answer, a complete trace, and every
citation pointing at a chunk a tool returned."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage

from lectern.rag.settings import load_settings
from lectern.rag.tools import SearchArgs
from lectern.rag.workspace import Workspace
from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    data = tmp_path_factory.mktemp("data")
    settings = load_settings(
        data_dir=data,
        ingest={"embed": {"model": "fake"}, "parse_workers": 0},
        llm={"model": "packaged:qwen2.5-0.5b", "device": "cpu", "max_new_tokens": 48},
    )
    workspace = Workspace(collection="agent", settings=settings)
    workspace.ingest([p for p in SAMPLE_DOCS.iterdir() if p.name not in SAMPLE_EXCLUDE])
    yield workspace
    workspace.close()


@pytest.mark.e2e
def test_agent_run_with_the_default_model(ws: Workspace) -> None:
    result = ws.agent(max_steps=2, token_budget=6000).invoke(
        "Who designed the Marrow Point lighthouse tower?"
    )
    trace = "\n".join(map(str, result.steps))  # shown when an assertion fails
    assert result.stopped_by in ("answer", "steps"), trace
    plan, first = result.steps[0], result.steps[1]  # plan and execute, the default
    assert plan.kind == "model" and first.tool == "search" and first.chunks
    assert first.arguments == {"query": "Who designed the Marrow Point lighthouse tower?"}
    models = [s for s in result.steps if s.kind == "model"]
    assert len(models) == 2 and all(s.tokens > 0 for s in models), trace
    assert 0 < result.tokens <= 6000
    shown = {c.chunk_id for c in result.answer.contexts}
    assert result.answer.citations and all(c.chunk_id in shown for c in result.answer.citations), trace
    assert "Varley" in result.answer.answer, trace  # the question's own search holds the designer
    assert any(c.source.endswith("marrow_point_light.pdf") for c in result.answer.citations), trace


@pytest.mark.e2e
def test_real_model_tool_reply_parses_without_error(ws: Workspace) -> None:
    """Asked to use the search tool, the model writes one call that reads as a valid search (its
    JSON parses and its arguments are the search's typed ones) for what was asked."""
    tools = list(ws.agent().tools.values())
    reply = ws.llm.bind_tools(tools).invoke(
        "Use the search tool to find who designed the Marrow Point tower.", max_new_tokens=64
    )
    assert isinstance(reply, AIMessage)
    assert not reply.invalid_tool_calls, reply
    assert [call["name"] for call in reply.tool_calls] == ["search"], reply
    call = reply.tool_calls[0]
    args = SearchArgs.model_validate(call["args"])
    assert call["id"] and "marrow" in args.query.lower(), reply


@pytest.mark.e2e
def test_a_two_part_question_is_asked_part_by_part_with_the_default_model(ws: Workspace) -> None:
    """Asked both at once, the 0.5B states one fact; each part is asked alone (a model call each) and
    the answers joined, each part's fact from the sample PDF."""
    question = "Who designed the Marrow Point lighthouse tower, and how many steps does the tower have?"
    result = ws.agent(token_budget=8000).invoke(question)
    trace = "\n".join(map(str, result.steps))
    models = [s for s in result.steps if s.kind == "model"]
    assert len(models) == 3 and all(s.tokens > 0 for s in models), trace  # the plan, then each part
    answer = result.answer
    assert not answer.abstained and "Varley" in answer.answer and "143" in answer.answer, trace
    shown = {c.chunk_id for c in answer.contexts}
    assert answer.citations and all(c.chunk_id in shown for c in answer.citations), trace
    assert {c.number for c in answer.citations} <= {c.number for c in answer.contexts}  # renumbered as one


@pytest.mark.e2e
def test_a_bridge_is_asked_hop_by_hop_with_the_default_model(ws: Workspace) -> None:
    """The second part asks about the first part's answer ("her tower"): the first part is asked,
    the engineer its answer names is searched for by name, and the second part asked about her."""
    question = "Who designed the Marrow Point lighthouse tower, and how tall was her tower?"
    result = ws.agent(token_budget=8000).invoke(question)
    trace = "\n".join(map(str, result.steps))
    searches = [s.arguments["query"] for s in result.steps if s.kind == "tool"]
    assert searches[-1] == "How tall was Edith Varley's tower?", trace  # the first answer's name
    models = [s for s in result.steps if s.kind == "model"]
    assert len(models) == 3, trace  # the plan, the first part, the second
    answer = result.answer
    assert not answer.abstained and "Varley" in answer.answer and "31 metres" in answer.answer, trace
    assert all(c.source.endswith("marrow_point_light.pdf") for c in answer.citations), trace
