"""The agent loop with scripted and fake models over a fake-embedder collection: tool calls run and
are traced, the step limit and the token budget stop it, bad calls go back to the model, and the
final answer cites the chunks the tools returned as the QA chain would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from lectern.errors import Stopped
from lectern.rag.agent import AgentResult
from lectern.rag.fake import ScriptedChatModel
from lectern.rag.llm.base import stoppable
from lectern.rag.llm.tool_calls import format_tool_call
from lectern.rag.prompts import NO_ANSWER
from lectern.rag.qa import grounding_note
from lectern.rag.sentences import select_sentences
from lectern.rag.settings import Settings
from lectern.rag.tools import SourceBook, build_tools, page_range
from lectern.rag.types import Answer, Context
from lectern.rag.workspace import Workspace

OTTERS = "The river otters of Glenmore eat crayfish at dawn. They sleep in holts under alder roots."
PUMP = "The bilge pump of the Marrow ferry runs at five bar. It is serviced every spring by Ada Quill."


@pytest.fixture
def ws(settings: Settings, tmp_path: Path) -> Iterator[Workspace]:
    """Two small documents; the fake embedder, and the fake model where the settings' is used."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "otters.txt").write_text(f"{OTTERS}\n")
    (docs / "pump.txt").write_text(f"{PUMP}\n")
    fake = settings.model_copy(update={"llm": settings.llm.model_copy(update={"backend": "fake"})})
    workspace = Workspace(collection="test", settings=fake)
    workspace.ingest([docs])
    yield workspace
    workspace.close()


def search_call(query: str, **more: object) -> str:
    return format_tool_call("search", {"query": query, **more})


def test_search_then_answer_is_traced_and_cited(ws: Workspace) -> None:
    llm = ScriptedChatModel(
        replies=[search_call("otters eat", k=2), "Glenmore otters eat crayfish at dawn [1]."]
    )
    result = ws.agent(llm=llm, first_search=False).invoke("What do the otters eat?")
    assert result.stopped_by == "answer"
    assert [(s.kind, s.tool) for s in result.steps] == [("model", None), ("tool", "search"), ("model", None)]
    search = result.steps[1]
    assert search.arguments == {"query": "otters eat", "k": 2} and search.error is None
    assert search.result_chars > 0 and search.chunks and len(search.chunks) <= 2
    answer = result.answer
    assert not answer.abstained and "crayfish" in answer.answer
    assert Path(answer.citations[0].source).name == "otters.txt"
    assert answer.citations[0].chunk_id == next(c.chunk_id for c in answer.contexts if c.number == 1)
    # the model's second call saw the tool's numbered passages
    tool_messages = [m for m in llm.calls[1] if isinstance(m, ToolMessage)]
    assert tool_messages and tool_messages[0].text.startswith("[1] (")
    assert result.tokens == sum(s.tokens for s in result.steps if s.kind == "model") > 0


def test_a_wrong_citation_is_replaced_by_the_chunk_that_holds_the_answer(ws: Workspace) -> None:
    replies = [
        search_call("otters"),
        search_call("bilge pump serviced"),
        "The pump is serviced every spring by Ada Quill [7].",
    ]
    result = ws.agent(llm=ScriptedChatModel(replies=replies), first_search=False).invoke(
        "Who services the pump?"
    )
    answer = result.answer
    assert answer.dropped_citations == [7]  # no chunk numbered 7 was shown
    assert [Path(c.source).name for c in answer.citations] == ["pump.txt"]
    assert answer.citations[0].inferred and "Ada Quill" in " ".join(answer.citations[0].highlights)


def test_a_chunk_seen_twice_keeps_its_number(ws: Workspace) -> None:
    book = SourceBook()
    tools = {t.name: t for t in build_tools(ws, book)}
    first = tools["search"].invoke({"query": "otters crayfish", "k": 1})
    again = tools["search"].invoke({"query": "otters crayfish", "k": 2})
    assert first.split("\n")[0] == again.split("\n")[0]
    assert len(book.contexts) == 2 and [c.number for c in book.contexts] == [1, 2]


def test_step_limit_then_one_answer_without_tools(ws: Workspace) -> None:
    llm = ScriptedChatModel(replies=[search_call("otters"), search_call("pump"), "Otters eat crayfish [1]."])
    result = ws.agent(llm=llm, max_steps=2, first_search=False).invoke("What do otters eat?")
    assert result.stopped_by == "steps"
    assert len(llm.calls) == 3
    assert [bool(o.get("tools")) for o in llm.options] == [True, True, False]  # the last call has no tools
    assert "crayfish" in result.answer.answer and result.answer.citations
    assert sum(s.kind == "tool" for s in result.steps) == 2


