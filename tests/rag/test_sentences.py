"""Sentence selection: sentence spans, the local IDF, the best sentences with their neighbours, by
words and by meaning, and the similarity memo the gate shares."""

from __future__ import annotations

import pytest

from lectern.rag.sentences import local_idf, remembered, select_sentences, sentence_spans, sentences
from tests.rag.test_evidence import VOLTA, ctx


def test_sentence_spans_keep_abbreviations_and_trim() -> None:
    text = "  Dr. Smith met J. Doe in St. Louis. They left!  Then (a) it rained?\nNew line here"
    assert sentences(text) == [
        "Dr. Smith met J. Doe in St. Louis.",
        "They left!",
        "Then (a) it rained?",
        "New line here",
    ]
    for a, b in sentence_spans(text):
        assert text[a:b] == text[a:b].strip()
    assert sentences("") == []


def test_local_idf_ranks_a_word_of_one_passage_above_a_word_of_all() -> None:
    w = local_idf(["volta battery", "volta count", "volta house"])(["volta", "batteri", "unseen"])
    assert w["batteri"] > w["volta"] and w["unseen"] > w["batteri"]


def test_select_sentences_keeps_the_best_with_neighbours_in_order() -> None:
    contexts = [
        ctx(1, "Filler about nothing. More filler here. Still nothing."),
        ctx(2, VOLTA, "Alessandro Volta"),
    ]
    chosen = select_sentences("When did Volta retire?", contexts, top=1, neighbours=1)
    assert [c.number for c in chosen] == [1] and chosen[0].chunk_id == "c2" and chosen[0].excerpt
    assert chosen[0].text == (
        "Napoleon made him a count in 1810. In 1819, he retired to his country house in Camnago. "
        "He died there on 5 March 1827."
    )
    # two sentences apart: an ellipsis marks the gap
    apart = select_sentences(
        "Who invented the battery? When did he die?", [ctx(1, VOLTA)], top=2, neighbours=0
    )
    assert apart[0].text == "He invented the battery in 1800. … He died there on 5 March 1827."


def test_order_best_puts_the_excerpt_with_the_best_matching_sentence_first() -> None:
    idf = lambda terms: {t: {"battery": 4.0, "invent": 3.0}.get(t, 1.0) for t in terms}  # noqa: E731
    contexts = [
        ctx(1, "The battery was improved by others. Batteries store charge."),
        ctx(2, "Volta invented the battery in 1800."),
    ]
    question = "Who invented the battery?"
    by_rank = select_sentences(question, contexts, idf, top=2, neighbours=0, order="rank")
    best = select_sentences(question, contexts, idf, top=2, neighbours=0)  # the default
    assert [c.chunk_id for c in by_rank] == ["c1", "c2"]
    assert [c.chunk_id for c in best] == ["c2", "c1"] and [c.number for c in best] == [1, 2]
    assert [c.text for c in best] == [by_rank[1].text, by_rank[0].text]  # the same excerpts
    with pytest.raises(ValueError, match="order"):
        select_sentences(question, contexts, idf, order="random")


def test_selection_by_meaning_shows_a_sentence_worded_unlike_the_question() -> None:
    """ "weekday" and "shut" are in no sentence; by words alone the museum's opening hours are never
    chosen. With the sentences' closeness to the question (a stand-in embedder), they are."""
    question = "Which weekday is the Marrow Point Museum shut?"
    passage = (
        "The Marrow Point Museum has three rooms. The museum is open every day except Tuesdays. "
        "It was built in 1901. Its roof was replaced in 1950. A shop sells postcards."
    )
    shown = [ctx(1, passage, "Marrow Point Museum")]
    idf = lambda terms: dict.fromkeys(terms, 1.0)  # noqa: E731
    calls: list[list[str]] = []

    def similarity(q: str, texts: list[str]) -> list[float]:
        calls.append(list(texts))
        return [0.8 if "except Tuesdays" in t else 0.1 for t in texts]

    by_words = select_sentences(question, shown, idf, top=1, neighbours=0)  # no embedder at hand
    assert "Tuesdays" not in by_words[0].text
    memo = remembered(similarity)
    by_meaning = select_sentences(question, shown, idf, top=1, neighbours=0, similarity=memo, meaning=1.0)
    assert by_meaning[0].text == "The museum is open every day except Tuesdays."
    # meaning 0 leaves the selection to words, embedder or not
    assert (
        select_sentences(question, shown, idf, top=1, neighbours=0, similarity=memo, meaning=0.0) == by_words
    )
    # remembered: a second reading of the same sentences embeds nothing new
    select_sentences(question, shown, idf, top=2, neighbours=0, similarity=memo, meaning=1.0)
    assert len(calls) == 1 and len(calls[0]) == 5


def test_extra_sentences_by_meaning_are_shown_after_the_ones_chosen_by_words() -> None:
    question = "Which weekday is the Marrow Point Museum shut?"
    passage = (
        "The Marrow Point Museum has three rooms. The museum is open every day except Tuesdays. "
        "It was built in 1901. Its roof was replaced in 1950. A shop sells postcards."
    )
    shown = [ctx(1, passage, "About the museum")]
    idf = lambda terms: dict.fromkeys(terms, 1.0)  # noqa: E731
    similarity = lambda q, texts: [0.8 if "except Tuesdays" in t else 0.1 for t in texts]  # noqa: E731
    by_words = select_sentences(question, shown, idf, top=1, neighbours=0)
    assert by_words[0].text == "The Marrow Point Museum has three rooms."
    both = select_sentences(question, shown, idf, top=1, neighbours=0, similarity=similarity, extra=1)
    assert both[0].text.startswith("The Marrow Point Museum has three rooms.")  # kept, and first
    assert both[0].text.endswith("The museum is open every day except Tuesdays.")
    assert select_sentences(question, shown, idf, top=1, neighbours=0, extra=1) == by_words  # no embedder
