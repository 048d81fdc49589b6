"""Citations checked against their sources: rarity-weighted support, replacement of a wrong [n],
and the sentences highlighted in a cited passage."""

from __future__ import annotations

import pytest

from lectern.rag.citations import attribute_sentences, highlights, support_scores, without_markers
from lectern.rag.qa import build_qa_chain
from lectern.rag.types import Context
from tests.rag.test_qa import PLAIN
from tests.rag.test_window import ListRetriever, WindowFake, make_doc

# The README demo's failure: page 1 holds the topic's words, page 2 the name. Plain word overlap gave
# page 1 60% of the answer's words and page 2 40%, so page 1 was cited for a fact on page 2.
PAGE1 = "Marrow Point Light is a white stone lighthouse tower on the north cape, built of granite."
PAGE2 = "The tower was designed by the engineer Edith Varley and first lit in 1852."
QUESTION = "Who designed the lighthouse?"
ANSWER = "The white stone tower was designed by Edith Varley."


def contexts() -> list[Context]:
    return [
        Context(number=1, chunk_id="p1", source="/d/demo.pdf", page=1, text=PAGE1),
        Context(number=2, chunk_id="p2", source="/d/demo.pdf", page=2, text=PAGE2),
    ]


def idf(terms: list[str]) -> dict[str, float]:
    """The collection's view: a name is rare, the topic's words are common."""
    return {t: 6.0 if t in ("edith", "varley") else 1.0 for t in terms}


def test_a_rare_name_outweighs_shared_topic_words() -> None:
    # among the two passages alone, "white stone" and "Edith Varley" are as telling: a tie, both cited
    alone = support_scores(ANSWER, QUESTION, contexts())
    assert alone[1] == alone[2]
    # with the collection's IDF the name decides
    support = support_scores(ANSWER, QUESTION, contexts(), idf)
    assert support[2] > 0.8 > 0.2 > support[1]
    marked, cited, share = attribute_sentences(ANSWER, QUESTION, contexts(), idf)
    assert cited == [2] and marked.endswith("[2]") and share == 1.0


def test_a_wrong_citation_is_replaced_by_the_page_that_holds_the_fact() -> None:
    llm = WindowFake(context_window=600, script=[ANSWER.replace(".", " [1].")])
    docs = [make_doc(1, PAGE1, page=1), make_doc(2, PAGE2, page=2)]
    answer = build_qa_chain(llm, ListRetriever(docs=docs), **{**PLAIN, "term_weights": idf}).invoke(QUESTION)
    assert [c.page for c in answer.citations] == [2] and answer.citations[0].inferred
    assert answer.unsupported_citations == [1]


def test_highlights_are_the_sentences_holding_the_answer() -> None:
    passage = "Kings ruled long. The tower was designed by Edith Varley. It is white. Varley died in 1900."
    assert highlights("Edith Varley designed it [2].", QUESTION, passage) == [
        "The tower was designed by Edith Varley.",
        "Varley died in 1900.",
    ]
    assert highlights("Nothing in common.", QUESTION, passage) == []
    assert without_markers("Varley [1][2] did [3, 4].") == "Varley did ."


def test_an_answer_that_restates_the_question_still_cites_its_source() -> None:
    ctxs = [
        Context(number=1, chunk_id="a", source="/d/a.txt", text="Kings ruled the land for long."),
        Context(number=2, chunk_id="b", source="/d/b.txt", text="Amedeo Avogadro was an Italian savant."),
    ]
    marked, cited, _ = attribute_sentences(
        "Amedeo Avogadro's last name is Avogadro.", "What is Amedeo Avogadro's last name?", ctxs
    )
    assert cited == [2] and marked.endswith("[2]")


def test_an_answer_held_as_a_whole_by_one_source_cites_it() -> None:
    ctxs = [
        Context(
            number=1, chunk_id="a", source="/d/a.txt", text="The scale was reversed by Linnaeus in 1744."
        ),
        Context(number=2, chunk_id="b", source="/d/b.txt", text="Rain fell all summer."),
    ]
    # two sentences, neither held 60% by one source, the whole answer mostly by source 1
    answer = "The scale was reversed later. Linnaeus did it, some say in spring."
    marked, cited, share = attribute_sentences(answer, "What happened to the scale?", ctxs)
    assert cited == [1] and marked.endswith("[1]") and share == pytest.approx(0.4)
    # nothing in common: no citation is made up
    assert attribute_sentences("Bananas are yellow.", "What happened?", ctxs)[1] == []
