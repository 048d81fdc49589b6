"""Evidence before generation: coverage, names, the calibrated abstention; and the QA chain's use of
the gate and the sentence selection (tests/rag/test_sentences.py) with the fake model."""

from __future__ import annotations

import pytest

from lectern.rag.evidence import (
    CALIBRATED,
    COVERAGE_ONLY,
    MEANING,
    WORDS,
    Calibration,
    assess,
    coverage,
    names,
)
from lectern.rag.prompts import NO_ANSWER
from lectern.rag.qa import build_qa_chain
from lectern.rag.sentences import sentences, sentences_and_lines
from lectern.rag.types import Context
from tests.rag.test_window import ListRetriever, WindowFake, make_doc

VOLTA = (
    "Alessandro Volta was an Italian physicist. He invented the battery in 1800. "
    "Napoleon made him a count in 1810. In 1819, he retired to his country house in Camnago. "
    "He died there on 5 March 1827."
)


def ctx(number: int, text: str, title: str = "", dense: float | None = None) -> Context:
    return Context(
        number=number,
        chunk_id=f"c{number}",
        source=f"/d/{number}.txt",
        title=title,
        text=text,
        dense_score=dense,
    )


def test_a_line_wrapped_inside_a_sentence_is_one_sentence() -> None:
    """PDF text and hard-wrapped Markdown break lines mid-sentence ("and cost\n11,400 pounds."): a
    sentence cut there loses its answer to the next "sentence". Headings, list items and blank lines
    still end one."""
    text = (
        "Building the tower\nBuilding took four summers, from 1848 to 1851, and cost\n11,400 pounds.\n"
        "It was first released\nin March 2019 by a team of four volunteers in Tartu.\n\n"
        "Steps:\n1. Install it\n12. Run it\n6.\n\nNotes, see below,\nLater text"
    )
    assert sentences(text) == [
        "Building the tower",
        "Building took four summers, from 1848 to 1851, and cost\n11,400 pounds.",
        "It was first released\nin March 2019 by a team of four volunteers in Tartu.",
        "Steps:",
        "1. Install it",
        "12. Run it",
        "6.",
        "Notes, see below,\nLater text",
    ]
    # the gate reads a wrapped sentence's lines too, and a numbered heading without its number: the
    # pieces its sentence feature was fitted on, each of which can match a question better than the whole
    assert sentences_and_lines("2. Building the tower\nIt cost\n11,400 pounds. Done.") == [
        "2. Building the tower",
        "Building the tower",
        "It cost\n11,400 pounds.",
        "It cost",
        "11,400 pounds.",
        "Done.",
    ]


def test_coverage_weighs_rare_words() -> None:
    weights = {"volta": 5.0, "retir": 1.0}
    assert coverage(["volta", "retir"], "Volta retired in 1819.", weights) == 1.0
    assert coverage(["volta", "retir"], "The king retired.", weights) == pytest.approx(1 / 6)
    assert coverage([], "anything", weights) == 1.0


def test_calibration_is_monotone_and_thresholded() -> None:
    model = Calibration({"coverage": 5.0, "dense": 10.0}, bias=-8.0, threshold=0.5)
    p = lambda cover, dense: model.probability({"coverage": cover, "dense": dense})  # noqa: E731
    assert p(1.0, 0.6) > p(0.5, 0.6) > p(0.5, 0.2)
    assert p(1.0, 0.0) == pytest.approx(1 / (1 + 2.718281828**3), rel=1e-6)
    assert model.usable({"coverage": 1.0, "dense": 0.3}) and not model.usable(
        {"coverage": 1.0, "dense": None}
    )
    # the shipped models: a question whose words are all in a close passage is answerable; one whose
    # name is missing from a distant passage is not
    assert WORDS.probability({"coverage": 1.0, "dense": 0.6}) > WORDS.threshold
    assert WORDS.probability({"coverage": 0.4, "dense": 0.25}) < WORDS.threshold
    assert COVERAGE_ONLY.probability({"coverage": 1.0}) > COVERAGE_ONLY.threshold
    assert COVERAGE_ONLY.probability({"coverage": 0.3}) < COVERAGE_ONLY.threshold
    # MEANING reads no word of the question: a close sentence that holds its names is enough
    close = {"dense": 0.45, "sentence": 0.7, "names": 1.0}
    assert MEANING.probability(close) > MEANING.threshold
    assert MEANING.probability({**close, "sentence": 0.45, "names": 0.0}) < MEANING.threshold
    assert CALIBRATED is MEANING


