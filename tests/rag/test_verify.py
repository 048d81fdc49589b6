"""rag.verify and the QA chain's check: an answer that restates the question or says what no source
says is asked again for a source's exact words; a span no source holds becomes an abstention."""

from __future__ import annotations

from lectern.rag.evidence import names
from lectern.rag.prompts import NO_ANSWER
from lectern.rag.qa import QAChain, build_qa_chain
from lectern.rag.verify import (
    FAILED_AGAIN,
    FOUND_AGAIN,
    NOT_IN_SOURCES,
    OFF_SUBJECT,
    RESTATES,
    SCATTERED,
    answer_problem,
    clean_span,
    locate,
    off_subject,
    why_changed,
)
from tests.rag.test_evidence import ctx
from tests.rag.test_window import ListRetriever, WindowFake, make_doc

TURTLES = (
    "Sea turtles lay their eggs on sandy beaches. The eggs are covered in mud or sand while they "
    "incubate. The hatchlings dig their way to the surface."
)
SOURCES = [ctx(1, "Kings ruled long. Nothing else here."), ctx(2, TURTLES, "Turtle")]


def test_answer_problem() -> None:
    q = "What are turtle eggs covered in when they incubate?"
    assert answer_problem("Turtle eggs are covered in when they incubate. [1]", q, SOURCES) == RESTATES
    assert answer_problem("They are covered in mud or sand. [2]", q, SOURCES) is None
    assert answer_problem("They are covered in golden velvet blankets.", q, SOURCES) == NOT_IN_SOURCES
    # half of the new words in the sources is enough: small models paraphrase
    assert answer_problem("Mud or sand, then velvet.", q, SOURCES) is None
    # a yes/no question needs no new word
    assert answer_problem("Yes, turtle eggs incubate.", "Do turtle eggs incubate?", SOURCES) is None
    # a word of the source's title counts as in the sources
    assert answer_problem("A turtle.", "What lays eggs on sandy beaches?", SOURCES) is None
    # a number or a date written otherwise than in the source is still the source's
    counted = [ctx(1, "Newton stated three laws of motion on 5 July 1687.")]
    assert answer_problem("Newton had 3 laws.", "How many laws of motion?", counted) is None
    assert answer_problem("On July 5, 1687.", "When were the laws stated?", counted) is None


def test_clean_span_and_locate() -> None:
    assert clean_span('Answer: "mud or sand". [2]\nmore') == "mud or sand"
    assert locate("mud or sand", SOURCES) == 2  # word for word
    assert locate("Mud  OR sand", SOURCES) == 2  # case and spacing aside
    assert locate("sand and mud covering", SOURCES) == 2  # most of its words in one source
    assert locate("golden velvet", SOURCES) is None
    assert locate("", SOURCES) is None


def turtle_chain(*replies: str) -> tuple[WindowFake, QAChain]:
    llm = WindowFake(context_window=800, script=list(replies))
    docs = [make_doc(2, TURTLES), make_doc(1, "Kings ruled long. Nothing else here.")]
    return llm, build_qa_chain(llm, ListRetriever(docs=docs), evidence=False)


def test_a_restated_question_is_asked_again_and_the_span_cites_its_source() -> None:
    llm, qa = turtle_chain("Turtle eggs are covered in when they incubate.", "mud or sand")
    answer = qa.invoke("What are turtle eggs covered in when they incubate?")
    assert len(llm.prompts) == 2 and "exact words" in llm.prompts[1][0].text
    assert answer.retried == RESTATES and not answer.abstained
    assert answer.answer == "mud or sand [1]"
    assert answer.first_answer == "Turtle eggs are covered in when they incubate. [1]"  # as cited
    assert why_changed(answer) == f"{RESTATES}; {FOUND_AGAIN}"  # what the CLI, UI and serve say
    [citation] = answer.citations
    assert citation.chunk_id == "c2" and citation.highlights == [
        "The eggs are covered in mud or sand while they incubate."
    ]


