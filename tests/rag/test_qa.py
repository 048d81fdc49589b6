"""Cited QA: retrieval, citations, abstention, streaming, structured output, variants."""

from __future__ import annotations

import json

import pytest

from lectern.errors import UnknownKey
from lectern.rag.prompts import NO_ANSWER
from lectern.rag.qa import (
    build_qa_chain,
    grounding_note,
    is_abstention,
    parse_citations,
    split_reasoning,
    stream_answer,
)
from lectern.rag.types import QUOTE_CHARS, Answer
from tests.rag.test_window import ListRetriever, WindowFake, make_doc, words

DOCS = [
    make_doc(1, "The pump is serviced every 500 hours.", score=0.9, page=3),
    make_doc(2, "Filters come in packs of three.", score=0.7, page=None),
    make_doc(3, "The warranty lasts two years.", score=0.5, page=8),
]


# The parsing tests below drive the model's output by script; they use the whole chunks, the zero-shot
# prompt and no evidence gate (their made-up questions share no words with the sources), so the
# model always sees the sources and its reply is what is parsed. tests/rag/test_evidence.py covers
# the gate and the sentence selection.
PLAIN = {"evidence": False, "context": "chunks", "variant": "zero_shot"}


def chain(script: list[str], docs: list | None = None, **options: object) -> tuple:
    llm = WindowFake(context_window=600, script=list(script))
    retriever = ListRetriever(docs=list(DOCS if docs is None else docs))
    return build_qa_chain(llm, retriever, **{**PLAIN, **options}), llm, retriever  # type: ignore[arg-type]


def test_parse_citations_forms() -> None:
    assert parse_citations("a [2] b [1, 3] c [3][4] d [2; 5] e [x] [ 6 ]") == [2, 1, 3, 4, 5, 6]
    assert parse_citations("no citations here") == []


def test_answer_with_citations_from_a_bare_string_or_a_dict() -> None:
    qa, llm, retriever = chain(["Every 500 hours [1], filters in threes [2][1]."] * 2)
    for question in ("How often?", {"question": "How often?"}):
        answer = qa.invoke(question)
        assert isinstance(answer, Answer)
        assert answer.question == "How often?" and not answer.abstained
        assert [c.number for c in answer.citations] == [1, 2]
        first = answer.citations[0]
        assert (first.source, first.page, first.chunk_id) == ("/docs/file1.pdf", 3, "c1")
        assert first.quote == "The pump is serviced every 500 hours."
        assert [c.number for c in answer.contexts] == [1, 2, 3]
    assert retriever.queries == ["How often?", "How often?"]
    user = llm.users[0]
    assert "[1] (file1.pdf p.3: File 1) The pump is serviced every 500 hours." in user
    assert "[2] (file2.pdf: File 2) Filters come in packs of three." in user
    json.loads(answer.model_dump_json())  # JSON-serialisable


def test_citations_to_no_retrieved_source_are_dropped() -> None:
    qa, _, _ = chain(["Pump [1][7], filters [2, 9] and warranty [3]."])
    answer = qa.invoke("q?")
    assert [c.number for c in answer.citations] == [1, 2, 3]
    assert answer.dropped_citations == [7, 9]
    assert answer.answer == "Pump [1], filters [2] and warranty [3]."


def test_quote_is_trimmed_to_a_readable_length() -> None:
    qa, _, _ = chain(["Long [1]."], docs=[make_doc(1, words(300))])
    quote = qa.invoke("q?").citations[0].quote
    assert len(quote) <= QUOTE_CHARS + 1 and quote.endswith("…")


def test_no_retrieval_abstains_without_calling_the_model() -> None:
    qa, llm, _ = chain(["should not be used"], docs=[])
    answer = qa.invoke("q?")
    assert answer.abstained and answer.answer == NO_ANSWER and answer.citations == []
    assert llm.prompts == []


def test_min_score_filters_and_can_leave_nothing() -> None:
    qa, llm, _ = chain(["Warranty [1]."], min_score=0.6)
    answer = qa.invoke("q?")
    assert [c.chunk_id for c in answer.contexts] == ["c1", "c2"]
    qa, llm, _ = chain(["unused"], min_score=0.95)
    answer = qa.invoke("q?")
    assert answer.abstained and llm.prompts == []


def test_k_limits_the_sources() -> None:
    qa, llm, _ = chain(["A [1]."], k=1)
    answer = qa.invoke("q?")
    assert [c.number for c in answer.contexts] == [1]
    assert "[2]" not in llm.users[0]


@pytest.mark.parametrize(
    "reply",
    [
        NO_ANSWER,
        "I don't know based on the documents.",
        "The provided sources do not contain information about that.",
        "The documents do not contain the answer. The pump [1] is unrelated.",
        "[1] [1][3] The documents do not contain the answer.",
    ],
)
def test_the_model_saying_it_does_not_know_is_an_abstention(reply: str) -> None:
    qa, _, _ = chain([reply])
    answer = qa.invoke("Who made it?")
    assert answer.abstained and answer.answer == NO_ANSWER and answer.citations == []
    assert answer.raw == reply