def test_names_are_the_capitalised_words_past_the_first() -> None:
    assert names("How many stairs lead up to the top of the Marrow Point lighthouse?") == ["marrow", "point"]
    assert names("Which city were Quillmate's original developers based in?") == ["quillmat"]
    assert names("What is the most common color of ants?") == []
    assert names("Where was Volta born? And Newton?") == ["volta", "newton"]


def test_the_meaning_gate_passes_a_reworded_question_the_words_gate_refuses() -> None:
    """ "stairs" is in no source and weighs as the rarest word: the words gate abstains. The meaning
    gate reads the sentence's closeness to the question (a stand-in embedder here) and the name."""
    idf = lambda terms: {t: {"stair": 9.0, "marrow": 6.0, "point": 3.0}.get(t, 1.0) for t in terms}  # noqa: E731
    question = "How many stairs lead up to the top of the Marrow Point lighthouse?"
    passage = "Visitors may climb the 143 steps of the tower. The lamp was first lit in 1852."
    shown = [ctx(1, passage, "Marrow Point Light", 0.45)]
    seen: list[list[str]] = []

    def similarity(q: str, texts: list[str]) -> list[float]:
        seen.append(list(texts))
        return [0.72 if "steps" in t else 0.2 for t in texts]

    words = assess(question, shown, idf, WORDS)
    assert not words.answerable and words.coverage < 0.5
    meaning = assess(question, shown, idf, MEANING, similarity=similarity)
    assert meaning.answerable and meaning.sentence == 0.72 and meaning.names == 1.0
    assert seen == [["Visitors may climb the 143 steps of the tower.", "The lamp was first lit in 1852."]]
    # the same sentence in a passage that lacks the question's name: refused
    elsewhere = [ctx(1, passage.replace("tower", "mill"), "Old Mill", 0.3)]
    assert not assess(question, elsewhere, idf, MEANING, similarity=lambda q, t: [0.45] * len(t)).answerable
    # without an embedder at hand the meaning gate cannot be read: the words gate decides
    fallback = assess(question, shown, idf, MEANING)
    assert fallback.sentence is None and fallback.threshold == WORDS.threshold


def test_assess_uses_the_best_chunk_and_its_title() -> None:
    weights = {"volta": 5.0, "retir": 1.0}.__class__  # unused; collection weights below
    idf = lambda terms: {t: {"volta": 5.0, "retir": 1.0}.get(t, 1.0) for t in terms}  # noqa: E731
    # the name is in the title only: still covered
    e = assess("When did Volta retire?", [ctx(1, "In 1819, he retired.", "Alessandro Volta", 0.6)], idf)
    assert e.coverage == 1.0 and e.answerable
    # the article is missing: another text shares only "retire"
    e = assess("When did Volta retire?", [ctx(1, "The king retired in 1500.", "Kings", 0.3)], idf)
    assert e.coverage == pytest.approx(1 / 6) and not e.answerable
    assert weights is dict
    assert assess("Q?", []).probability == 0.0


def test_the_chain_abstains_on_missing_evidence_without_calling_the_model() -> None:
    llm = WindowFake(context_window=600, script=["should not be used"])
    docs = [make_doc(1, "The king retired in 1500."), make_doc(2, "Kings ruled long.")]
    qa = build_qa_chain(
        llm, ListRetriever(docs=docs), term_weights=lambda ts: {t: 5.0 if t == "volta" else 1.0 for t in ts}
    )
    answer = qa.invoke("When did Volta retire?")
    assert answer.abstained and answer.abstained_by == "evidence" and answer.answer == NO_ANSWER
    assert answer.evidence is not None and answer.evidence < CALIBRATED.threshold
    assert llm.prompts == []  # the model was never asked
    streamed = list(qa.stream_answer("When did Volta retire?"))
    assert streamed[0] == NO_ANSWER and streamed[-1].abstained_by == "evidence"


