"""The evidence gate end to end with the real MiniLM: questions worded unlike their documents pass it,
questions about what the documents lack do not (no language model: the gate decides before one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CMU_DATA, SAMPLE_DOCS, SAMPLE_EXCLUDE

pytestmark = pytest.mark.e2e
BENCH_DATA = Path(__file__).parents[2] / "bench" / "data"

REWORDED = [  # sample_docs' words: "143 steps", "open every day except Tuesdays", "founded in Leeds", "cost"
    "How many stairs lead up to the top of the Marrow Point lighthouse?",
    "On which day is the Marrow Point Museum closed?",
    "Which city were Quillmate's original developers based in?",
    "What was the price tag for constructing the Marrow Point tower?",
]
ELSEWHERE = [
    "What is the most common color of ants?",
    "Where was Gustav Klimt born?",
    "How tall is the Eiffel Tower?",
]


@pytest.fixture(scope="module")
def sample_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    settings = Settings(data_dir=tmp_path_factory.mktemp("gate"), llm={"backend": "fake"})
    settings.ingest.exclude = [*settings.ingest.exclude, *SAMPLE_EXCLUDE]
    ws = Workspace(collection="gate", settings=settings)
    assert ws.ingest([SAMPLE_DOCS]).ok
    yield ws.qa_chain()
    ws.close()


@pytest.fixture(scope="module")
def meaning_chain(sample_chain) -> object:  # type: ignore[no-untyped-def]
    """The same chain choosing its sentences by words and meaning (answer.meaning = 1.0)."""
    from dataclasses import replace

    from lectern.rag.qa import QAChain

    options = replace(sample_chain.options, meaning=1.0)
    return QAChain(sample_chain.llm, sample_chain.retriever, options, sample_chain.corpus)


@pytest.mark.parametrize("question", REWORDED)
def test_a_question_in_a_person_s_own_words_reaches_the_model(sample_chain, question: str) -> None:  # type: ignore[no-untyped-def]
    prepared = sample_chain.prepare(question)
    assert prepared.abstained_by is None and prepared.messages is not None, prepared.evidence
    assert prepared.evidence.sentence is not None  # the meaning gate decided, with MiniLM


# REWORDED's answers. The cost sits on a PDF line after a line break inside its sentence, which no
# longer cuts it (rag.sentences.sentence_spans), so it is shown whole. Quillmate's "Tartu" is left
# out: its section is not among the chunks retrieved (MiniLM puts "volunteers in Tartu" at cosine 0.11
# to "which city were its developers based in?").
ANSWER_WORDS = {REWORDED[0]: "143 steps", REWORDED[1]: "except Tuesdays", REWORDED[3]: "11,400 pounds"}


@pytest.mark.parametrize(("question", "words"), list(ANSWER_WORDS.items()))
def test_the_sentence_that_answers_a_reworded_question_is_shown_to_the_model(
    meaning_chain, question: str, words: str
) -> None:  # type: ignore[no-untyped-def]
    """Selection by words and meaning (answer.meaning) shows the answer sentence though it shares no
    rare word with the question ("stairs" / "steps", "closed" / "open except")."""
    prepared = meaning_chain.prepare(question)
    shown = " ".join(c.text for c in prepared.contexts)
    assert words in " ".join(shown.split()), shown


@pytest.mark.parametrize("question", ELSEWHERE)
def test_a_question_the_documents_do_not_answer_is_refused_before_the_model(
    sample_chain, question: str
) -> None:  # type: ignore[no-untyped-def]
    prepared = sample_chain.prepare(question)
    assert prepared.abstained_by == "evidence" and prepared.messages is None, prepared.evidence


def test_an_answer_whose_cited_passages_lack_the_question_s_names_is_withdrawn(sample_chain) -> None:  # type: ignore[no-untyped-def]
    """The subject check (answer.subject, on by default) past the gate: with the gate off, the fake
    model answers the Klimt question from a sample passage, which names no Gustav Klimt, so the answer
    is withdrawn; the same chain keeps its answer about Marrow Point, and without the check the Klimt
    answer stands, cited. (Half the names is enough: "the Eiffel Tower" passes on the lighthouse's
    "tower".)"""
    from dataclasses import replace

    from lectern.rag.qa import QAChain

    ungated = QAChain(
        sample_chain.llm,
        sample_chain.retriever,
        replace(sample_chain.options, evidence=False),
        sample_chain.corpus,
    )
    withdrawn = ungated.invoke("Where was Gustav Klimt born?")
    assert withdrawn.abstained and withdrawn.abstained_by == "off_subject", withdrawn
    kept = ungated.invoke("When was the Marrow Point Light first lit?")
    assert not kept.abstained and kept.citations, kept
    unchecked = QAChain(
        sample_chain.llm, sample_chain.retriever, replace(ungated.options, subject=False), sample_chain.corpus
    ).invoke("Where was Gustav Klimt born?")
    assert not unchecked.abstained and unchecked.citations, unchecked


@pytest.mark.parametrize("year", ["S09"])  # the held-out set (S08's, the tuning set, costs CI 2 minutes more)
def test_the_gate_passes_reworded_questions_whose_answer_sentence_is_retrieved(
    year: str, tmp_path: Path
) -> None:
    """Every paraphrase of bench/data whose evidence sentence is among the retrieved chunks should pass
    the gate. A few still miss, just under the fitted threshold (4 of 44 on S08, 3 of 35 on S09, where
    the words gate refused most of them; docs/ANSWERS.md): at most one in ten, each named here."""
    from lectern.rag.evaluate import articles_of, eval_searcher, load_qa, load_questions
    from lectern.rag.llm import build_llm
    from lectern.rag.settings import load_settings
    from lectern.rag.workspace import chain_from_settings

    qa = CMU_DATA / year
    if not qa.is_dir():
        pytest.skip("CMU QA data not available")
    path = BENCH_DATA / f"paraphrase_{year.lower()}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    settings = load_settings(data_dir=tmp_path, ingest={"parse_workers": 0}, llm={"backend": "fake"})
    with eval_searcher(articles_of(load_qa(qa)), settings, tmp_path) as searcher:
        chain = chain_from_settings(settings, searcher, llm=build_llm(settings.llm, settings.models_dir))
        shown, refused = 0, []
        for item, row in zip(load_questions(path, qa), rows, strict=True):
            evidence = " ".join(row["evidence"].split()).lower()[:80]
            docs = chain.retrieve(item.question)
            if not any(evidence in " ".join(d.page_content.split()).lower() for d in docs):
                continue
            shown += 1
            prepared = chain.prepare(item.question)
            if prepared.abstained_by == "evidence":
                refused.append((round(prepared.evidence.probability, 2), item.question))
    assert shown >= len(rows) * 0.6  # the retrieval finds most of them: the test tests something
    assert len(refused) <= shown // 10, refused
