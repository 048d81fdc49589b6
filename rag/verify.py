"""The answer check: does the answer say something the question does not, and do the sources say it?

    problem = answer_problem(answer_text, question, contexts)   # None, RESTATES, NOT_IN_SOURCES
                                                                # (or SCATTERED, with together=True)
    span = clean_span(raw)                                      # what the extract prompt returned
    number = locate(span, contexts)                             # the source holding it, or None

A 0.5B model sometimes hands the question back as its answer ("Turtle eggs are covered in when they
incubate.") or writes words that no source holds. Either way the chain asks once more, for the exact
words of a source (prompts.QA_EXTRACT), and shows the span, citing its source, when the span is in a
source and says something new. When the span fails too, an answer whose words no source holds
becomes an abstention (abstained_by="unsupported"); one that restates the question is kept, since
its words are the sources' too ("What is Avogadro's last name?" -> "Avogadro"). The check reads words only, so it costs nothing when the answer passes
(almost always: 4 of 57 answered S08 questions failed it, docs/ANSWERS.md).

With `together`, the answer's new words must also come from one place: a sentence of one passage with
its neighbours. A 0.5B model sometimes joins pieces of two passages into one answer ("Canadian
soldiers arrived in Britain in December 1939", the soldiers from one sentence and the date from
another): every word is in the sources, not together (SCATTERED). Such an answer is asked again for
a source's exact words too, but kept when the second try fails, since it may be right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lectern.ingest import bm25_terms
from lectern.rag.citations import CITATION, DATE_TOKEN, new_terms, terms
from lectern.rag.evidence import names, names_share
from lectern.rag.sentences import sentence_spans
from lectern.rag.types import Answer, Context

RESTATES = "restates the question"
NOT_IN_SOURCES = "says what no source says"
SCATTERED = "joins words no one passage says together"

# A question that starts like these is answered by yes or no, which need no new word.
YES_NO = re.compile(
    r"^(?:is|are|was|were|am|do|does|did|can|could|has|have|had|will|would|shall|should|may|might|must)\b",
    re.IGNORECASE,
)
IN_SOURCES = 0.5  # share of the answer's new words the shown sources must hold
SPAN_IN_SOURCE = 0.8  # share of a span's words one source must hold for the span to be its
# share of the answer's new words that one sentence and its neighbours must hold (with `together`):
# on 60 S08 answers this flagged 5 of the 28 wrong and none of the 29 right (docs/ANSWERS.md)
TOGETHER = 0.75


def answer_problem(
    answer: str, question: str, contexts: Sequence[Context], *, together: bool = False
) -> str | None:
    """Why this answer should not be shown as it is (RESTATES, NOT_IN_SOURCES, SCATTERED), or None.

    A yes/no question is never faulted for adding no word. A word counts as in the sources when a
    shown passage or its title holds it; with `together`, TOGETHER of them must be in one sentence of
    one passage or its neighbours."""
    if YES_NO.match(question.strip()):
        return None
    novel = new_terms(answer, question)
    if not novel:
        return RESTATES
    shown: set[str] = set()
    for ctx in contexts:
        shown |= terms(f"{ctx.title or ''} {ctx.text}")
    if len(novel & shown) / len(novel) < IN_SOURCES:
        return NOT_IN_SOURCES
    if together and _best_window(novel, contexts) < TOGETHER:
        return SCATTERED
    return None


# The subject check (answer.subject): the passages an answer cites must be about the question's names.
SUBJECT_NAMES = 0.5  # share of the question's names the cited chunk (with its title) must hold
# what the reader is told of an answer the check withdrew (why_changed)
OFF_SUBJECT = "was withdrawn: the passages it cited do not name what the question asks about"
FOUND_AGAIN = "this is from the sources' own words"
FAILED_AGAIN = "a second try failed too"


def why_changed(answer: Answer) -> str | None:
    """Why the answer is not the words the model wrote (`first_answer`, which a stream showed),
    completing "that answer ...": it failed the answer check and was asked again (`retried`), or the
    subject check withdrew it. None when the model's words stand (a fact check's second try that
    found nothing better leaves them). The one wording of the CLI's note, the web UI's caption and
    `lectern serve`'s streamed correction."""
    if answer.first_answer is None:
        return None
    if answer.abstained_by == "off_subject":
        return OFF_SUBJECT
    # every other replacement or withdrawal follows a retry (rag.qa's check and right_fact)
    return f"{answer.retried}; {FAILED_AGAIN if answer.abstained else FOUND_AGAIN}"


def off_subject(question: str, cited: Sequence[Context], named: Sequence[str] | None = None) -> bool:
    """True when no passage an answer cites is about the question's subject: with the question's
    article missing, a 0.5B model answered "Adams's Harvard diploma came in which year?" with "1831"
    from another article. The answer stands when one cited chunk holds SUBJECT_NAMES of the question's
    names (its title and heading count). Pass whole chunks: the sentence an answer comes from often
    says "he". A question without names, or an answer citing nothing, is not judged. `named`: the
    question's names as the caller spelled them (else rag.evidence.names).

    Only names are read: a rule on the cosine of the answer's sentence to the question (tried in the
    tenth run) withdrew right answers to reworded questions (docs/ANSWERS.md)."""
    asked = named if named is not None else names(question)
    if not cited or not asked:
        return False
    return all(names_share(asked, [ctx]) < SUBJECT_NAMES for ctx in cited)