def test_a_misspelled_subject_is_spelled_before_the_evidence_is_weighed() -> None:
    """ "Vlota" weighs as the rarest word and is in no source: without spelling the chain abstains on a
    question its sources answer; with the collection's spelling it answers."""
    docs = [make_doc(2, VOLTA)]
    weights = lambda ts: {t: 5.0 if t in ("volta", "vlota") else 1.0 for t in ts}  # noqa: E731
    spelling = lambda ts: ["volta" if t == "vlota" else t for t in ts]  # noqa: E731
    plain = build_qa_chain(
        WindowFake(context_window=600, script=["x"]), ListRetriever(docs=docs), term_weights=weights
    )
    assert plain.invoke("When did Vlota retire?").abstained_by == "evidence"
    llm = WindowFake(context_window=600, script=["He retired in 1819."])
    spelled = build_qa_chain(llm, ListRetriever(docs=docs), term_weights=weights, spelling=spelling)
    answer = spelled.invoke("When did Vlota retire?")
    assert not answer.abstained and "In 1819, he retired" in llm.users[0]


def test_the_chain_shows_the_best_sentences_and_highlights_the_support() -> None:
    llm = WindowFake(context_window=600, script=["He retired in 1819."])
    docs = [make_doc(2, VOLTA), make_doc(1, "Kings ruled long. Nothing else here.")]
    qa = build_qa_chain(llm, ListRetriever(docs=docs))
    answer = qa.invoke("When did Volta retire?")
    prompt = llm.users[0]
    assert "In 1819, he retired to his country house" in prompt and "Kings ruled long" not in prompt
    assert not answer.abstained and answer.evidence is not None and answer.evidence >= CALIBRATED.threshold
    # no [n] written: the source is found from the answer's words, and its sentence highlighted
    [citation] = answer.citations
    assert citation.inferred and citation.chunk_id == "c2"
    assert citation.highlights == ["In 1819, he retired to his country house in Camnago."]
    assert answer.answer == "He retired in 1819. [1]"


def test_the_concise_prompt_asks_for_a_short_budget_and_stops_at_a_blank_line() -> None:
    seen: list[dict] = []

    class Recording(WindowFake):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            seen.append({"stop": stop, **kwargs})
            return super()._generate(messages, stop, run_manager, **kwargs)

    llm = Recording(context_window=600, script=["In 1819 [1]."])
    qa = build_qa_chain(llm, ListRetriever(docs=[make_doc(1, VOLTA)]), max_new_tokens=256)
    qa.invoke("When did Volta retire?")
    assert seen == [{"stop": ["\n\n"], "max_new_tokens": 48}]


def test_a_question_the_window_cannot_hold_is_an_error_before_the_gate_decides() -> None:
    """The gate would refuse it (nothing in the sources is about it): the user must still learn that
    the question itself is too long, not read "The documents do not contain the answer"."""
    from lectern.errors import ContextTooLong

    llm = WindowFake(context_window=300, script=["unused"])
    qa = build_qa_chain(llm, ListRetriever(docs=[make_doc(1, "Kings ruled long.")]))
    with pytest.raises(ContextTooLong):
        qa.invoke("lighthouse " * 400)
    assert llm.prompts == []


def test_the_gate_and_the_selection_embed_each_sentence_once_per_question() -> None:
    seen: list[str] = []

    def similarity(q: str, texts: list[str]) -> list[float]:
        seen.extend(texts)
        return [0.9 if "1819" in t else 0.3 for t in texts]

    llm = WindowFake(context_window=600, script=["In 1819 [1]."])
    qa = build_qa_chain(
        llm,
        ListRetriever(docs=[make_doc(1, VOLTA)]),
        calibration=MEANING,
        similarity=similarity,
        meaning=1.0,
    )
    assert not qa.invoke("When did Volta go to Camnago?").abstained
    assert len(seen) == len(set(seen)) == len(sentences(VOLTA))
