"""Cited question answering: retrieve, fit the sources into the window, ask, parse [n] citations.

chain = QAChain(llm, retriever, QAOptions(k=5), Corpus.of(searcher))  # or build_qa_chain(llm, retriever, k=5)
answer = chain.invoke({"question": "How often is the pump serviced?"})   # -> Answer
for part in chain.stream_answer("How often ..."):                       # str..., then Answer
    ...

A chain built from the settings comes from rag.workspace (Workspace.qa_chain, chain_from_settings):
the one place that reads them (rag.workspace.qa_options).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, Field

from lectern.errors import UnknownKey
from lectern.ingest import bm25_terms
from lectern.rag.citations import (
    UNSUPPORTED,
    attribute_sentences,
    grounding_note,
    highlights,
    is_abstention,
    parse_citations,
    strip_citations,
    support_scores,
    without_markers,
)
from lectern.rag.evidence import Calibration, Evidence, assess, names
from lectern.rag.limits import check_question
from lectern.rag.prompts import (
    CONCISE_STOP,
    CONCISE_VARIANTS,
    EXTRACT_TOKENS,
    NO_ANSWER,
    QA_EXTRACT,
    answer_budget,
    format_sources,
    qa_prompt,
)
from lectern.rag.sentences import (
    EXTRA,
    MEANING_WEIGHT,
    NEIGHBOURS,
    ORDER,
    SENTENCES,
    Similarity,
    TermWeights,
    remembered,
    select_sentences,
    sentence_scores,
    sentence_spans,
)
from lectern.rag.types import AbstainReason, Answer, Citation, Context
from lectern.rag.verify import (
    FACT_MEANING,
    RESTATES,
    SCATTERED,
    WRONG_FACT,
    answer_problem,
    asked_kind,
    clean_span,
    locate,
    off_subject,
    values,
    wrong_fact,
)
from lectern.rag.window import fit_contexts, generation_kwargs

if TYPE_CHECKING:
    from lectern.rag.retrieval import Searcher

__all__ = [
    "Corpus",
    "QAChain",
    "QAOptions",
    "build_qa_chain",
    "cited_answer",
    "grounding_note",
    "is_abstention",
    "parse_citations",
    "split_reasoning",
    "stream_answer",
]

QAInput = str | dict[str, Any]

_ANSWER_MARK = re.compile(r"(?im)^\s*\**answer\**\s*:\s*")


class StructuredAnswer(BaseModel):
    """The JSON the structured mode asks the model for."""

    answer: str
    citations: list[int] = Field(default_factory=list)


@dataclass
class _Prepared:
    question: str
    contexts: list[Context]
    messages: list[BaseMessage] | None  # None: abstain without calling the model
    evidence: Evidence | None = None
    abstained_by: AbstainReason | None = None
    chunks: dict[str, Context] = field(default_factory=dict)  # the retrieved chunks whole, by chunk id
    similarity: Similarity | None = None  # this question's sentence cosines, each computed once


CONTEXT_FORMS = ("sentences", "chunks")


@dataclass(frozen=True)
class QAOptions:
    """How the chain answers: every choice of the `answer`, `retrieval` and `llm` settings it reads
    (rag.workspace.qa_options makes them from the settings; the defaults are the settings' own)."""

    k: int | None = None  # chunks kept of what the retriever returns (None: all)
    variant: str = "concise"  # the prompt (rag.prompts.QA_PROMPTS); answer.prompt
    max_new_tokens: int = 256
    min_score: float = 0.0  # a retrieved chunk scoring less is dropped
    structured: bool = False  # JSON answer + citation numbers (StructuredAnswer)
    context: str = "sentences"  # what the model is shown of the chunks: CONTEXT_FORMS
    sentences: int = SENTENCES
    neighbours: int = NEIGHBOURS
    order: str = ORDER
    evidence: bool = True  # abstain before the model when the sources lack the question's subject
    calibration: Calibration | None = None  # the evidence gate's model (None: rag.evidence's default)
    meaning: float = MEANING_WEIGHT
    by_meaning: int = EXTRA
    verify: bool = True  # rag.verify's answer check
    together: bool = False
    subject: bool = True  # withdraw an answer taken from another subject's passages
    facts: bool = False  # ask again for the date or number of the sentence that answers

    def __post_init__(self) -> None:
        if self.context not in CONTEXT_FORMS:
            raise UnknownKey("answer context", self.context, list(CONTEXT_FORMS))


@dataclass(frozen=True)
class Corpus:
    """What the chain knows of the collection behind its retriever: its IDF (question words weighed
    by rarity), its words (the question's spelling corrected against them) and its embedder (the
    cosines of the evidence gate and of the selection). Without them the chain weighs words over
    the passages shown alone and reads no meaning."""

    term_weights: TermWeights | None = None
    spelling: Callable[[Sequence[str]], list[str]] | None = None
    similarity: Similarity | None = None

    @classmethod
    def of(cls, searcher: Searcher) -> Corpus:
        return cls(searcher.term_weights, searcher.spelled, searcher.similarities)


class QAChain(Runnable[QAInput, Answer]):
    """A runnable from a question (str or {"question": ...}) to a cited Answer.

    The steps, each a method: `retrieve` (k chunks), `assess` (is the question's subject in them at
    all? below the calibrated threshold the chain abstains without asking the model), `select`
    (the chunks' best sentences, or whole chunks), `prepare` (fit the window, format the prompt),
    then the model, then `finish` (citations checked against the sources, highlights).
    """

    def __init__(
        self,
        llm: BaseChatModel,
        retriever: BaseRetriever,
        options: QAOptions | None = None,
        corpus: Corpus | None = None,
    ) -> None:
        self.llm = llm
        self.retriever = retriever
        self.options = options = options or QAOptions()
        self.corpus = corpus or Corpus()
        self.template = qa_prompt(options.variant, structured=options.structured)  # UnknownKey early

    def _generation(self, question: str) -> dict[str, Any]:
        """Per-call generation options: a concise prompt gets a short answer budget and stops at a
        blank line, so a small model does not ramble for max_new_tokens on a CPU."""
        if self.options.variant in CONCISE_VARIANTS and not self.options.structured:
            budget = min(self.options.max_new_tokens, answer_budget(question))
            return {**generation_kwargs(self.llm, budget), "stop": list(CONCISE_STOP)}
        return generation_kwargs(self.llm, self.options.max_new_tokens)

    def invoke(self, input: QAInput, config: RunnableConfig | None = None, **kwargs: Any) -> Answer:
        prepared = self.prepare(question_of(input), config)
        if prepared.messages is None:
            return self._abstain(prepared)
        raw = self.llm.invoke(prepared.messages, config, **self._generation(prepared.question)).text
        return self.review(prepared, self.finish(prepared, raw), config)

    def stream_answer(self, input: QAInput, config: RunnableConfig | None = None) -> Iterator[str | Answer]:
        """Yield the model's text as it streams (str chunks), then the final Answer, always last.

        The chunks are the raw model output; the Answer's `answer` is the cleaned text (abstain
        sentence normalised, chain-of-thought reasoning removed, unknown [n] dropped). When the
        chain abstains before generation (nothing retrieved, or too little evidence) the model is
        not called: one chunk with NO_ANSWER, then the Answer.
        """
        prepared = self.prepare(question_of(input), config)
        if prepared.messages is None:
            yield NO_ANSWER
            yield self._abstain(prepared)
            return
        parts: list[str] = []
        for chunk in self.llm.stream(prepared.messages, config, **self._generation(prepared.question)):
            text = chunk.text
            if text:
                parts.append(text)
                yield text
        yield self.review(prepared, self.finish(prepared, "".join(parts)), config)

    def retrieve(self, question: str, config: RunnableConfig | None = None) -> list[Document]:
        """Retrieved documents in rank order, cut to k and to those scoring at least min_score."""
        docs = self.retriever.invoke(question, config)
        docs = [d for d in docs if (score := _score(d)) is None or score >= self.options.min_score]
        return docs[: self.options.k] if self.options.k is not None else docs

    def terms(self, question: str) -> list[str]:
        """The question's stemmed terms, misspelled ones corrected against the collection's words."""
        terms = bm25_terms.terms(question)
        return self.corpus.spelling(terms) if self.corpus.spelling is not None else terms

    def names(self, question: str) -> list[str]:
        """The question's names (rag.evidence.names), spelled as its terms are: "Vlota" -> "volta"."""
        found = names(question)
        return self.corpus.spelling(found) if self.corpus.spelling is not None and found else found

    def assess(
        self, question: str, contexts: list[Context], similarity: Similarity | None = None
    ) -> Evidence:
        """How likely the answer is in these sources: how close in meaning the best chunk and sentence
        are to the question, and whether they hold its names (rag.evidence)."""
        return assess(
            question,
            contexts,
            self.corpus.term_weights,
            self.options.calibration,
            terms=self.terms(question),
            similarity=similarity or self.corpus.similarity,
            named=self.names(question),
        )

    def select(
        self, question: str, contexts: list[Context], similarity: Similarity | None = None
    ) -> list[Context]:
        """What the model is shown: the best sentences (by words and meaning) with their neighbours,
        or the whole chunks."""
        if self.options.context == "chunks":
            return contexts
        return select_sentences(
            question,
            contexts,
            self.corpus.term_weights,
            top=self.options.sentences,
            neighbours=self.options.neighbours,
            terms=self.terms(question),
            order=self.options.order,
            similarity=similarity or self.corpus.similarity,
            meaning=self.options.meaning,
            extra=self.options.by_meaning,
        )

    def prepare(self, question: str, config: RunnableConfig | None = None) -> _Prepared:
        budget = self._generation(question).get("max_new_tokens", self.options.max_new_tokens)
        # a question the window cannot hold is a clear error (ContextTooLong), never an abstention
        fit_contexts(self.llm, self.template, question, [], max_new_tokens=budget)
        docs = self.retrieve(question, config)
        if not docs:
            return _Prepared(question, [], None, abstained_by="retrieval")
        retrieved = [Context.from_document(i, d) for i, d in enumerate(docs, start=1)]
        # the gate and the selection read the same sentences' cosines: each is embedded once
        similarity = remembered(self.corpus.similarity) if self.corpus.similarity is not None else None
        evidence = self.assess(question, retrieved, similarity) if self.options.evidence else None
        if evidence is not None and not evidence.answerable:
            return _Prepared(question, retrieved, None, evidence, "evidence")
        contexts = fit_contexts(
            self.llm,
            self.template,
            question,
            self.select(question, retrieved, similarity),
            max_new_tokens=budget,
        )
        if not contexts:
            return _Prepared(question, [], None, evidence, "retrieval")
        messages = self.template.format_messages(sources=format_sources(contexts), question=question)
        chunks = {c.chunk_id: c for c in retrieved}
        return _Prepared(question, contexts, messages, evidence, chunks=chunks, similarity=similarity)

    def finish(self, prepared: _Prepared, raw: str) -> Answer:
        """Parse the model's output into an Answer against the sources it was shown (cited_answer)."""
        answer = cited_answer(
            prepared.question,
            prepared.contexts,
            raw,
            term_weights=self.corpus.term_weights,
            variant=self.options.variant,
            structured=self.options.structured,
        )
        if prepared.evidence is not None:
            answer.evidence = round(prepared.evidence.probability, 4)
        return answer

    def review(self, prepared: _Prepared, answer: Answer, config: RunnableConfig | None = None) -> Answer:
        """The model's answer after the checks that can ask again or withdraw it: its words
        (`check`), its date or number (`right_fact`), its subject (`on_subject`)."""
        return self.on_subject(
            prepared, self.right_fact(prepared, self.check(prepared, answer, config), config)
        )

    def check(self, prepared: _Prepared, answer: Answer, config: RunnableConfig | None = None) -> Answer:
        """The answer as it is when it passes rag.verify's check; else the model is asked once for a
        source's exact words, and the span is shown (citing the source that holds it) when it passes
        the check and is found in a source. Otherwise an answer that restates the question is kept
        and one whose words no source holds becomes an abstention."""
        if (
            not self.options.verify
            or answer.abstained
            or self.options.variant not in CONCISE_VARIANTS
            or self.options.structured
        ):
            return answer
        problem = answer_problem(
            answer.answer, prepared.question, prepared.contexts, together=self.options.together
        )
        if problem is None:
            return answer
        messages = QA_EXTRACT.format_messages(
            sources=format_sources(prepared.contexts), question=prepared.question
        )
        options = {**generation_kwargs(self.llm, EXTRACT_TOKENS), "stop": ["\n"]}
        raw = self.llm.invoke(messages, config, **options).text
        span = clean_span(raw)
        number = None
        if (
            span
            and answer_problem(span, prepared.question, prepared.contexts, together=self.options.together)
            is None
        ):
            number = locate(span, prepared.contexts)
        if number is None and problem in (RESTATES, SCATTERED):
            return answer  # its words are the question's and the sources', or all in the sources: keep it
        update: dict[str, Any] = {
            "retried": problem,
            "raw": f"{answer.raw}\n{raw}",
            "unsupported_citations": [],
        }
        if number is None:
            return _withdrawn(answer, "unsupported", **update)
        ctx = next(c for c in prepared.contexts if c.number == number)
        return _from_span(answer, span, ctx, prepared.question, **update)

    def right_fact(self, prepared: _Prepared, answer: Answer, config: RunnableConfig | None = None) -> Answer:
        """The answer, or the date or number of the sentence that answers the question when the
        model took another one (rag.verify.wrong_fact: "founded in 1906" where the founding sentence
        says 1899). The model is asked once more for a source's exact words with only that sentence
        and its neighbours shown; the new span replaces the answer when it states that sentence's
        value, else the answer stands."""
        if (
            not self.options.facts
            or answer.abstained
            or self.options.variant not in CONCISE_VARIANTS
            or self.options.structured
        ):
            return answer
        question, contexts = prepared.question, prepared.contexts
        spans = [sentence_spans(c.text) for c in contexts]
        scores = sentence_scores(
            question,
            contexts,
            spans,
            self.corpus.term_weights,
            terms=self.terms(question),
            similarity=prepared.similarity,
            meaning=self.options.meaning or FACT_MEANING,
        )
        best = wrong_fact(without_markers(answer.answer), question, contexts, scores)
        if best is None:
            return answer
        ci, si = best
        ctx, chunk_spans = contexts[ci], spans[ci]
        lo, hi = max(0, si - 1), min(len(chunk_spans) - 1, si + 1)
        focus = ctx.model_copy(update={"text": ctx.text[chunk_spans[lo][0] : chunk_spans[hi][1]]})
        messages = QA_EXTRACT.format_messages(sources=format_sources([focus]), question=question)
        options = {**generation_kwargs(self.llm, EXTRACT_TOKENS), "stop": ["\n"]}
        raw = self.llm.invoke(messages, config, **options).text
        span, kind = clean_span(raw), asked_kind(question) or ""
        update: dict[str, Any] = {"retried": WRONG_FACT, "raw": f"{answer.raw}\n{raw}"}
        stated = values(ctx.text[slice(*chunk_spans[si])], kind) - values(question, kind)
        if not span or not values(span, kind) & stated:
            return answer.model_copy(update=update)
        return _from_span(answer, span, ctx, question, unsupported_citations=[], **update)

    def on_subject(self, prepared: _Prepared, answer: Answer) -> Answer:
        """The answer, withdrawn when the chunks it cites are not about the question's subject
        (rag.verify.off_subject): an answer built from another article is no answer."""
        if not self.options.subject or answer.abstained or not answer.citations:
            return answer
        by_number = {c.number: c for c in prepared.contexts}
        shown = [by_number[c.number] for c in answer.citations if c.number in by_number]
        cited = [prepared.chunks.get(c.chunk_id, c) for c in shown]  # whole: an excerpt may say "he"
        if not off_subject(prepared.question, cited, self.names(prepared.question)):
            return answer
        return _withdrawn(answer, "off_subject")

    def _abstain(self, prepared: _Prepared) -> Answer:
        return Answer(
            question=prepared.question,
            answer=NO_ANSWER,
            contexts=prepared.contexts,
            abstained=True,
            abstained_by=prepared.abstained_by,
            evidence=round(prepared.evidence.probability, 4) if prepared.evidence else None,
            structured=self.options.structured,
        )


def cited_answer(
    question: str,
    contexts: Sequence[Context],
    raw: str,
    *,
    term_weights: TermWeights | None = None,
    variant: str = "concise",
    structured: bool = False,
) -> Answer:
    """An Answer from what a model wrote over numbered `contexts`: the chain's (QAChain.finish) and
    the agent's tool loop's alike. Its [n] are checked against the sources, unsupported ones replaced
    and missing ones inferred, an abstention recognised, and each citation's passage highlighted.
    `variant` and `structured` say how the model was asked (JSON, or reasoning before "Answer:")."""
    answer = _parse(question, list(contexts), raw, term_weights, variant, structured)
    if not answer.abstained:
        for citation in answer.citations:
            passage = next(c.text for c in answer.contexts if c.number == citation.number)
            citation.highlights = highlights(answer.answer, question, passage)
    return answer


def _parse(
    question: str,
    contexts: list[Context],
    raw: str,
    term_weights: TermWeights | None,
    variant: str,
    structured: bool,
) -> Answer:
    parse_error: str | None = None
    extra: list[int] = []
    text = raw
    reasoning: str | None = None
    if structured:
        try:
            parsed = parse_structured(raw)
            text, extra = parsed.answer, parsed.citations
        except ValueError as err:
            parse_error = str(err).splitlines()[0] if str(err) else type(err).__name__
    elif variant == "chain_of_thought":
        reasoning, text = split_reasoning(raw)
    text = clean_answer(text)
    by_number = {c.number: c for c in contexts}
    numbers = list(dict.fromkeys([*parse_citations(text), *extra]))
    valid = [n for n in numbers if n in by_number]
    dropped = [n for n in numbers if n not in by_number]
    text = strip_citations(text, set(dropped)).strip()
    answer = Answer(
        question=question,
        answer=text,
        citations=[Citation.from_context(by_number[n]) for n in valid],
        contexts=contexts,
        reasoning=reasoning,
        dropped_citations=dropped,
        structured=structured,
        parse_error=parse_error,
        raw=raw,
    )
    if is_abstention(text, cited=bool(valid)):
        answer.answer, answer.citations, answer.abstained = NO_ANSWER, [], True
        answer.abstained_by = "model"
        return answer
    if valid:
        support = support_scores(text, question, contexts, term_weights)
        answer.support = max(support[n] for n in valid)
        if answer.support >= UNSUPPORTED:
            return answer
        # The named sources hold almost none of the answer (small models sometimes write [1]
        # whatever the passage): cite the sources the words come from, if any does.
        plain = strip_citations(text, set(valid)).strip()
        marked, inferred, share = attribute_sentences(plain, question, contexts, term_weights)
        if inferred and set(inferred) != set(valid):
            answer.unsupported_citations = [n for n in valid if n not in inferred]
            answer.answer, answer.support = marked, share
            answer.citations = _inferred(by_number, inferred)
        return answer
    # Small models often answer well but write no [n]: cite, sentence by sentence, the sources
    # each sentence came from.
    marked, inferred, answer.support = attribute_sentences(text, question, contexts, term_weights)
    answer.citations = _inferred(by_number, inferred)
    if inferred:
        answer.answer = marked
    return answer


def build_qa_chain(
    llm: BaseChatModel,
    retriever: BaseRetriever,
    options: QAOptions | None = None,
    corpus: Corpus | None = None,
    **changes: Any,
) -> QAChain:
    """The QA runnable: `.invoke({"question": q})` or `.invoke(q)` -> Answer; `.stream_answer(q)`.
    `changes` replace fields of `options` (QAOptions: k, variant, verify...) or of `corpus` (Corpus:
    term_weights, spelling, similarity) by name: build_qa_chain(llm, retriever, k=3, evidence=False)."""
    known = {f.name for f in fields(Corpus)}
    collection = {name: changes.pop(name) for name in list(changes) if name in known}
    return QAChain(
        llm, retriever, replace(options or QAOptions(), **changes), replace(corpus or Corpus(), **collection)
    )


def stream_answer(
    llm: BaseChatModel, retriever: BaseRetriever, question: QAInput, **options: Any
) -> Iterator[str | Answer]:
    """Text chunks as the model writes them, then the Answer (see QAChain.stream_answer)."""
    return build_qa_chain(llm, retriever, **options).stream_answer(question)


def question_of(input: QAInput) -> str:
    if isinstance(input, dict):
        value = input.get("question")
        if not isinstance(value, str):
            raise TypeError('the QA chain takes a question string or {"question": str}')
        input = value
    return check_question(input)  # an empty one is InvalidInput, a clear error at every edge


def clean_answer(text: str) -> str:
    """The answer as a reader should see it: a leading "Answer:" and a source line the model
    copied ("[1] (file p.2) ...") are dropped."""
    text = _ANSWER_MARK.sub("", text.strip(), count=1)
    copied = re.match(r"^\[\d+\]\s*\([^)]*\)\s*", text)
    if copied:
        text = text[copied.end() :]
    return text.strip()


def split_reasoning(raw: str) -> tuple[str | None, str]:
    """Chain-of-thought output: (reasoning, answer) split at the last "Answer:" line."""
    marks = list(_ANSWER_MARK.finditer(raw))
    if not marks:
        return None, raw
    last = marks[-1]
    reasoning = re.sub(r"(?i)^\s*\**reasoning\**\s*:\s*", "", raw[: last.start()]).strip()
    return reasoning or None, raw[last.end() :].strip()


def parse_structured(raw: str) -> StructuredAnswer:
    """The JSON object in the model's output (code fences and chatter around it are ignored)."""
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the model's output")
    data = json.loads(raw[start : end + 1])
    return StructuredAnswer.model_validate(data)


def structured_value(answer: Answer) -> dict[str, Any] | None:
    """The JSON object the model wrote for a structured answer (under its schema), or None when the
    chain abstained before the model was asked (then only the chain's answer exists)."""
    try:
        value = json.loads(answer.raw or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _from_span(answer: Answer, span: str, ctx: Context, question: str, **update: Any) -> Answer:
    """The answer replaced by a source's exact words, citing that source alone."""
    citation = Citation.from_context(ctx).model_copy(
        update={"highlights": highlights(span, question, ctx.text)}
    )
    fields = {"answer": f"{span} [{ctx.number}]", "citations": [citation], "support": 1.0}
    return answer.model_copy(update={**update, **fields, "first_answer": _first(answer)})


def _withdrawn(answer: Answer, reason: AbstainReason, **update: Any) -> Answer:
    """The answer replaced by the abstention, with why (a check it failed) and any other fields."""
    fields = {
        "answer": NO_ANSWER,
        "citations": [],
        "abstained": True,
        "abstained_by": reason,
        "support": None,
    }
    return answer.model_copy(update={**update, **fields, "first_answer": _first(answer)})


def _first(answer: Answer) -> str:
    """The model's words before any check replaced them (a withdrawal after a replacement keeps them)."""
    return answer.first_answer if answer.first_answer is not None else answer.answer


def _inferred(by_number: dict[int, Context], numbers: list[int]) -> list[Citation]:
    return [Citation.from_context(by_number[n]).model_copy(update={"inferred": True}) for n in numbers]


def _score(doc: Document) -> float | None:
    score = doc.metadata.get("score")
    return float(score) if score is not None else None