def _best_window(words: set[str], contexts: Sequence[Context]) -> float:
    """The largest share of `words` that one sentence with its neighbours holds, over all passages."""
    best = 0.0
    for ctx in contexts:
        sentences = [terms(ctx.text[a:b]) for a, b in sentence_spans(ctx.text)]
        for i in range(len(sentences)):
            window = set().union(*sentences[max(0, i - 1) : i + 2])
            best = max(best, len(words & window) / len(words))
    return best


def clean_span(raw: str) -> str:
    """The extract prompt's reply as an answer: its first line, [n] markers, quotes, a leading
    "Answer:" and a final full stop removed."""
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"(?i)^\s*\**answer\**\s*:\s*", "", line)
    line = " ".join(CITATION.sub(" ", line).split())
    return line.strip(" .").strip("\"'“”‘’").rstrip(".").strip()


def locate(span: str, contexts: Sequence[Context]) -> int | None:
    """The number of the source that holds the span: word for word (case and spacing aside) first,
    else the source holding the largest share (at least SPAN_IN_SOURCE) of its words."""
    if not span.strip():
        return None
    wanted = bm25_terms.fold(span)
    for ctx in contexts:
        if wanted in bm25_terms.fold(ctx.text):
            return ctx.number
    words = set(bm25_terms.terms(span))
    if not words:
        return None
    best, share = None, 0.0
    for ctx in contexts:
        held = len(words & set(bm25_terms.terms(ctx.text))) / len(words)
        if held > share:
            best, share = ctx.number, held
    return best if share >= SPAN_IN_SOURCE else None


# The fact check (answer.facts): the right date or number from the sentence that answers the question.
WRONG_FACT = "takes its date or number from a sentence that does not answer the question"
DATE = "date"
NUMBER = "number"
_ASKS_DATE = re.compile(
    r"^\s*when\b|\b(?:what|which)\s+(?:year|date|day|month|century|decade)\b|\bhow\s+long\s+ago\b", re.I
)
_ASKS_NUMBER = re.compile(
    r"\bhow\s+(?:many|much|long|old|tall|high|far|big|large|wide|deep|heavy|fast|often)\b"
    r"|\bwhat\s+(?:percentage|percent|proportion|number|amount|population|size)\b",
    re.I,
)
_YEAR = re.compile(r"^\d{3,4}$")
FACT_MARGIN = 0.1  # a sentence holding the answer's value this close to the best one's score is a tie
FACT_MEANING = 1.0  # the cosine's weight in the sentence scores the check reads when selection's is 0


def asked_kind(question: str) -> str | None:
    """DATE for "when" and "what year" questions, NUMBER for "how many/much/long/old" and the like,
    else None (the check leaves the answer alone)."""
    if _ASKS_DATE.search(question):
        return DATE
    if _ASKS_NUMBER.search(question):
        return NUMBER
    return None


def values(text: str, kind: str) -> set[str]:
    """The dates (as years) or numbers `text` states, in rag.citations.terms' one form."""
    said = terms(text)
    if kind == DATE:
        return {t for t in said if _YEAR.match(t)}
    return {t for t in said if t[:1].isdigit() and not DATE_TOKEN.match(t)}


def answering_sentence(
    question: str, contexts: Sequence[Context], kind: str, scores: dict[tuple[int, int], float]
) -> tuple[int, int] | None:
    """The best-scoring shown sentence ((passage index, sentence index), scores from
    rag.sentences.sentence_scores) that states a value of `kind`, or None."""
    question_values = values(question, kind)
    spans = [sentence_spans(c.text) for c in contexts]
    held = [
        key
        for key in scores
        if values(contexts[key[0]].text[slice(*spans[key[0]][key[1]])], kind) - question_values
    ]
    return max(held, key=lambda key: (scores[key], -key[0], -key[1]), default=None)


def wrong_fact(
    answer: str, question: str, contexts: Sequence[Context], scores: dict[tuple[int, int], float]
) -> tuple[int, int] | None:
    """The sentence that answers the question ((passage index, sentence index)) when the answer's
    date or number is not the one it states and no sentence stating the answer's value matches the
    question nearly as well (FACT_MARGIN); else None. Only for questions asking a date or number
    (asked_kind) whose answer states one."""
    kind = asked_kind(question)
    if kind is None:
        return None
    said = values(answer, kind) - values(question, kind)
    best = answering_sentence(question, contexts, kind, scores) if said else None
    if best is None:
        return None
    spans = [sentence_spans(c.text) for c in contexts]

    def states(key: tuple[int, int]) -> set[str]:
        return values(contexts[key[0]].text[slice(*spans[key[0]][key[1]])], kind)

    if said & states(best):
        return None
    rival = max((scores[k] for k in scores if said & states(k)), default=None)
    if rival is not None and rival >= scores[best] - FACT_MARGIN:
        return None
    return best