def test_a_span_no_source_holds_becomes_an_abstention() -> None:
    _, qa = turtle_chain("They are wrapped in golden velvet blankets.", "golden velvet")
    streamed = list(qa.stream_answer("What are turtle eggs covered in when they incubate?"))
    answer = streamed[-1]
    assert "".join(p for p in streamed if isinstance(p, str)) == "They are wrapped in golden velvet blankets."
    assert answer.abstained and answer.abstained_by == "unsupported" and answer.answer == NO_ANSWER
    assert answer.retried == NOT_IN_SOURCES and answer.citations == []
    assert "golden velvet" in answer.raw.splitlines()[-1]  # both outputs kept for inspection
    assert answer.first_answer == "They are wrapped in golden velvet blankets."
    assert why_changed(answer) == f"{NOT_IN_SOURCES}; {FAILED_AGAIN}"


def test_a_restated_question_is_kept_when_the_retry_finds_nothing_better() -> None:
    """ "What is Avogadro's last name?" -> "Avogadro": all its words are the question's, and right."""
    llm = WindowFake(context_window=800, script=["His last name is Avogadro.", "Avogadro"])
    docs = [make_doc(1, "Lorenzo Romano Amedeo Carlo Avogadro was an Italian scientist.")]
    qa = build_qa_chain(llm, ListRetriever(docs=docs), evidence=False)
    answer = qa.invoke("What is Amedeo Avogadro's last name?")
    assert len(llm.prompts) == 2  # it was asked again...
    assert answer.answer.startswith("His last name is Avogadro.") and answer.retried is None  # ...and kept
    assert not answer.abstained and answer.first_answer is None and why_changed(answer) is None


def test_an_answer_that_passes_costs_no_second_call() -> None:
    llm, qa = turtle_chain("They are covered in mud or sand.")
    answer = qa.invoke("What are turtle eggs covered in when they incubate?")
    assert len(llm.prompts) == 1 and answer.retried is None and not answer.abstained


def test_the_check_can_be_turned_off() -> None:
    llm = WindowFake(context_window=800, script=["Turtle eggs are covered in when they incubate."])
    qa = build_qa_chain(llm, ListRetriever(docs=[make_doc(2, TURTLES)]), evidence=False, verify=False)
    answer = qa.invoke("What are turtle eggs covered in when they incubate?")
    assert len(llm.prompts) == 1 and answer.retried is None


GRANT = [
    ctx(1, "Lincoln led the Union. He was shot in 1865."),
    ctx(
        2,
        "Filler first. Grant achieved international fame as the leading Union general. He won at Vicksburg.",
    ),
]
FAME = "Who achieved international fame as the leading Union general?"
JOINED = "Lincoln, who won at Vicksburg."  # a name from one passage, a deed from another


def test_together_faults_an_answer_joined_from_two_passages() -> None:
    assert answer_problem(JOINED, FAME, GRANT) is None  # every word is in the sources...
    assert answer_problem(JOINED, FAME, GRANT, together=True) == SCATTERED  # ...not together
    # a neighbouring sentence counts as the same place
    assert answer_problem("Grant, who won at Vicksburg.", FAME, GRANT, together=True) is None
    assert answer_problem("Grant.", FAME, GRANT, together=True) is None
    # one new word is always in one place
    assert answer_problem("Lincoln.", FAME, GRANT, together=True) is None


def grant_chain(*replies: str, together: bool = True) -> tuple[WindowFake, QAChain]:
    llm = WindowFake(context_window=800, script=list(replies))
    docs = [make_doc(1, GRANT[0].text), make_doc(2, GRANT[1].text)]
    return llm, build_qa_chain(llm, ListRetriever(docs=docs), evidence=False, together=together)


def test_a_scattered_answer_is_asked_again_and_replaced_by_the_span() -> None:
    llm, qa = grant_chain(JOINED, "Grant")
    answer = qa.invoke(FAME)
    assert len(llm.prompts) == 2 and answer.retried == SCATTERED
    [citation] = answer.citations
    assert citation.chunk_id == "c2" and answer.answer == f"Grant [{citation.number}]"


