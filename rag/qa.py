"""Cited question answering: retrieve, fit the sources into the window, ask, parse [n] citations.

chain = build_qa_chain(llm, retriever, k=5)
answer = chain.invoke({"question": "How often is the pump serviced?"})   # -> Answer
for part in chain.stream_answer("How often ..."):                       # str..., then Answer
    ...
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, Field

from ingest import bm25
from rag.context import fit_contexts, generation_kwargs
from rag.prompts import NO_ANSWER, format_sources, qa_prompt
from rag.types import Answer, Citation, Context, quote_of

QAInput = str | dict[str, Any]

_CITATION = re.compile(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
_ABSTAIN = re.compile(
    r"\b(i (?:do not|don't|dont) know"
    r"|(?:do|does|did) not (?:contain|include|mention|provide|say)"
    r"|(?:don't|doesn't|didn't) (?:contain|include|mention|provide|say)"
    r"|no (?:relevant )?information"
    r"|not (?:mentioned|provided|stated|specified) in the (?:sources|documents|context)"
    r"|(?:cannot|can't|unable to) (?:be )?answer(?:ed)?"
    r"|not enough information)\b"
)
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


class QAChain(Runnable[QAInput, Answer]):
    """A runnable from a question (str or {"question": ...}) to a cited Answer."""

    def __init__(
        self,
        llm: BaseChatModel,
        retriever: BaseRetriever,
        *,
        k: int | None = None,
        variant: str = "zero_shot",
        max_new_tokens: int = 256,
        min_score: float = 0.0,
        structured: bool = False,
    ) -> None:
        self.llm = llm
        self.retriever = retriever
        self.k = k
        self.variant = variant
        self.template = qa_prompt(variant, structured=structured)  # raises UnknownKey early
        self.max_new_tokens = max_new_tokens
        self.min_score = min_score
        self.structured = structured
        self._gen = generation_kwargs(llm, max_new_tokens)

    def invoke(self, input: QAInput, config: RunnableConfig | None = None, **kwargs: Any) -> Answer:
        prepared = self.prepare(question_of(input), config)
        if prepared.messages is None:
            return self._abstain(prepared)
        raw = self.llm.invoke(prepared.messages, config, **self._gen).text
        return self.finish(prepared, raw)

    def stream_answer(self, input: QAInput, config: RunnableConfig | None = None) -> Iterator[str | Answer]:
        """Yield the model's text as it streams (str chunks), then the final Answer, always last.

        The chunks are the raw model output; the Answer's `answer` is the cleaned text (abstain
        sentence normalised, chain-of-thought reasoning removed, unknown [n] dropped). When nothing
        was retrieved the model is not called: one chunk with NO_ANSWER, then the Answer.
        """
        prepared = self.prepare(question_of(input), config)
        if prepared.messages is None:
            yield NO_ANSWER
            yield self._abstain(prepared)
            return
        parts: list[str] = []
        for chunk in self.llm.stream(prepared.messages, config, **self._gen):
            text = chunk.text
            if text:
                parts.append(text)
                yield text
        yield self.finish(prepared, "".join(parts))

    def retrieve(self, question: str, config: RunnableConfig | None = None) -> list[Document]:
        """Retrieved documents in rank order, cut to k and to those scoring at least min_score."""
        docs = self.retriever.invoke(question, config)
        docs = [d for d in docs if (score := _score(d)) is None or score >= self.min_score]
        return docs[: self.k] if self.k is not None else docs

    def prepare(self, question: str, config: RunnableConfig | None = None) -> _Prepared:
        docs = self.retrieve(question, config)
        if not docs:
            return _Prepared(question, [], None)
        contexts = [Context.from_document(i, d) for i, d in enumerate(docs, start=1)]
        contexts = fit_contexts(
            self.llm, self.template, question, contexts, max_new_tokens=self.max_new_tokens
        )
        if not contexts:
            return _Prepared(question, [], None)
        messages = self.template.format_messages(sources=format_sources(contexts), question=question)
        return _Prepared(question, contexts, messages)

    def finish(self, prepared: _Prepared, raw: str) -> Answer:
        """Parse the model's output into an Answer against the sources it was shown."""
        parse_error: str | None = None
        extra: list[int] = []
        text = raw
        reasoning: str | None = None
        if self.structured:
            try:
                parsed = parse_structured(raw)
                text, extra = parsed.answer, parsed.citations
            except ValueError as err:
                parse_error = str(err).splitlines()[0] if str(err) else type(err).__name__
        elif self.variant == "chain_of_thought":
            reasoning, text = split_reasoning(raw)
        by_number = {c.number: c for c in prepared.contexts}
        numbers = list(dict.fromkeys([*parse_citations(text), *extra]))
        valid = [n for n in numbers if n in by_number]
        dropped = [n for n in numbers if n not in by_number]
        text = strip_citations(text, set(dropped)).strip()
        answer = Answer(
            question=prepared.question,
            answer=text,
            citations=[_citation(by_number[n]) for n in valid],
            contexts=prepared.contexts,
            reasoning=reasoning,
            dropped_citations=dropped,
            structured=self.structured,
            parse_error=parse_error,
            raw=raw,
        )
        if is_abstention(text, cited=bool(valid)):
            answer.answer, answer.citations, answer.abstained = NO_ANSWER, [], True
            return answer
        if valid:
            support = support_scores(text, prepared.question, prepared.contexts)
            answer.support = max(support[n] for n in valid)
            if answer.support >= UNSUPPORTED:
                return answer
            # The named sources hold almost none of the answer (small models sometimes write [1]
            # whatever the passage): cite the sources the words come from, if any does. Only then:
            # plain word overlap does not weigh rare words, so a source with a share of the words
            # may be the right one (a name appears in one passage, the topic's words in all).
            plain = strip_citations(text, set(valid)).strip()
            marked, inferred, share = attribute_sentences(plain, prepared.question, prepared.contexts)
            if inferred and set(inferred) != set(valid):
                answer.unsupported_citations = [n for n in valid if n not in inferred]
                answer.answer, answer.support = marked, share
                answer.citations = _inferred(by_number, inferred)
            return answer
        # Small models often answer well but write no [n]: cite, sentence by sentence, the sources
        # each sentence came from.
        marked, inferred, answer.support = attribute_sentences(text, prepared.question, prepared.contexts)
        answer.citations = _inferred(by_number, inferred)
        if inferred:
            answer.answer = marked
        return answer

    def _abstain(self, prepared: _Prepared) -> Answer:
        return Answer(
            question=prepared.question,
            answer=NO_ANSWER,
            contexts=prepared.contexts,
            abstained=True,
            structured=self.structured,
        )


