"""Summaries checked against their passages: citations per sentence, unsupported sentences marked or
dropped, faithfulness, and partial summaries that pass on only what their passages support
(rag.faithful through rag.summarize.summarize)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage

from lectern.errors import UnknownKey
from lectern.rag.faithful import NOT_IN_SOURCES, WRONG_NUMBER, check_sentences, note, number_contexts
from lectern.rag.fake import ScriptedChatModel
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
    # "of the text:" would be left out before the check, as its prompt's own words (tidy, below)
    reply = f"Here is a summary of the article:\n1. {TRUE}\n2. {MADE_UP}"
    result = summary_of(reply)
    assert [s.claim for s in result.sentences] == [False, True, True]  # "1." stays with its item
    assert result.faithfulness == 0.5
    assert (
        result.marked()
        == f"Here is a summary of the article:\n1. {TRUE} [2]\n2. {MADE_UP} {UNSUPPORTED_FLAG}"
    )


def test_an_unknown_policy_for_unsupported_sentences_is_refused() -> None:
    with pytest.raises(UnknownKey, match="known: drop, mark"):
        summary_of(TRUE, unsupported="hide")


def test_the_summarizers_themselves_are_not_checked() -> None:
    from lectern.rag.summarize import stuff

    result = stuff(WindowFake(context_window=2000, reply=lambda user: MADE_UP), pages(), max_new_tokens=100)
    assert result.faithfulness is None and result.sentences == [] and result.marked() == MADE_UP


# Partial summaries: what a step wrote that its passages do not support never reaches the next step.
# Each page is its own piece at token_max 40, so each map or refine step reads one page.
LIT = "The Marrow Point Light was first lit in 1852."
MUSEUM = "The museum is open every day except Tuesdays."
WRONG_COST = "Building cost 99,000 pounds."  # page 2 says 11,400


def scripted(*replies: str) -> ScriptedChatModel:
    return ScriptedChatModel(replies=list(replies))


def last_user(messages: list[BaseMessage]) -> str:
    return messages[-1].text


def test_a_number_a_map_step_made_up_never_reaches_the_reduce() -> None:
    llm = scripted(LIT, f"{TRUE} {WRONG_COST}", MUSEUM, f"{TRUE} {MUSEUM}")
    result = summarize(llm, pages(), method="map_reduce", token_max=40, max_new_tokens=100)
    assert (result.method, result.steps, len(llm.calls)) == ("map_reduce", 4, 4)
    reduced = last_user(llm.calls[3])
    assert reduced.startswith("These are summaries")
    assert "99,000" not in reduced and WRONG_COST not in reduced
    assert LIT in reduced and TRUE in reduced and MUSEUM in reduced  # the supported sentences go on
    [withheld] = result.withheld
    assert (withheld.stage, withheld.step, withheld.text, withheld.passages, withheld.problem) == (
        "map",
        2,
        WRONG_COST,
        [2],  # checked against its own page, not the whole document
        WRONG_NUMBER,
    )
    assert result.faithfulness == 1.0  # the final summary's own check is unchanged
    assert note(result) == (
        "2 of 2 sentences found in the sources (100%). 1 sentence of the partial summaries left out "
        "before the next step: not in the passages summarized"
    )
    assert SummaryResult.model_validate_json(result.model_dump_json()).withheld == result.withheld


def test_a_part_with_nothing_supported_is_not_passed_on_and_one_part_left_needs_no_reduce() -> None:
    llm = scripted(MADE_UP, TRUE, "Pirates painted it.")
    result = summarize(llm, pages(), method="map_reduce", token_max=40, max_new_tokens=100)
    assert result.steps == len(llm.calls) == 3  # the maps only: the one part left is the summary
    assert result.summary == TRUE and result.faithfulness == 1.0
    assert [(w.step, w.problem) for w in result.withheld] == [(1, NOT_IN_SOURCES), (3, NOT_IN_SOURCES)]
    nothing = summarize(scripted(MADE_UP), pages(), method="map_reduce", token_max=40, max_new_tokens=100)
    assert nothing.summary == "" and nothing.faithfulness is None and len(nothing.withheld) == 3
    assert note(nothing) == (
        "3 sentences of the partial summaries left out before the next step: not in the passages summarized"
    )


def test_a_collapse_is_checked_against_the_passages_of_the_parts_it_combined() -> None:
    keeper = "The keeper was Tom Hollis."
    llm = scripted(
        f"{LIT} Marrow Point is a low headland of dark granite.",  # 18 words a part: 53 > token_max 40
        f"{TRUE} The stone came from the quarry at Hollin Ridge.",
        f"{MUSEUM} Visitors may climb the 143 steps of the tower.",
        f"{LIT} {TRUE} {keeper}",  # parts 1 and 2 collapsed
        MUSEUM,  # part 3
        f"{TRUE} {MUSEUM}",
    )
    result = summarize(llm, pages(), method="map_reduce", token_max=40, max_new_tokens=100)
    assert result.steps == len(llm.calls) == 6
    reduced = last_user(llm.calls[5])
    assert f"{LIT} {TRUE}" in reduced and MUSEUM in reduced and keeper not in reduced
    assert [(w.stage, w.step, w.text, w.passages) for w in result.withheld] == [
        ("collapse", 4, keeper, [1, 2])
    ]


def test_refine_drops_from_the_summary_so_far_what_the_pages_read_do_not_hold() -> None:
    keeper = "Its keeper was Tom Hollis."
    cost = "Edith Varley designed the tower for 12,000 pounds."
    llm = scripted(f"{LIT} {keeper}", f"{LIT} {cost}", f"{LIT} {TRUE} {MUSEUM}")
    result = summarize(llm, pages(), method="refine", token_max=40, max_new_tokens=100)
    assert (result.method, result.steps) == ("refine", 3)
    second, third = (last_user(call) for call in llm.calls[1:])
    assert LIT in second and keeper not in second
    assert LIT in third and "12,000" not in third
    assert [(w.stage, w.step, w.text, w.passages, w.problem) for w in result.withheld] == [
        ("refine", 1, keeper, [1], NOT_IN_SOURCES),
        ("refine", 2, cost, [1, 2], WRONG_NUMBER),  # the pages read so far
    ]
    assert result.summary == f"{LIT} {TRUE} {MUSEUM}"  # the last step's summary is the final check's


def test_refine_starts_afresh_when_nothing_of_the_summary_so_far_stands() -> None:
    llm = scripted(MADE_UP, TRUE, MUSEUM)
    result = summarize(llm, pages(), method="refine", token_max=40, max_new_tokens=100)
    assert result.steps == 3 and result.summary == MUSEUM
    assert last_user(llm.calls[1]).startswith("Summarize the beginning")  # nothing to refine
    assert last_user(llm.calls[2]).startswith("Here is a summary") and TRUE in last_user(llm.calls[2])
    assert [w.text for w in result.withheld] == [MADE_UP]


def test_what_a_step_echoes_of_its_prompt_is_not_summary() -> None:
    """A small model writes refine's instructions back into its summary (seen on S09 with the 0.5B);
    they are left out of what the step passes on and of the summary, and never judged as claims."""
    echo = (
        "Here is a summary of the text so far:\n{}\n\nRewrite the summary so that it also covers the "
        "new part. If the new part adds nothing, repeat the summary unchanged.\n{}"
    )
    llm = scripted(LIT, echo.format(LIT, TRUE), echo.format(TRUE, MUSEUM))
    result = summarize(llm, pages(), method="refine", token_max=40, max_new_tokens=100)
    assert "Rewrite" not in last_user(llm.calls[2]).split("Here is the next part")[0].split("so far:")[1]
    assert result.summary == f"{TRUE}\n{MUSEUM}" and result.faithfulness == 1.0
    assert not result.withheld and not result.unsupported


def test_a_last_sentence_cut_off_at_the_token_limit_is_left_out() -> None:
    cut = f"{TRUE} The museum is open every"
    words = len(cut.split())  # the scripted model counts whitespace words
    short = summarize(scripted(cut), pages(), method="stuff", max_new_tokens=words)
    assert short.summary == TRUE and short.faithfulness == 1.0
    # Not cut off (the model stopped before its limit): an unfinished last line is the model's own.
    room = summarize(scripted(cut), pages(), method="stuff", max_new_tokens=words + 20)
    assert room.summary == cut


@pytest.mark.parametrize(
    ("text", "cut_off", "kept"),
    [
        (
            "Rewrite the summary.\n- Varley designed it\n- Hollin Ridge stone",
            False,
            "- Varley designed it\n- Hollin Ridge stone",
        ),
        ("Summary:\n\nThe tower is 31 metres tall. It has", True, "The tower is 31 metres tall."),
        ("The tower is 31 metres tall. It has", False, "The tower is 31 metres tall. It has"),
        ('He said "it stands."', True, 'He said "it stands."'),
    ],
)
def test_tidy_keeps_the_summary_and_its_layout(text: str, cut_off: bool, kept: str) -> None:
    from lectern.rag.prompts import REFINE_STEP
    from lectern.rag.summarize import instruction_words, tidy

    assert tidy(text, instruction_words(REFINE_STEP), cut_off=cut_off) == kept