def test_a_scattered_answer_is_kept_when_the_retry_finds_nothing_better() -> None:
    llm, qa = grant_chain(JOINED, "Sherman")
    answer = qa.invoke(FAME)
    assert len(llm.prompts) == 2 and answer.retried is None and not answer.abstained
    assert answer.answer.startswith("Lincoln, who won at Vicksburg.")
    # without `together` the answer passes the check and costs no second call
    llm, qa = grant_chain(JOINED, together=False)
    qa.invoke(FAME)
    assert len(llm.prompts) == 1


def test_a_bare_year_is_what_a_full_date_says() -> None:
    """ "Volta was born in 1745." against "(February 18, 1745 - ...)": the date stands for its year
    too, so the answer is in the sources (it was NOT_IN_SOURCES, and every year answer was asked again)."""
    source = [ctx(1, "Alessandro Volta (February 18, 1745 - March 5, 1827) was an Italian physicist.")]
    assert answer_problem("Volta was born in 1745.", "In what year was Volta born?", source) is None
    assert answer_problem("Volta was born in 1746.", "In what year was Volta born?", source) == NOT_IN_SOURCES


BEES = "Bees feed on nectar and pollen. The most common color of honey bees is yellow with black bands."


def test_off_subject_needs_the_question_names_in_the_cited_chunk() -> None:
    question = "Where was Alessandro Volta buried?"
    volta = ctx(1, "In 1819 he retired to Camnago. He was buried in Como.", "Alessandro Volta")
    other = ctx(2, "Galvani was buried in Bologna. He studied frogs.", "Luigi Galvani")
    assert not off_subject(question, [volta])  # the title names him: the sentence says "he"
    assert off_subject(question, [other])
    # half the names is enough ("Alessandro" alone); one cited chunk about the subject is enough;
    # none cited, nothing to judge
    assert not off_subject(question, [ctx(3, "Alessandro Manzoni was buried in Milan.")])
    assert not off_subject(question, [other, volta])
    assert not off_subject(question, [])
    # the names as the chain spelled them ("Vlota" -> "volta")
    assert not off_subject("Where was Vlota buried?", [volta], named=["volta"])
    assert off_subject("Where was Vlota buried?", [volta])


def test_off_subject_judges_only_questions_that_name_their_subject() -> None:
    """Without names there is nothing model-free to hold the passage to: a cosine rule on the
    answer's sentence withdrew right answers to reworded questions (docs/ANSWERS.md), so it is not
    used. A hyphenated word is a name up to its lower-case part: "Greek-letter" asks for "Greek"."""
    assert not off_subject("What is the most common color of ants?", [ctx(1, BEES, "Bee")])
    coolidge = ctx(1, "He was a member of the Phi Gamma Delta fraternity.", "Calvin Coolidge")
    assert names("Which Greek-letter society did Coolidge join?") == ["greek", "coolidg"]
    assert not off_subject("Which Greek-letter society did Coolidge join?", [coolidge])
    assert names("Where did Jean-Paul Sartre live?") == ["jean", "paul", "sartr"]


def test_the_chain_withdraws_an_answer_taken_from_another_subject() -> None:
    llm = WindowFake(context_window=600, script=["He was buried in Bologna. [1]"])
    docs = [make_doc(1, "Luigi Galvani was buried in Bologna. He studied frogs and electricity.")]
    qa = build_qa_chain(llm, ListRetriever(docs=docs), evidence=False)
    answer = qa.invoke("Where was Alessandro Volta buried?")
    assert answer.abstained and answer.abstained_by == "off_subject" and answer.answer == NO_ANSWER
    assert answer.raw == "He was buried in Bologna. [1]" and answer.citations == []
    assert answer.first_answer == "He was buried in Bologna. [1]" and why_changed(answer) == OFF_SUBJECT
    # the same answer about the subject the question names stands; the check is on by default
    kept = build_qa_chain(
        WindowFake(context_window=600, script=["He was buried in Bologna. [1]"]),
        ListRetriever(docs=[make_doc(1, "Alessandro Volta was buried in Bologna, they say.")]),
        evidence=False,
    ).invoke("Where was Alessandro Volta buried?")
    assert not kept.abstained and why_changed(kept) is None
    off = build_qa_chain(
        WindowFake(context_window=600, script=["He was buried in Bologna. [1]"]),
        ListRetriever(docs=docs),
        evidence=False,
        subject=False,
    ).invoke("Where was Alessandro Volta buried?")
    assert not off.abstained and off.citations


