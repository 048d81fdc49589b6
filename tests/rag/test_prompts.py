"""Prompt snapshots: every template rendered with fixed inputs must match its committed snapshot.

After an intended prompt change, regenerate with `UPDATE_SNAPSHOTS=1 pytest tests/rag/test_prompts.py`
and review the diff of tests/rag/snapshots/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from langchain_core.prompts import ChatPromptTemplate

from lectern.errors import UnknownKey
from lectern.rag.prompts import (
    ALL_PROMPTS,
    CONCISE_VARIANTS,
    CONDENSE_QUESTION,
    NO_ANSWER,
    QA_JSON,
    QA_PROMPTS,
    REFINE_STEP,
    answer_budget,
    format_sources,
    qa_prompt,
)
from lectern.rag.types import Context

SNAPSHOTS = Path(__file__).parent / "snapshots"

INPUTS = {
    "sources": format_sources(
        [
            Context(
                number=1, chunk_id="a", source="/docs/manual.pdf", page=3, text="The pump runs at 5 bar."
            ),
            Context(number=2, chunk_id="b", source="notes.md", text="Service it yearly."),
        ]
    ),
    "question": "What pressure does the pump run at?",
    "history": "User: Tell me about the pump.\nAssistant: It is a 5 bar pump [1].",
    "text": "The pump runs at 5 bar. Service it yearly.",
    "summary": "A 5 bar pump.",
}


def render(template: ChatPromptTemplate) -> str:
    values = {name: INPUTS[name] for name in template.input_variables}
    messages = template.format_messages(**values)
    return "\n".join(f"=== {m.type} ===\n{m.text}" for m in messages) + "\n"


@pytest.mark.parametrize("name", sorted(ALL_PROMPTS))
def test_prompt_matches_snapshot(name: str) -> None:
    rendered = render(ALL_PROMPTS[name])
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.is_file(), f"no snapshot for {name}: run with UPDATE_SNAPSHOTS=1"
    assert rendered == path.read_text(encoding="utf-8"), f"{name} changed: UPDATE_SNAPSHOTS=1 if intended"


def test_every_snapshot_belongs_to_a_prompt() -> None:
    assert sorted(p.stem for p in SNAPSHOTS.glob("*.txt")) == sorted(ALL_PROMPTS)


def test_sources_are_numbered_with_file_and_page() -> None:
    assert (
        INPUTS["sources"]
        == "[1] (manual.pdf p.3) The pump runs at 5 bar.\n\n[2] (notes.md) Service it yearly."
    )


def test_a_source_is_labelled_with_its_title_when_it_has_one() -> None:
    ctx = Context(
        number=2, chunk_id="a", source="/d/a1.txt", page=None, title="Alessandro Volta", text="He retired."
    )
    assert format_sources([ctx]) == "[2] (a1.txt: Alessandro Volta) He retired."
    same = ctx.model_copy(update={"title": "a1.txt"})  # a title that is only the file name is not repeated
    assert format_sources([same]) == "[2] (a1.txt) He retired."


def test_the_concise_prompt_asks_for_one_sentence_and_offers_no_way_out() -> None:
    """Abstention is decided by the evidence before the model is asked (rag.evidence): a 0.5B model
    offered the abstain sentence took it on a third of answerable questions (docs/ANSWERS.md)."""
    messages = QA_PROMPTS["concise"].format_messages(sources="S", question="Q")
    assert "one short sentence" in messages[0].text and NO_ANSWER not in messages[0].text
    assert messages[-1].text.endswith("Question: Q")


@pytest.mark.parametrize(
    ("question", "budget"),
    [
        ("Who designed it?", 48),
        ("How many sons?", 48),
        ("Why did it close?", 96),
        ("How does a pump work?", 96),
    ],
)
def test_answer_budget_by_question_type(question: str, budget: int) -> None:
    assert answer_budget(question) == budget


@pytest.mark.parametrize(
    "template", [t for name, t in QA_PROMPTS.items() if name not in CONCISE_VARIANTS] + [QA_JSON]
)
def test_qa_prompts_ask_for_citations_and_the_abstain_sentence(template: ChatPromptTemplate) -> None:
    assert set(template.input_variables) == {"sources", "question"}
    messages = template.format_messages(sources="S", question="Q")
    assert messages[0].type == "system" and messages[-1].type == "human"
    assert NO_ANSWER in messages[0].text and "[2]" in messages[0].text


def test_template_variables() -> None:
    assert set(CONDENSE_QUESTION.input_variables) == {"history", "question"}
    assert set(REFINE_STEP.input_variables) == {"summary", "text"}
    for name, template in ALL_PROMPTS.items():
        if name.startswith(("summarize", "refine_initial")):
            assert template.input_variables == ["text"], name


def test_qa_prompt_lookup() -> None:
    assert qa_prompt("few_shot") is QA_PROMPTS["few_shot"]
    assert qa_prompt("zero_shot", structured=True) is QA_JSON
    with pytest.raises(UnknownKey, match="chain_of_thought"):
        qa_prompt("five_shot")