def test_a_stop_ends_the_run_between_steps_and_keeps_the_steps_done(ws: Workspace) -> None:
    """A web UI job's Stop (rag.llm.base.stoppable) ran on to the agent's end; now the run ends at
    the next step with Stopped, and the steps taken stay readable on the agent."""
    llm = ScriptedChatModel(replies=[search_call("otters"), search_call("pump"), "Otters eat crayfish [1]."])
    agent = ws.agent(llm=llm, max_steps=4, first_search=False)

    def check() -> None:
        if len(agent.steps) >= 2:  # the Stop pressed while the first search ran
            raise Stopped("the agent's answer")

    with stoppable(check), pytest.raises(Stopped, match="the agent's answer was stopped"):
        agent.invoke("What do otters eat?")
    assert [(s.kind, s.tool) for s in agent.steps] == [("model", None), ("tool", "search")]
    assert len(llm.calls) == 1  # no model call after the stop


def test_a_repeated_call_is_not_run_again_and_the_model_is_told_to_answer(ws: Workspace) -> None:
    llm = ScriptedChatModel(replies=[search_call("otters"), "Otters eat crayfish [1]."])
    result = ws.agent(llm=llm, plan=False).invoke("otters")  # the first search is search("otters") already
    search_steps = [s for s in result.steps if s.kind == "tool"]
    assert [s.error is None for s in search_steps] == [True, False]
    assert "already called" in (search_steps[1].error or "") and not search_steps[1].chunks
    assert result.stopped_by == "answer" and result.answer.citations


def test_token_budget_stops_before_a_call_would_overrun(ws: Workspace) -> None:
    llm = ScriptedChatModel(replies=[search_call("otters"), "Otters eat crayfish [1]."])
    first_prompt = sum(
        len(m.text.split()) for m in ws.agent(llm=ScriptedChatModel(replies=["x"])).initial("q?")
    )
    budget = first_prompt + 50 + 20  # room for the first call (with 50 new tokens) only
    result = ws.agent(llm=llm, token_budget=budget, max_new_tokens=50, first_search=False).invoke("q?")
    assert result.stopped_by == "budget"
    assert len(llm.calls) == 1 and result.tokens <= budget
    assert result.answer.abstained and result.answer.answer == NO_ANSWER and not result.answer.citations


def test_a_prompt_over_the_context_window_stops_like_the_budget(ws: Workspace) -> None:
    llm = ScriptedChatModel(replies=[search_call("otters"), "Otters eat crayfish [1]."], context_window=120)
    result = ws.agent(llm=llm, max_new_tokens=40, first_search=False).invoke("q?")
    assert result.stopped_by == "budget" and len(llm.calls) == 1  # the search results would not fit
    assert result.answer.abstained


def test_bad_calls_go_back_to_the_model_as_errors(ws: Workspace) -> None:
    replies = [
        "<tool_call>{name: search}</tool_call>"
        + format_tool_call("fetch_web", {"url": "x"})
        + format_tool_call("read", {"source": "nowhere.txt", "page": 1})
        + format_tool_call("search", {"query": "otters", "k": 99}),
        "I don't know.",
    ]
    llm = ScriptedChatModel(replies=replies)
    result = ws.agent(llm=llm, first_search=False).invoke("What do otters eat?")
    tools = [s for s in result.steps if s.kind == "tool"]
    assert [s.tool for s in tools] == [None, "fetch_web", "read", "search"]
    assert all(s.error for s in tools)
    assert "invalid JSON" in (tools[0].error or "")
    assert "unknown tool 'fetch_web'" in (tools[1].error or "") and "search" in (tools[1].error or "")
    assert "nowhere.txt" in (tools[2].error or "")
    assert "k" in (tools[3].error or "")
    errors = [m for m in llm.calls[1] if isinstance(m, ToolMessage)]
    assert len(errors) == 4 and all(m.status == "error" for m in errors)
    assert result.stopped_by == "answer" and result.answer.abstained


def test_read_list_and_filtered_search_tools(ws: Workspace) -> None:
    tools = {t.name: t for t in build_tools(ws, SourceBook())}
    listing = tools["list_documents"].invoke({})
    assert "otters.txt" in listing and "pump.txt" in listing
    source = next(d.source for d in ws.documents() if d.source.endswith("pump.txt"))
    page = tools["read"].invoke({"source": source, "page": 1})
    assert "Ada Quill" in page and page.startswith("[1] (")
    assert "no page 4" in tools["read"].invoke({"source": source, "page": 4})
    only = tools["search"].invoke({"query": "otters", "source": source})
    assert "Ada Quill" in only and "crayfish" not in only
    summary = tools["summarize"].invoke({"source": source, "method": "stuff"})
    assert "pump" in summary.lower()
    assert page_range("2-5") == (2, 5) and page_range("3") == (3, 3) and page_range(None) == (None, None)


def test_first_search_is_done_for_the_model_and_an_answer_from_memory_is_flagged(ws: Workspace) -> None:
    llm = ScriptedChatModel(replies=["Otters eat crayfish [1]."])
    result = ws.agent(llm=llm, plan=False).invoke("What do the otters eat?")
    assert [(s.kind, s.tool) for s in result.steps] == [("tool", "search"), ("model", None)]
    assert result.steps[0].arguments == {"query": "What do the otters eat?"} and result.steps[0].chunks
    assert [type(m).__name__ for m in llm.calls[0]][-2:] == ["AIMessage", "ToolMessage"]
    assert result.answer.citations and result.answer.support and result.answer.support > 0.5
    memory = ws.agent(llm=ScriptedChatModel(replies=["Otters eat fish."]), first_search=False)
    flagged = memory.invoke("What do the otters eat?").answer
    assert not flagged.citations and flagged.support == 0.0
    assert grounding_note(flagged) is not None