FOUNDING = (
    "The Hollow Club was founded in 1899 by twelve rowers. "
    "It moved to a new boathouse in 1906. "
    "Its members won 14 regattas."
)


def test_the_kind_of_fact_a_question_asks_for() -> None:
    from lectern.rag.verify import DATE, NUMBER, asked_kind, values

    assert asked_kind("When was the Hollow Club founded?") == DATE
    assert asked_kind("In what year did it move?") == DATE
    assert asked_kind("How many regattas did its members win?") == NUMBER
    assert asked_kind("Who founded the club?") is None
    assert values("founded on 3 March 1899 by twelve rowers", DATE) == {"1899"}
    assert values("twelve rowers and 14 regattas", NUMBER) == {"12", "14"}


def test_wrong_fact_finds_the_sentence_that_answers_the_question() -> None:
    from lectern.rag.sentences import sentence_scores, sentence_spans
    from lectern.rag.verify import wrong_fact

    question = "When was the Hollow Club founded?"
    shown = [ctx(1, FOUNDING, "Hollow Club")]
    scores = sentence_scores(question, shown, [sentence_spans(FOUNDING)], lambda ts: dict.fromkeys(ts, 1.0))
    assert wrong_fact("It was founded in 1906.", question, shown, scores) == (0, 0)
    assert wrong_fact("In 1899.", question, shown, scores) is None
    assert wrong_fact("By twelve rowers.", question, shown, scores) is None  # states no date
    assert wrong_fact("1906", "Who founded the Hollow Club?", shown, scores) is None  # asks no date
    # a sentence stating the answer's year that matches the question nearly as well is a tie: kept
    tied = {**scores, (0, 1): scores[0, 0] - 0.05}
    assert wrong_fact("1906", question, shown, tied) is None


def test_the_chain_asks_again_for_the_answering_sentences_date() -> None:
    from lectern.rag.verify import WRONG_FACT

    question = "When was the Hollow Club founded?"
    docs = [make_doc(1, FOUNDING)]
    llm = WindowFake(context_window=600, script=["It was founded in 1906 [1].", "1899"])
    qa = build_qa_chain(llm, ListRetriever(docs=docs), facts=True)
    answer = qa.invoke(question)
    assert answer.answer == "1899 [1]" and answer.retried == WRONG_FACT and not answer.abstained
    assert answer.first_answer == "It was founded in 1906 [1]."
    assert [c.chunk_id for c in answer.citations] == ["c1"]
    # the second ask shows the answering sentence and its neighbour only
    assert "founded in 1899" in llm.users[1] and "14 regattas" not in llm.users[1]
    # a second try that does not state the sentence's year leaves the first answer standing
    llm = WindowFake(context_window=600, script=["It was founded in 1906 [1].", "1906"])
    kept = build_qa_chain(llm, ListRetriever(docs=docs), facts=True).invoke(question)
    assert kept.answer.startswith("It was founded in 1906") and kept.retried == WRONG_FACT
    assert why_changed(kept) is None  # asked again, but the model's words stand: nothing to explain
    # off (the default): one call, the answer as the model wrote it
    llm = WindowFake(context_window=600, script=["It was founded in 1906 [1]."])
    assert build_qa_chain(llm, ListRetriever(docs=docs)).invoke(question).retried is None
    assert len(llm.prompts) == 1