def test_a_cited_answer_using_a_negative_phrase_is_not_an_abstention() -> None:
    assert not is_abstention("The report does not contain errors [1].", cited=True)
    assert is_abstention("The report does not contain that.", cited=False)
    qa, _, _ = chain(["The filter pack does not include a pump [2]."])
    assert not qa.invoke("q?").abstained


def test_stream_yields_text_then_the_answer() -> None:
    qa, _, _ = chain(["Every 500 hours [1]."])
    parts = list(qa.stream_answer("How often?"))
    *texts, final = parts
    assert len(texts) > 1 and all(isinstance(t, str) for t in texts)
    assert "".join(texts) == "Every 500 hours [1]."  # type: ignore[arg-type]
    assert isinstance(final, Answer) and [c.number for c in final.citations] == [1]


def test_stream_without_sources_yields_the_abstain_sentence() -> None:
    llm = WindowFake()
    parts = list(stream_answer(llm, ListRetriever(docs=[]), "q?"))
    assert parts[0] == NO_ANSWER and isinstance(parts[-1], Answer) and parts[-1].abstained


def test_structured_output_valid_json() -> None:
    reply = '```json\n{"answer": "Every 500 hours [1].", "citations": [1, 3, 12]}\n```'
    qa, llm, _ = chain([reply], structured=True)
    answer = qa.invoke("q?")
    assert answer.structured and answer.parse_error is None
    assert answer.answer == "Every 500 hours [1]."
    assert [c.number for c in answer.citations] == [1, 3] and answer.dropped_citations == [12]
    assert '"citations"' in llm.users[0]


def test_structured_output_invalid_json_falls_back_to_text() -> None:
    qa, _, _ = chain(['{"answer": "Every 500 hours [1]", "citations": "two"'], structured=True)
    answer = qa.invoke("q?")
    assert answer.parse_error is not None
    assert [c.number for c in answer.citations] == [1]
    qa, _, _ = chain(['{"answer": 5, "citations": "x"}'], structured=True)
    assert qa.invoke("q?").parse_error is not None


def test_chain_of_thought_keeps_only_the_final_answer() -> None:
    raw = "Reasoning: source [1] says 500 hours.\nAnswer: Every 500 hours [1]."
    assert split_reasoning(raw) == ("source [1] says 500 hours.", "Every 500 hours [1].")
    qa, llm, _ = chain([raw], variant="chain_of_thought")
    answer = qa.invoke("q?")
    assert answer.answer == "Every 500 hours [1]." and answer.reasoning == "source [1] says 500 hours."
    assert "Reasoning:" in llm.users[0]


def test_few_shot_sends_the_examples() -> None:
    qa, llm, _ = chain(["A [1]."], variant="few_shot")
    qa.invoke("q?")
    assert len(llm.prompts[0]) == 6 and llm.prompts[0][2].type == "ai"


def test_concise_example_sends_one_worked_exchange_and_keeps_the_concise_budget() -> None:
    qa, llm, _ = chain(["The pump is serviced every 500 hours. [1]"], variant="concise_example")
    answer = qa.invoke("How often is the pump serviced?")
    roles = [m.type for m in llm.prompts[0]]
    assert roles == ["system", "human", "ai", "human"]
    assert "How often is the pump serviced?" in llm.prompts[0][-1].text
    options = qa._generation("How often is the pump serviced?")
    assert options["stop"] == ["\n\n"] and options["max_new_tokens"] == 48
    assert answer.citations and answer.citations[0].number == 1


@pytest.mark.parametrize(("sentences", "neighbours", "shown"), [(1, 0, 1), (2, 0, 2), (1, 1, 2)])
def test_the_sentence_settings_decide_what_the_model_is_shown(
    sentences: int, neighbours: int, shown: int
) -> None:
    text = "Alpha pump oil. Beta pump filter. Gamma valve. Delta pump belt. Epsilon hose."
    qa, _, _ = chain(
        ["x [1]"], docs=[make_doc(1, text)], context="sentences", sentences=sentences, neighbours=neighbours
    )
    answer = qa.invoke("Which pump oil filter?")
    [ctx] = answer.contexts
    assert ctx.excerpt and len([s for s in ctx.text.replace(" … ", " ").split(". ") if s]) == shown


def test_the_sentence_defaults_agree_between_the_settings_and_the_chain() -> None:
    from lectern.rag.sentences import NEIGHBOURS, ORDER, SENTENCES
    from lectern.rag.settings import AnswerSettings

    defaults = AnswerSettings()
    assert (defaults.sentences, defaults.neighbours, defaults.order) == (SENTENCES, NEIGHBOURS, ORDER)
    qa, _, _ = chain([])
    assert (qa.options.sentences, qa.options.neighbours, qa.options.order) == (SENTENCES, NEIGHBOURS, ORDER)


def test_unknown_variant() -> None:
    with pytest.raises(UnknownKey, match="zero_shot"):
        chain([], variant="nope")


