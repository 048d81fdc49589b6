"""Summaries checked against their passages: citations per sentence, unsupported sentences marked or
dropped, faithfulness (rag.faithful through rag.summarize.summarize)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

from lectern.errors import UnknownKey
from lectern.rag.faithful import NOT_IN_SOURCES, WRONG_NUMBER, check_sentences, note, number_contexts
from lectern.rag.summarize import summarize
from lectern.rag.types import UNSUPPORTED_FLAG, SummaryResult
from tests.rag.test_window import WindowFake, make_doc

PAGES = [
    "A light on Caskell Bay. Marrow Point is a low headland of dark granite at the northern mouth of "
    "Caskell Bay. The Marrow Point Light was first lit on the evening of 14 October 1852.",
    "Building the tower. The tower was designed by the engineer Edith Varley. The stone came from the "
    "quarry at Hollin Ridge. Building took four summers, from 1848 to 1851, and cost 11,400 pounds.",
    "Automation and the museum. The light was automated in 1968. The museum is open every day except "
    "Tuesdays. Visitors may climb the 143 steps of the tower to the gallery.",
]
TRUE = "The tower was designed by the engineer Edith Varley."
MADE_UP = "The lighthouse was painted purple by pirates in 1999."


def pages() -> list[Document]:
    return [make_doc(i, text, page=i) for i, text in enumerate(PAGES, start=1)]


def summary_of(reply: str, **options: object) -> SummaryResult:
    llm = WindowFake(context_window=2000, reply=lambda user: reply)
    return summarize(llm, pages(), max_new_tokens=100, **options)  # type: ignore[arg-type]


def test_a_made_up_sentence_is_flagged_and_the_true_one_cites_its_passage() -> None:
    result = summary_of(f"{TRUE} {MADE_UP}", method="map_reduce")
    assert result.method == "stuff" and result.chunks == 3
    true, made_up = result.sentences
    assert (true.text, true.sources, true.supported) == (TRUE, [2], True)
    assert true.support == 1.0
    assert (made_up.text, made_up.sources, made_up.problem) == (MADE_UP, [], NOT_IN_SOURCES)
    assert made_up.support < 0.6
    assert result.unsupported == [MADE_UP] and result.faithfulness == 0.5
    assert result.summary == f"{TRUE} {MADE_UP}"  # marked, not dropped: the model's words are kept
    assert result.marked() == f"{TRUE} [2] {MADE_UP} {UNSUPPORTED_FLAG}"
    [citation] = result.citations
    assert (citation.number, citation.chunk_id, citation.page) == (2, "c2", 2)
    assert citation.highlights == [TRUE]  # the passage's sentence that holds it
    assert note(result) == (
        f"1 of 2 sentences found in the sources (50%); 1 not, marked {UNSUPPORTED_FLAG}: "
        "check it against the passages"
    )
    dumped = SummaryResult.model_validate_json(result.model_dump_json())
    assert dumped.unsupported == [MADE_UP] and dumped.citations == result.citations


def test_drop_leaves_the_unsupported_sentence_out_of_the_summary() -> None:
    result = summary_of(f"{MADE_UP} {TRUE}", unsupported="drop")
    assert result.dropped and result.summary == TRUE
    assert result.unsupported == [MADE_UP] and result.faithfulness == 0.5
    assert result.marked() == f"{TRUE} [2]"
    assert note(result).endswith("1 not, left out: check it against the passages")  # type: ignore[union-attr]


def test_a_faithful_summary_cites_every_sentence() -> None:
    reply = "Edith Varley designed the tower, built from 1848 to 1851 for 11,400 pounds. The museum is open every day except Tuesdays."
    result = summary_of(reply)
    assert result.faithfulness == 1.0 and result.unsupported == []
    assert [s.sources for s in result.sentences] == [[2], [3]]
    assert [c.number for c in result.citations] == [2, 3]
    assert note(result) == "2 of 2 sentences found in the sources (100%)"


def test_a_number_its_passage_does_not_state_is_flagged() -> None:
    contexts = number_contexts(pages())
    wrong, right, written = check_sentences(
        "Visitors may climb the 31 steps of the tower. Visitors may climb the 143 steps of the tower. "
        "Building took four summers, 1848-51.",
        contexts,
    )
    assert (wrong.problem, wrong.sources) == (WRONG_NUMBER, [])  # 31 is in passage 2, not the steps' 3
    assert (right.problem, right.sources) == (None, [3])
    assert written.supported  # "51" of "1848-51" is 1851


def test_the_support_threshold_is_a_choice() -> None:
    partial = "Edith Varley designed a granite tower."  # "granite" is another passage's word
    assert summary_of(partial, support=0.5).faithfulness == 1.0
    assert summary_of(partial, support=0.95).unsupported == [partial]


def test_what_says_nothing_about_the_text_is_not_judged_and_the_layout_is_kept() -> None:
    reply = f"Here is a summary of the text:\n1. {TRUE}\n2. {MADE_UP}"
    result = summary_of(reply)
    assert [s.claim for s in result.sentences] == [False, False, True, False, True]
    assert result.faithfulness == 0.5
    assert (
        result.marked() == f"Here is a summary of the text:\n1. {TRUE} [2]\n2. {MADE_UP} {UNSUPPORTED_FLAG}"
    )


def test_an_unknown_policy_for_unsupported_sentences_is_refused() -> None:
    with pytest.raises(UnknownKey, match="known: drop, mark"):
        summary_of(TRUE, unsupported="hide")


def test_the_summarizers_themselves_are_not_checked() -> None:
    from lectern.rag.summarize import stuff

    result = stuff(WindowFake(context_window=2000, reply=lambda user: MADE_UP), pages(), max_new_tokens=100)
    assert result.faithfulness is None and result.sentences == [] and result.marked() == MADE_UP