def build_qa_chain(
    llm: BaseChatModel,
    retriever: BaseRetriever,
    *,
    k: int | None = None,
    variant: str = "zero_shot",
    max_new_tokens: int = 256,
    min_score: float = 0.0,
    structured: bool = False,
) -> QAChain:
    """The QA runnable: `.invoke({"question": q})` or `.invoke(q)` -> Answer; `.stream_answer(q)`."""
    return QAChain(
        llm,
        retriever,
        k=k,
        variant=variant,
        max_new_tokens=max_new_tokens,
        min_score=min_score,
        structured=structured,
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
    question = input.strip()
    if not question:
        raise ValueError("empty question")
    return question


def parse_citations(text: str) -> list[int]:
    """Source numbers cited as [n], [n, m] or [n][m], in order of first appearance, without repeats."""
    found: list[int] = []
    for match in _CITATION.finditer(text):
        found.extend(int(n) for n in re.split(r"[,;]", match.group(1)))
    return list(dict.fromkeys(found))


def strip_citations(text: str, numbers: set[int]) -> str:
    """Remove the given numbers from [n] markers (a marker left empty disappears)."""
    if not numbers:
        return text

    def keep(match: re.Match[str]) -> str:
        kept = [n.strip() for n in re.split(r"[,;]", match.group(2)) if int(n) not in numbers]
        return f"{match.group(1)}[{', '.join(kept)}]" if kept else ""

    return re.sub(r"(\s?)" + _CITATION.pattern, keep, text)


def _normal(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").lower().split())


def is_abstention(text: str, *, cited: bool) -> bool:
    """True when the model said it cannot answer: it opens with NO_ANSWER, or says it (or a common
    "I don't know" phrasing) without citing any source."""
    norm = _normal(_CITATION.sub(" ", text))  # "[1] The documents do not contain..." still abstains
    if not norm:
        return True
    no_answer = _normal(NO_ANSWER)
    if norm.startswith(no_answer):
        return True
    return not cited and (no_answer in norm or _ABSTAIN.search(norm) is not None)


def support_scores(answer: str, question: str, contexts: list[Context]) -> dict[int, float]:
    """For each source, the share of the answer's content words (stemmed, beyond the question's own
    words) that it contains: how much of the answer it could have given."""
    words = set(bm25.terms(_CITATION.sub(" ", answer)))
    novel = words - set(bm25.terms(question)) or words
    if not novel:
        return {c.number: 0.0 for c in contexts}
    return {c.number: len(novel & set(bm25.terms(c.text))) / len(novel) for c in contexts}


SUPPORTED = 0.6  # share of an answer's new words a source must hold to be its source
UNSUPPORTED = 0.25  # a cited source holding less than this of them is replaced when another holds SUPPORTED


def attribute(support: dict[int, float], threshold: float = SUPPORTED, most: int = 3) -> list[int]:
    """Sources holding most (60%) of the answer's new words, and near the best one."""
    best = max(support.values(), default=0.0)
    if best < threshold:
        return []
    chosen = [n for n, s in sorted(support.items(), key=lambda kv: (-kv[1], kv[0])) if s >= 0.8 * best]
    return sorted(chosen[:most])


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def attribute_sentences(answer: str, question: str, contexts: list[Context]) -> tuple[str, list[int], float]:
    """Mark each sentence with the sources that hold most of its new words.

    Returns the answer with [n] markers after the supported sentences, the cited numbers in order,
    and the share of sentences (with any new words) that some source supports.
    """
    parts = [p for p in _SENTENCE_END.split(answer.strip()) if p]
    cited: list[int] = []
    marked: list[str] = []
    judged = supported = 0
    for sentence in parts:
        new = _has_new_words(sentence, question)  # a sentence that only restates the question is not judged
        chosen = attribute(support_scores(sentence, question, contexts)) if new else []
        judged += new
        supported += bool(chosen)
        cited.extend(n for n in chosen if n not in cited)
        marked.append(sentence + (" " + "".join(f"[{n}]" for n in chosen) if chosen else ""))
    return " ".join(marked), cited, (supported / judged if judged else 0.0)


def _has_new_words(sentence: str, question: str) -> bool:
    return bool(set(bm25.terms(sentence)) - set(bm25.terms(question)))


def grounding_note(answer: Answer, threshold: float = 0.5) -> str | None:
    """A warning for the reader when little of an answer is found in its sources (None: no warning).

    Small local models answer from memory when the sources lack the answer; this says so instead of
    letting a made-up answer pass for a cited one."""
    if answer.abstained or answer.support is None or answer.support >= threshold:
        return None
    if answer.support == 0:
        return "No source supports this answer: it may be made up. Check it against the passages."
    return f"Only {answer.support:.0%} of this answer is found in its sources: check it against the passages."


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


def _inferred(by_number: dict[int, Context], numbers: list[int]) -> list[Citation]:
    return [_citation(by_number[n]).model_copy(update={"inferred": True}) for n in numbers]


def _citation(ctx: Context) -> Citation:
    return Citation(
        number=ctx.number, source=ctx.source, page=ctx.page, chunk_id=ctx.chunk_id, quote=quote_of(ctx.text)
    )


def _score(doc: Document) -> float | None:
    score = doc.metadata.get("score")
    return float(score) if score is not None else None