def test_long_sources_are_fitted_into_the_window() -> None:
    docs = [make_doc(i, words(150, f"d{i}x")) for i in range(1, 6)]
    llm = WindowFake(context_window=400)  # raises if the prompt + 100 new tokens overflow
    qa = build_qa_chain(llm, ListRetriever(docs=docs), max_new_tokens=100, **PLAIN)
    answer = qa.invoke("q?")
    assert 1 <= len(answer.contexts) < 5
    assert llm.get_num_tokens_from_messages(llm.prompts[0]) <= 400 - 100


def test_empty_question_is_rejected() -> None:
    qa, _, _ = chain([])
    with pytest.raises(ValueError, match="empty"):
        qa.invoke("   ")


def test_uncited_answer_gets_inferred_citations_from_the_sources_it_used() -> None:
    qa, _, _ = chain(["Filters are sold in packs of three."])
    answer = qa.invoke("How are filters sold?")
    assert [c.number for c in answer.citations] == [2]
    assert answer.citations[0].inferred and answer.citations[0].chunk_id == "c2"
    assert answer.answer.endswith("[2]") and not answer.abstained
    assert answer.support is not None and answer.support >= 0.5


def test_uncited_answer_that_no_source_supports_gets_no_citation() -> None:
    qa, _, _ = chain(["Bananas ripen quickly in July."])
    answer = qa.invoke("How are filters sold?")
    assert answer.citations == [] and answer.support == 0.0
    assert answer.answer == "Bananas ripen quickly in July."


def test_explicit_citations_are_not_replaced_by_inferred_ones() -> None:
    qa, _, _ = chain(["The warranty lasts two years [3]."])
    answer = qa.invoke("How long is the warranty?")
    assert [(c.number, c.inferred) for c in answer.citations] == [(3, False)]
    assert answer.support == 1.0


def test_a_citation_to_a_source_without_the_answer_is_replaced_by_the_source_with_it() -> None:
    qa, _, _ = chain(["The warranty lasts two years [1]."])  # [1] is about the pump
    answer = qa.invoke("How long is the warranty?")
    assert [(c.number, c.inferred) for c in answer.citations] == [(3, True)]
    assert answer.unsupported_citations == [1]
    assert answer.answer == "The warranty lasts two years. [3]" and answer.support == 1.0


def test_a_citation_holding_part_of_the_answer_is_kept() -> None:
    """Word overlap does not weigh rare words, so a cited source with a fair share of them stays."""
    docs = [
        make_doc(1, "The engineer Edith Varley designed it."),
        make_doc(2, "A short history of Marrow Point Light."),
    ]
    qa, _, _ = chain(["Edith Varley designed it; a short history of Marrow Point Light [1]."], docs)
    answer = qa.invoke("Who designed the tower?")
    assert [(c.number, c.inferred) for c in answer.citations] == [(1, False)]
    assert answer.unsupported_citations == []


def test_right_citations_to_several_sources_are_kept() -> None:
    qa, _, _ = chain(["Filters come in packs of three [2]. The warranty lasts two years [3]."])
    answer = qa.invoke("Tell me about filters and the warranty?")
    assert [(c.number, c.inferred) for c in answer.citations] == [(2, False), (3, False)]
    assert answer.unsupported_citations == [] and "[2]" in answer.answer and "[3]" in answer.answer


def test_a_citation_no_source_supports_is_kept_and_flagged_by_its_support() -> None:
    qa, _, _ = chain(["Bananas are yellow [1]."])
    answer = qa.invoke("How long is the warranty?")
    assert [(c.number, c.inferred) for c in answer.citations] == [(1, False)]
    assert answer.support == 0.0 and grounding_note(answer) is not None


def test_each_sentence_is_cited_with_the_source_it_came_from() -> None:
    qa, _, _ = chain(["Filters come in packs of three. The warranty lasts two years. Bananas are yellow."])
    answer = qa.invoke("Tell me about filters and the warranty?")
    assert (
        answer.answer
        == "Filters come in packs of three. [2] The warranty lasts two years. [3] Bananas are yellow."
    )
    assert [(c.number, c.inferred) for c in answer.citations] == [(2, True), (3, True)]
    assert answer.support == pytest.approx(2 / 3)


def test_grounding_note_warns_only_for_weakly_supported_answers() -> None:
    from lectern.rag.qa import grounding_note

    made_up = chain(["Bananas ripen quickly in July."])[0].invoke("How are filters sold?")
    assert "may be made up" in (grounding_note(made_up) or "")
    grounded = chain(["Filters come in packs of three."])[0].invoke("How are filters sold?")
    assert grounding_note(grounded) is None
    half = chain(["Filters come in packs of three. Bananas are yellow."])[0].invoke("How are filters sold?")
    assert half.support == pytest.approx(0.5) and grounding_note(half) is None
    abstained = chain(["unused"], docs=[])[0].invoke("q?")
    assert grounding_note(abstained) is None
