"""The results the chains hand back: plain pydantic models, JSON-serialisable for the CLI, UI and server."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any, Literal

from langchain_core.documents import Document
from pydantic import BaseModel, Field, computed_field

from lectern.ingest.document import OCR_HEADING

QUOTE_CHARS = 300
AbstainReason = Literal["retrieval", "evidence", "model", "unsupported", "off_subject", "missing_subject"]
"""Why an answer abstained: nothing retrieved, too little evidence in the sources, the model said so,
its answer failed the check twice (restated the question, or said what no source says), the passages
it was taken from are not about the question's subject (rag.verify.off_subject), or (the agent) one
of the question's subjects has no passage or no fact of its own in the answer."""


def location(page: int | None, heading: str | None) -> str | None:
    """Where a passage is in its file, as people name it: "page 3", "slide 2: Results", "sheet Stock,
    rows 27-51", "chapter 4: Otters", "page 2, Install > Linux"; "(OCR)" marks text read by OCR."""
    parts = [f"page {page}"] if page is not None else []
    if heading == OCR_HEADING:
        return " ".join([*parts, "(OCR)"])
    if heading:
        parts.append(heading)
    return ", ".join(parts) or None


class Citation(BaseModel):
    """One source the answer cites; `number` is the [n] the model wrote."""

    number: int
    source: str
    page: int | None = None
    # the passage's heading path, "slide N: title", "sheet S, rows a-b", "chapter N: title", or OCR
    heading: str | None = None
    chunk_id: str
    quote: str
    inferred: bool = False  # the model wrote no [n]; lectern matched the answer to this source
    # the sentences of the passage that hold the answer's words: what the UI and CLI highlight
    highlights: list[str] = Field(default_factory=list)

    @classmethod
    def from_context(cls, ctx: Context) -> Citation:
        return cls(
            number=ctx.number,
            source=ctx.source,
            page=ctx.page,
            heading=ctx.heading,
            chunk_id=ctx.chunk_id,
            quote=quote_of(ctx.text),
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def location(self) -> str | None:
        return location(self.page, self.heading)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ocr(self) -> bool:
        """The passage was read by OCR: its text may hold recognition errors."""
        return self.heading == OCR_HEADING


class Context(BaseModel):
    """A retrieved passage as it was numbered in the prompt (the JSON form of a Document)."""

    number: int
    chunk_id: str
    source: str
    page: int | None = None
    heading: str | None = None
    title: str = ""
    text: str
    score: float | None = None
    dense_score: float | None = None  # cosine similarity to the question (evidence for abstention)
    trimmed: bool = False
    excerpt: bool = False  # the chunk's best sentences only (rag.sentences.select_sentences)

    @classmethod
    def from_document(cls, number: int, doc: Document) -> Context:
        meta = doc.metadata
        score, dense = meta.get("score"), meta.get("dense_score")
        return cls(
            number=number,
            chunk_id=str(meta.get("chunk_id", "")),
            source=str(meta.get("source", "")),
            page=meta.get("page"),
            heading=meta.get("heading"),
            title=str(meta.get("title", "")),
            text=doc.page_content,
            score=float(score) if score is not None else None,
            dense_score=float(dense) if dense is not None else None,
            trimmed=bool(meta.get("trimmed", False)),
        )

    def to_document(self) -> Document:
        meta: dict[str, Any] = self.model_dump(exclude={"text", "number"})
        return Document(page_content=self.text, metadata=meta)

    @property
    def label(self) -> str:
        """`file p.3` (or just `file`): how a source is named in prompts and citations."""
        name = Path(self.source).name or self.source or "unknown"
        return f"{name} p.{self.page}" if self.page is not None else name


class Answer(BaseModel):
    """A cited answer. `abstained` is true when the sources did not contain the answer."""

    question: str
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    contexts: list[Context] = Field(default_factory=list)
    abstained: bool = False
    rewritten_question: str | None = None  # chat: the standalone question actually retrieved with
    reasoning: str | None = None  # chain-of-thought variant: the text before "Answer:"
    dropped_citations: list[int] = Field(default_factory=list)  # [n] that matched no source
    # [n] the model wrote whose source holds little of the answer, replaced by the sources that do
    unsupported_citations: list[int] = Field(default_factory=list)
    structured: bool = False  # asked for JSON
    parse_error: str | None = None  # JSON was asked for but invalid: text parsing was used instead
    raw: str = ""  # the model's full output
    support: float | None = None  # share of the answer's new words found in its best cited source
    # P(the answer is in the sources) from the evidence before generation (rag.evidence.assess)
    evidence: float | None = None
    abstained_by: AbstainReason | None = None
    # the check the model's first answer failed (rag.verify), when it was asked again for a source's words
    retried: str | None = None
    # the model's answer when a check replaced it (a source's words) or withdrew it; None: it stands
    first_answer: str | None = None


AnswerStream = Iterable[str | Answer]
"""What QAChain.stream_answer and ChatSession.stream_ask yield: the model's text in str chunks as it
is written, then the Answer, last."""


def answer_text(parts: AnswerStream) -> Generator[str, None, Answer]:
    """The text chunks of an answer stream, returning its Answer: `answer = yield from answer_text(parts)`."""
    answer: Answer | None = None
    for part in parts:
        if isinstance(part, Answer):
            answer = part
        else:
            yield part
    if answer is None:
        raise RuntimeError("the answer stream ended without an Answer")
    return answer


def final_answer(parts: AnswerStream, on_text: Callable[[str], None] | None = None) -> Answer:
    """Consume an answer stream: each text chunk goes to `on_text` (printed, shown), the Answer is returned."""
    text = answer_text(parts)
    while True:
        try:
            chunk = next(text)
        except StopIteration as end:
            return end.value
        if on_text is not None:
            on_text(chunk)


SummaryMethod = Literal["stuff", "refine", "map_reduce"]


UNSUPPORTED_FLAG = "[not in the sources]"


class SummarySentence(BaseModel):
    """One sentence of a summary, checked against the passages summarized (rag.faithful)."""

    text: str
    before: str = ""  # what stood between it and the previous sentence (" ", a line break)
    claim: bool = True  # false for what says nothing about the text ("Here is a summary:", "2.")
    sources: list[int] = Field(default_factory=list)  # the [n] of the passages that hold it
    support: float = 0.0  # the best passage's rarity-weighted share of its words (rag.citations)
    problem: str | None = None  # why it is not supported (rag.faithful.NOT_IN_SOURCES, ...)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def supported(self) -> bool:
        return self.problem is None


class WithheldSentence(BaseModel):
    """A sentence of a partial summary (a map step's, a collapse's, refine's running summary) that the
    passages its step read do not support (rag.faithful): left out before the next step read it."""

    stage: str  # "map", "collapse" or "refine"
    step: int  # the model call that wrote it, from 1, as `SummaryResult.steps` counts them
    text: str
    passages: list[int] = Field(default_factory=list)  # the [n] of the passages that step read
    support: float = 0.0
    problem: str = ""


class SummaryResult(BaseModel):
    """A summary and how it was made: `steps` counts LLM calls, `chunks` the input passages.

    `method` is what ran and `requested` what was asked: a text that fits the window in one call is
    summarized by stuff whatever was asked, and `reason` says so. `sentences` are the summary's
    sentences checked against the passages (numbered 1..chunks, as `citations` cite them);
    `faithfulness` is the share of its claims supported. With `dropped`, the unsupported ones are
    left out of `summary` (they stay in `sentences` and `unsupported`). `withheld` lists what the
    partial summaries of refine and map_reduce wrote that their passages do not support, left out
    before the next step (and so never in `sentences`)."""

    summary: str
    method: str
    scope: str = ""
    chunks: int = 0
    steps: int = 0
    requested: str = ""
    reason: str = ""
    sentences: list[SummarySentence] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    faithfulness: float | None = None  # None: not checked
    dropped: bool = False
    withheld: list[WithheldSentence] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def unsupported(self) -> list[str]:
        return [s.text for s in self.sentences if not s.supported]

    def marked(self, flag: Callable[[str], str] = lambda text: f"{text} {UNSUPPORTED_FLAG}") -> str:
        """The summary with [n] after each supported sentence and `flag(sentence)` for the others
        (left out when dropped): what the CLI and the UI show."""
        if not self.sentences:
            return self.summary
        parts = []
        for s in self.sentences:
            if s.supported:
                cites = " " + "".join(f"[{n}]" for n in s.sources) if s.sources else ""
                parts.append(s.before + s.text + cites)
            elif not self.dropped:
                parts.append(s.before + flag(s.text))
        return "".join(parts).strip()


def quote_of(text: str, limit: int = QUOTE_CHARS) -> str:
    """The passage shortened to a readable length, cut at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"