def test_the_fake_backend_runs_an_agent_end_to_end(ws: Workspace) -> None:
    result = ws.agent(first_search=False).invoke("When do the river otters eat crayfish?")
    assert [s.tool for s in result.steps if s.kind == "tool"] == ["search"]
    assert "crayfish" in result.answer.answer
    assert [Path(c.source).name for c in result.answer.citations] == ["otters.txt"]


def test_a_plan_searches_each_part_and_answers_like_the_chain(ws: Workspace, tmp_path: Path) -> None:
    """With `plan`: one model call without tools names the searches; each runs beside the question's
    own search (list marks stripped, the question itself and repeats dropped); then each part of the
    question is answered alone from the best sentences of everything found, with the QA chain's
    short prompt, no tool loop, no evidence gate (no one chunk holds both parts), and the answers are
    joined, cited to both documents."""
    more = tmp_path / "more"
    more.mkdir()
    (more / "ferry.txt").write_text("The Marrow ferry\n\nIts boiler is serviced every spring by Ada Quill.\n")
    (more / "heron.txt").write_text("Grey herons\n\nThe grey herons of Glenmore eat eels at dusk.\n")
    ws.ingest([more])
    plan = "1. ferry boiler service\n- heron diet\n- heron diet\nWho services the ferry's boiler and what do herons eat?"
    llm = ScriptedChatModel(replies=[plan, "Ada Quill services the boiler.", "The herons eat eels."])
    question = "Who services the ferry's boiler and what do herons eat?"
    result = ws.agent(llm=llm, plan=True).invoke(question)
    kinds = [(s.kind, s.tool) for s in result.steps]
    assert kinds == [
        ("model", None),
        ("tool", "search"),
        ("tool", "search"),
        ("tool", "search"),
        ("model", None),
        ("model", None),
    ]
    queries = [s.arguments["query"] for s in result.steps if s.kind == "tool"]
    assert queries == [question, "ferry boiler service", "heron diet"]
    assert len(llm.calls) == 3 and not any(o.get("tools") for o in llm.options)  # no tool loop, no retry
    asked = [call[-1].text for call in llm.calls[1:]]  # the QA chain's prompts, a part each
    assert "Who services the ferry's boiler?" in asked[0] and "What do herons eat?" in asked[1]
    assert all("Ada Quill" in shown and "eels" in shown for shown in asked)
    answer = result.answer
    assert not answer.abstained and answer.retried is None
    assert {Path(c.source).name for c in answer.citations} == {"ferry.txt", "heron.txt"}
    assert result.stopped_by == "answer" and result.tokens == sum(s.tokens for s in result.steps) > 0


def test_a_plan_over_the_budget_abstains_without_answering(ws: Workspace) -> None:
    llm = ScriptedChatModel(replies=["otters\npump", "never asked"])
    result = ws.agent(llm=llm, plan=True, token_budget=200).invoke(
        "Who services the pump and what do otters eat?"
    )
    assert result.stopped_by == "budget" and result.answer.abstained and len(llm.calls) == 1


def test_plan_queries_reads_lists_and_refuses_what_is_not_a_search() -> None:
    from lectern.rag.agent import plan_queries

    text = '1) "Anders Celsius birthplace"\n* Henri Becquerel\nSearch 3: Volta\n\n' + "x" * 300 + "\nfourth"
    assert plan_queries(text, "Where were Celsius and Becquerel born?") == [
        "Anders Celsius birthplace",
        "Henri Becquerel",
        "Volta",
    ]
    assert plan_queries("Where was he born?\n", "where was  he born?") == []
    assert plan_queries("", "q") == []


# Issue 23: what the default model's plans looked like, and what each should search.
QUESTION = "Where were Gustav Klimt and Piet Mondrian born?"
KLIMT = (
    "Gustav Klimt\n\nGustav Klimt was born in Baumgarten, near Vienna. Klimt's father Ernst was born in "
    "Bohemia. Klimt's mother Anna was born in Vienna. His brother Ernst Klimt was born in 1864. His brother "
    "Georg Klimt was born in 1867. Klimt's daughter was born in 1899. Klimt's son Gustav was born in 1912. "
    "Klimt died in Vienna in 1918.\n"
)
MONDRIAN = (
    "Piet Mondrian\n\nPiet Mondrian was a Dutch painter of abstract grids. He was born in Amersfoort in "
    "the Netherlands. He moved to Paris in 1911 and to New York in 1940.\n"
)


@pytest.mark.parametrize(
    ("plan", "question", "expected"),
    [
        ("Google Images, Wikipedia articles", QUESTION, []),
        ("Here are the searches:\n- Google Maps\n- Wikipedia", QUESTION, []),
        (
            "Searches: Koalas, giant pandas",
            "What do koalas and giant pandas eat?",
            ["Koalas", "giant pandas"],
        ),
        ("Gustav Klimt and Piet Mondrian", QUESTION, ["Gustav Klimt", "Piet Mondrian"]),
        (
            'Google Search: "Gustav Klimt birthplace"\nQuery 2: Piet Mondrian',
            QUESTION,
            ["Gustav Klimt birthplace", "Piet Mondrian"],
        ),
        (
            "1. **Gustav Klimt** Wikipedia\n2) Search for Piet Mondrian on Google",
            QUESTION,
            ["Gustav Klimt", "Piet Mondrian"],
        ),
        (
            "Anders Celsius: https://www.britannica.com/biography/Anders-Celsius\nhttps://en.wikipedia.org/wiki/X",
            "Where was Anders Celsius born?",
            ["Anders Celsius"],
        ),
        (f"{QUESTION}\nWhere were Gustav Klimt and Piet Mondrian born", QUESTION, []),  # the question again
        ("I don't know based on the documents.", QUESTION, []),
    ],
)
def test_plan_queries_reads_the_plans_the_default_model_wrote(
    plan: str, question: str, expected: list[str]
) -> None:
    from lectern.rag.agent import plan_queries

    assert plan_queries(plan, question) == expected


@pytest.mark.parametrize(
    ("question", "names", "comparison"),
    [
        (QUESTION, ("Gustav Klimt", "Piet Mondrian"), False),
        (
            "In what years were Ulysses S. Grant and Gerald Ford born?",
            ("Ulysses S. Grant", "Gerald Ford"),
            False,
        ),
        (
            "Which numbered presidents of the United States were Abraham Lincoln and Calvin Coolidge?",
            ("Abraham Lincoln", "Calvin Coolidge"),
            False,
        ),
        (
            "When did Ghana gain independence from the United Kingdom, and since when has Egypt been a republic?",
            ("Ghana", "Egypt"),
            False,
        ),
        (
            "Where were Leonardo da Vinci and Vincent van Gogh born?",
            ("Leonardo da Vinci", "Vincent van Gogh"),
            False,
        ),
        ("What do koalas and giant pandas eat?", ("koalas", "giant pandas"), False),
        ("Who was born first, Pablo Picasso or El Greco?", ("Pablo Picasso", "El Greco"), True),
        # one subject asked two things: no list of subjects
        ("Who assassinated Abraham Lincoln, and in which county was Lincoln born?", (), False),
        (
            "What device did Alessandro Volta improve in 1775, and when did he teach at the Como school?",
            (),
            False,
        ),
        ("Who assassinated the president who signed the National Banking Act of 1863?", (), False),
        ("Which physicist shared the 1903 Nobel Prize with Pierre and Marie Curie?", (), False),
    ],
)
def test_question_subjects_are_found_without_a_model(
    question: str, names: tuple[str, ...], comparison: bool
) -> None:
    from lectern.rag.plan import question_subjects

    found = question_subjects(question)
    assert found.names == names and found.comparison == comparison


COLLEGE = (
    "The College of William and Mary is a public university in Williamsburg, Virginia. "
    "It was founded in 1693 by letters patent issued by King William III and Queen Mary II.\n\n"
    "William and Mary is the second-oldest institution of higher education in the United States."
)


@pytest.mark.parametrize(
    ("question", "passages", "names"),
    [
        # said as one name by the documents: one subject
        ("When was the College of William and Mary founded?", COLLEGE.split("\n\n"), ()),
        ("Who founded William and Mary?", COLLEGE.split("\n\n"), ()),
        # said so once only (the college's name is said twice above), or not at all: still two
        ("Who founded William and Mary?", ["William and Mary is a college."], ("William", "Mary")),
        (QUESTION, ["Gustav Klimt and Egon Schiele.", "Klimt and Mondrian both painted trees."] * 2,
         ("Gustav Klimt", "Piet Mondrian")),
        # a comparison is two subjects whatever the documents say
        ("Which is older, William or Mary?", COLLEGE.split("\n\n"), ("William", "Mary")),
    ],
)  # fmt: skip
def test_two_names_the_documents_say_as_one_are_one_subject(
    question: str, passages: list[str], names: tuple[str, ...]
) -> None:
    from lectern.rag.plan import question_subjects

    assert question_subjects(question, passages).names == names


def test_the_agent_asks_about_a_name_with_and_in_it_as_one_subject(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "college"
    folder.mkdir()
    (folder / "william_and_mary.txt").write_text(COLLEGE)
    ws.ingest([folder])
    llm = ScriptedChatModel(replies=["College of William and Mary", "It was founded in 1693 [1]."])
    result = ws.agent(llm=llm).invoke("When was the College of William and Mary founded?")
    assert len(llm.calls) == 2  # the plan, then one answer: not one per "subject"
    assert result.subjects == [] and not result.missing
    assert not result.answer.abstained and "1693" in result.answer.answer


def test_an_unusable_plan_falls_back_to_the_question_s_subjects() -> None:
    from lectern.rag.plan import Subject, plan_subjects

    assert plan_subjects("Google Images, Wikipedia articles", QUESTION) == [
        Subject("Gustav Klimt", "Gustav Klimt"),
        Subject("Piet Mondrian", "Piet Mondrian"),
    ]
    # a usable plan's searches are kept for the subjects they name; a missing subject is added
    assert plan_subjects("Gustav Klimt birthplace\nGustav Klimt", QUESTION) == [
        Subject("Gustav Klimt", "Gustav Klimt birthplace"),
        Subject("Piet Mondrian", "Piet Mondrian"),
    ]
    # a question naming no list of subjects: its names, when the plan has nothing
    assert plan_subjects("Google Maps", "Who designed the Marrow Point lighthouse tower?") == [
        Subject("Marrow Point", "Marrow Point")
    ]


def _ctx(number: int, title: str, text: str) -> Context:
    return Context(number=number, chunk_id=f"c{number}", source=f"{title}.txt", title=title, text=text)


def test_each_planned_search_keeps_its_own_best_sentences() -> None:
    """Seven of Klimt's sentences share "born" with the question and his chunk ranks first, so the
    six best sentences of all that was found hold none of Mondrian's; his search's quota keeps his."""
    from lectern.rag.plan import Subject
    from lectern.rag.subjects import quota_sentences

    klimt, mondrian = (
        _ctx(1, "Gustav Klimt", KLIMT.split("\n\n")[1]),
        _ctx(2, "Piet Mondrian", MONDRIAN.split("\n\n")[1]),
    )
    alone = select_sentences(QUESTION, [klimt, mondrian])
    assert "Amersfoort" not in " ".join(c.text for c in alone)  # what the agent showed before
    shown = quota_sentences(
        QUESTION,
        [klimt, mondrian],
        [
            (Subject("Gustav Klimt", "Gustav Klimt"), [klimt]),
            (Subject("Piet Mondrian", "Piet Mondrian"), [mondrian]),
        ],
    )
    assert [c.number for c in shown] == [1, 2] and all(c.excerpt for c in shown)
    assert "born in Amersfoort" in shown[1].text and "born in Baumgarten" in shown[0].text
    assert shown[0].text.count("Gustav Klimt was born in Baumgarten") == 1  # chosen twice, shown once


@pytest.fixture
def painters(ws: Workspace, tmp_path: Path) -> Workspace:
    more = tmp_path / "painters"
    more.mkdir()
    (more / "klimt.txt").write_text(KLIMT)
    (more / "mondrian.txt").write_text(MONDRIAN)
    ws.ingest([more])
    return ws


def _queries(result: AgentResult) -> list[str]:
    return [s.arguments["query"] for s in result.steps if s.kind == "tool"]


def test_a_website_plan_still_searches_each_subject_and_each_is_asked_about_alone(
    painters: Workspace,
) -> None:
    klimt, mondrian = "Gustav Klimt was born in Baumgarten [1].", "Piet Mondrian was born in Amersfoort [1]."
    llm = ScriptedChatModel(replies=["Google Images, Wikipedia articles", klimt, mondrian])
    result = painters.agent(llm=llm).invoke(QUESTION)
    assert _queries(result) == [QUESTION, "Gustav Klimt", "Piet Mondrian"]
    assert len(llm.calls) == 3  # the plan, then one answer per subject
    asked_klimt, asked_mondrian = llm.calls[1][-1].text, llm.calls[2][-1].text
    assert "Where were Gustav Klimt born?" in asked_klimt and "born in Baumgarten" in asked_klimt
    assert "Where were Piet Mondrian born?" in asked_mondrian and "born in Amersfoort" in asked_mondrian
    assert "Amersfoort" not in asked_klimt  # each over its own passages
    answer = result.answer
    assert (
        not answer.abstained and result.subjects == ["Gustav Klimt", "Piet Mondrian"] and not result.missing
    )
    assert (
        answer.answer.startswith("Gustav Klimt was born in Baumgarten") and "Amersfoort [2]" in answer.answer
    )
    by_number = {c.number: Path(c.source).name for c in answer.contexts}
    assert {c.number: Path(c.source).name for c in answer.citations} == {1: "klimt.txt", 2: "mondrian.txt"}
    assert by_number[1] == "klimt.txt" and by_number[2] == "mondrian.txt"  # numbered once, in turn


class ByQuestion(ScriptedChatModel):
    """Replies to a question that holds a key of `by` with its reply (asked again, the same again),
    else with `replies` in turn."""

    by: dict[str, str]

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        asked = messages[-1].text
        reply = next((r for key, r in self.by.items() if key in asked), None)
        if reply is None:
            return super()._generate(messages, stop, run_manager, **kwargs)
        self.calls.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


@pytest.mark.parametrize(
    ("klimt", "mondrian", "missing"),
    [
        (
            "Gustav Klimt was born in Baumgarten.",
            "Piet Mondrian was born in Baumgarten.",
            ["Piet Mondrian"],
        ),  # one's fact for both
        ("Baumgarten.", "Baumgarten.", ["Piet Mondrian"]),
        ("Gustav Klimt was born in Baumgarten.", NO_ANSWER, ["Piet Mondrian"]),  # nothing for Mondrian
        ("Paris.", "Piet Mondrian was born in Amersfoort.", ["Gustav Klimt"]),  # Mondrian's city, not Klimt's
    ],
)
def test_an_answer_that_gives_a_subject_no_fact_of_its_own_abstains(
    painters: Workspace, klimt: str, mondrian: str, missing: list[str]
) -> None:
    llm = ByQuestion(
        replies=["Gustav Klimt\nPiet Mondrian"],
        by={"Where were Gustav Klimt born?": klimt, "Where were Piet Mondrian born?": mondrian},
    )
    result = painters.agent(llm=llm).invoke(QUESTION)
    answer = result.answer
    assert answer.abstained and answer.abstained_by == "missing_subject" and answer.answer == NO_ANSWER
    assert not answer.citations and result.missing == missing and klimt in answer.raw


def test_joined_answers_number_each_passage_once() -> None:
    from lectern.rag.agent import joined
    from lectern.rag.types import Citation

    def ctx(number: int, chunk: str, text: str) -> Context:
        return Context(number=number, chunk_id=chunk, source=f"{chunk}.txt", text=text)

    def answer(text: str, contexts: list[Context], cited: list[int]) -> Answer:
        by_number = {c.number: c for c in contexts}
        return Answer(question="q", answer=text, contexts=contexts,
                      citations=[Citation.from_context(by_number[n]) for n in cited])  # fmt: skip

    shared = "Both lived in Paris."  # a passage both answers were shown, at other numbers
    first = answer("A was born in X [2].", [ctx(1, "c", shared), ctx(2, "a", "A: X.")], [2])
    second = answer("B was born in Y [1][2].", [ctx(1, "b", "B: Y."), ctx(2, "c", shared)], [1, 2])
    both = joined("q", [first, second])
    assert both.answer == "A was born in X [2]. B was born in Y [3][1]."
    assert [(c.number, c.chunk_id) for c in both.contexts] == [(1, "c"), (2, "a"), (3, "b")]
    assert [(c.number, c.chunk_id) for c in both.citations] == [(2, "a"), (3, "b"), (1, "c")]


def test_a_question_of_two_parts_about_one_subject_asks_each_part_alone(painters: Workspace) -> None:
    born, died = "Gustav Klimt was born in Baumgarten.", "Klimt died in Vienna in 1918."
    question = "Where was Gustav Klimt born, and in what year did he die?"
    llm = ByQuestion(
        replies=["Gustav Klimt"],
        by={"Where was Gustav Klimt born?": born, "In what year did Gustav Klimt die?": died},
    )
    result = painters.agent(llm=llm).invoke(question)
    assert len(llm.calls) == 3  # the plan and each part
    assert not result.answer.abstained and result.answer.answer.replace(" [1]", "") == f"{born} {died}"
    assert {Path(c.source).name for c in result.answer.citations} == {"klimt.txt"}

    unsure = ByQuestion(
        replies=["Gustav Klimt"], by={"Where was Gustav Klimt born?": born, "die?": NO_ANSWER}
    )
    withdrawn = painters.agent(llm=unsure).invoke(question).answer
    assert withdrawn.abstained and withdrawn.abstained_by == "model" and withdrawn.answer == NO_ANSWER


def test_a_question_about_each_subject() -> None:
    from lectern.rag.plan import question_subjects, subject_question

    def each(question: str) -> list[str]:
        subjects = question_subjects(question)
        return [subject_question(question, subjects, name) for name in subjects.names]

    assert each("In what years did James Watt and Isaac Newton die?") == [
        "In what years did James Watt die?", "In what years did Isaac Newton die?"
    ]  # fmt: skip
    assert each("When did Ghana gain independence, and since when has Egypt been a republic?") == [
        "When did Ghana gain independence?", "since when has Egypt been a republic?"
    ]  # fmt: skip


def test_the_parts_of_a_question_about_one_subject() -> None:
    from lectern.rag.plan import question_parts

    assert question_parts("What device did Alessandro Volta improve, and in what year did he die?") == [
        "What device did Alessandro Volta improve?", "In what year did Alessandro Volta die?"
    ]  # fmt: skip
    assert question_parts("Where were Gustav Klimt and Piet Mondrian born?") == []  # two subjects, one part
    assert question_parts("Who wrote Hamlet, and why?") == []  # "why" is no question alone


@pytest.mark.parametrize(
    "question",
    [
        "Which is older, Gustav Klimt or Piet Mondrian?",  # a comparison wants both at once
        "Were Gustav Klimt and Piet Mondrian born in Vienna?",  # so does a yes/no question
        "What are the similarities between beetles and grasshoppers?",  # a relation: no one subject's
    ],
)
def test_a_question_that_wants_its_subjects_together_is_asked_whole(question: str) -> None:
    from lectern.rag.plan import question_subjects, questions_apart

    assert questions_apart(question, question_subjects(question)) == []


def test_a_subject_nothing_was_found_for_abstains_without_asking_for_an_answer(painters: Workspace) -> None:
    llm = ScriptedChatModel(replies=["Gustav Klimt\nFrida Kahlo", "Both were born in Baumgarten."])
    result = painters.agent(llm=llm).invoke("Where were Gustav Klimt and Frida Kahlo born?")
    assert _queries(result)[1:] == ["Gustav Klimt", "Frida Kahlo"]
    assert len(llm.calls) == 1 and result.missing == ["Frida Kahlo"]
    assert result.answer.abstained and result.answer.abstained_by == "missing_subject"
    assert result.answer.contexts  # what was found is still shown to the reader


def test_a_comparison_names_one_subject_and_is_not_faulted(painters: Workspace) -> None:
    llm = ScriptedChatModel(replies=["Gustav Klimt\nPiet Mondrian", "Gustav Klimt."])
    result = painters.agent(llm=llm).invoke("Who was born first, Gustav Klimt or Piet Mondrian?")
    assert not result.answer.abstained and not result.missing


@pytest.mark.parametrize(
    "answer_text",
    [
        "Gustav Klimt was born in Baumgarten, and Mondrian in Amersfoort [2].",
        "Baumgarten and Amersfoort.",
        "Klimt was born in Baumgarten. He died in Vienna. Mondrian was born in Amersfoort.",
        "Klimt and Mondrian were born in Baumgarten and Amersfoort respectively.",
    ],
)
def test_an_answer_giving_each_subject_its_own_fact_passes(answer_text: str) -> None:
    from lectern.rag.plan import question_subjects
    from lectern.rag.subjects import misattributed

    shown = [
        _ctx(1, "Gustav_Klimt", KLIMT.split("\n\n")[1]),
        _ctx(2, "Piet_Mondrian", MONDRIAN.split("\n\n")[1]),
    ]
    chunks = {c.chunk_id: c for c in shown}
    assert misattributed(answer_text, QUESTION, question_subjects(QUESTION), shown, chunks) == []
    wrong = "Klimt was born in Baumgarten, and Mondrian in Vienna."  # Vienna is Klimt's, not Mondrian's
    assert misattributed(wrong, QUESTION, question_subjects(QUESTION), shown, chunks) == ["Piet Mondrian"]
    both = "Klimt and Mondrian were both born in Paris."  # Mondrian moved to Paris; Klimt never did
    assert misattributed(both, QUESTION, question_subjects(QUESTION), shown, chunks) == ["Gustav Klimt"]


def test_a_subject_named_in_its_own_fact_is_not_faulted() -> None:
    from lectern.rag.plan import question_subjects
    from lectern.rag.subjects import misattributed

    question = "Which rivers do London and Ottawa lie on?"
    shown = [
        _ctx(1, "London", "London lies on the River Thames, on its north bank and its south bank."),
        _ctx(2, "Ottawa", "Ottawa lies on the south bank of the Ottawa River."),
    ]
    chunks = {c.chunk_id: c for c in shown}
    answer = "London lies on the Thames and Ottawa on the Ottawa River."
    assert misattributed(answer, question, question_subjects(question), shown, chunks) == []
    # words every subject's passages hold ("lies", "bank") tell nothing: the answer's other words must be theirs
    unfounded = "The south bank of the Amazon."
    assert misattributed(unfounded, question, question_subjects(question), shown, chunks) == [
        "London",
        "Ottawa",
    ]


def test_a_subject_s_opening_sentence_and_its_dates_count_as_its_facts() -> None:
    """An article's opening names its subject and gives its dates without the question's words
    ("born" is not in it), so no selection by words finds it: each subject's quota starts with it.
    A year in the answer is that subject's fact when its passage writes the whole date."""
    from lectern.rag.plan import Subject, question_subjects
    from lectern.rag.subjects import misattributed, quota_sentences

    question = "In what years were Alessandro Volta and Amedeo Avogadro born?"
    volta = _ctx(
        1,
        "Alessandro_Volta",
        "Alessandro_Volta\n\nCount Alessandro Volta (February 18, 1745 - March 5, 1827) was an Italian "
        "physicist. In 1779 he became professor of physics at Pavia. He was born a noble. "
        "His years in Como were quiet.",
    )
    avogadro = _ctx(2, "Amedeo Avogadro", "Amedeo Avogadro was born in Turin on August 9, 1776.")
    searches = [(Subject("Alessandro Volta", "Alessandro Volta"), [volta]),
                (Subject("Amedeo Avogadro", "Amedeo Avogadro"), [avogadro])]  # fmt: skip
    shown = quota_sentences(question, [avogadro, volta], searches, quota=1)
    assert "1745" in " ".join(c.text for c in shown)
    answer = "Alessandro Volta was born in 1745 and Amedeo Avogadro in 1776."
    chunks = {c.chunk_id: c for c in (volta, avogadro)}
    assert misattributed(answer, question, question_subjects(question), shown, chunks) == []


@pytest.mark.parametrize(
    ("question", "first", "then"),
    [
        (
            "Which painter was born in Amersfoort, and to which city did he move in 1911?",
            "Which painter was born in Amersfoort?",
            "To which city did ENTITY move in 1911?",
        ),
        (  # an adjective before the kind asked for, and "that" with the kind
            "Which Dutch painter moved to Paris in 1911, and where was that painter born?",
            "Which Dutch painter moved to Paris in 1911?",
            "Where was ENTITY born?",
        ),
        ("What is the capital of Finland, and when was it founded?", "What is the capital of Finland?",
         "When was ENTITY founded?"),
        ("Whom did Calvin Coolidge marry, and what was her job?", "Whom did Calvin Coolidge marry?",
         "What was ENTITY's job?"),
        ("Who was the first keeper of the light, and when did he retire?", "Who was the first keeper of the light?",
         "When did ENTITY retire?"),
        ("Which city hosted the fair, and what is that city's river?", "Which city hosted the fair?",
         "What is ENTITY's river?"),
    ],
)  # fmt: skip
def test_a_second_part_about_the_first_part_s_answer_is_a_bridge(
    question: str, first: str, then: str
) -> None:
    from lectern.rag.plan import bridge

    found = bridge(question)
    assert found is not None and found.first == first and found.then("ENTITY") == then


@pytest.mark.parametrize(
    "question",
    [
        "What device did Alessandro Volta improve, and in what year did he die?",  # "he" is Volta, no device
        "Who was Abraham Lincoln, and when was he born?",  # asks about the one it names
        "Where was Gustav Klimt born, and in what year did he die?",  # asks no thing of a kind first
        "Who assassinated Abraham Lincoln, and in which county was Lincoln born?",  # no reference
        "Where were Gustav Klimt and Piet Mondrian born?",  # one part
        "What does the word Ghana mean, and into how many regions is it divided?",  # "what does": no kind
    ],
)
def test_a_question_whose_second_part_does_not_ask_about_the_first_answer_is_no_bridge(question: str) -> None:
    from lectern.rag.plan import bridge

    assert bridge(question) is None


def test_the_entity_a_bridge_s_first_answer_names() -> None:
    from lectern.rag.plan import bridge

    found = bridge("Which painter was born in Amersfoort, and to which city did he move in 1911?")
    assert found is not None
    assert found.entity("The painter born in Amersfoort was Piet Mondrian [2].") == "Piet Mondrian"
    assert found.entity("A painter was born in Amersfoort [1].") is None  # names nothing new
    assert (
        found.entity("Piet Mondrian Pieter Cornelis Mondriaan [1].")
        == "Piet Mondrian Pieter Cornelis Mondriaan"
    )
    assert found.entity("Piet Mondrian Pieter Cornelis Piet Mondrian was.") == "Piet Mondrian"  # said twice


BRIDGE = "Which painter was born in Amersfoort, and to which city did he move in 1911?"


def test_a_bridge_asks_its_first_part_then_searches_and_asks_about_the_answer(painters: Workspace) -> None:
    first, then = "Piet Mondrian was born in Amersfoort.", "Piet Mondrian moved to Paris in 1911."
    llm = ByQuestion(
        replies=["Amersfoort painter"],
        by={
            "Which painter was born in Amersfoort?": first,
            "To which city did Piet Mondrian move in 1911?": then,
        },
    )
    result = painters.agent(llm=llm).invoke(BRIDGE)
    assert len(llm.calls) == 3  # the plan, the first part, the second about its answer
    assert _queries(result)[-1] == "To which city did Piet Mondrian move in 1911?"  # searched by name
    assert "moved to Paris in 1911" in llm.calls[2][-1].text  # what that search found was shown
    answer = result.answer
    assert not answer.abstained and re.sub(r" \[\d+\]", "", answer.answer) == f"{first} {then}"
    assert {Path(c.source).name for c in answer.citations} == {"mondrian.txt"}


def test_a_bridge_whose_first_part_is_not_found_abstains_without_asking_the_second(
    painters: Workspace,
) -> None:
    llm = ByQuestion(replies=["Amersfoort painter"], by={"Which painter was born in Amersfoort?": NO_ANSWER})
    result = painters.agent(llm=llm).invoke(BRIDGE)
    assert len(llm.calls) == 2 and result.answer.abstained and result.answer.answer == NO_ANSWER


def test_a_bridge_whose_first_answer_names_no_one_abstains(painters: Workspace) -> None:
    vague = "A painter was born in Amersfoort."  # "he" in the second part cannot be resolved
    llm = ByQuestion(replies=["Amersfoort painter"], by={"Which painter was born in Amersfoort?": vague})
    result = painters.agent(llm=llm).invoke(BRIDGE)
    assert not any("move in 1911" in c[-1].text for c in llm.calls[1:])  # the second part is not asked
    assert result.answer.abstained and result.answer.abstained_by == "missing_subject"
    assert len(_queries(result)) == 2  # the question's and the plan's: no search for the second part
