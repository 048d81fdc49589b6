"""Summaries by stuff, refine or map-reduce, one signature for all, chosen from SUMMARIZERS.

`summarize` runs stuff whenever the text fits one call (`fits_stuff`, the one rule), whatever
method was asked, and says so in the result's `reason`; its sentences are then checked against the
passages summarized (rag.faithful). The SUMMARIZERS themselves always do what they are named for.
Every prompt sent is checked to fit the window with `max_new_tokens` left for the output. What a
step writes loses what is not summary (`tidy`): sentences that only repeat the prompt's own
instructions, and a last sentence cut off by `max_new_tokens`. A partial
summary (refine's running summary, map_reduce's parts) passes on only the sentences that the
passages its step read support (rag.faithful.keep_supported, with `support`); the others are
recorded in the result's `withheld`.
`progress(done, total)` is called before the first LLM call, as (0, total), and after each call (or
batch); map-reduce's total grows when a collapse round turns out to be needed, and the last call is
always (steps, steps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompts import ChatPromptTemplate

from lectern.errors import ContextTooLong, NothingToSummarize, UnknownKey
from lectern.ingest import bm25_terms
from lectern.rag.citations import SUPPORTED
from lectern.rag.faithful import check, keep_supported, number_contexts
from lectern.rag.prompts import REFINE_INITIAL, REFINE_STEP, SUMMARIZE_MAP, SUMMARIZE_REDUCE, SUMMARIZE_STUFF
from lectern.rag.sentences import sentence_spans
from lectern.rag.types import Context, SummaryResult, WithheldSentence
from lectern.rag.window import (
    context_window,
    count_messages,
    count_tokens,
    ensure_fits,
    generation_kwargs,
    pack,
    prompt_tokens,
    split_to_tokens,
    tokens_left,
    trim_to_tokens,
)

Progress = Callable[[int, int], None]
SEPARATOR = "\n\n"
MIN_PIECE_TOKENS = 16  # below this the window is too small to summarize anything
MAX_COLLAPSE_ROUNDS = 10
_FINISHED = re.compile(r"[.!?\u2026:;][\"')\]\u201d]*$")  # a sentence's end, closing quotes allowed


def instruction_words(template: ChatPromptTemplate) -> frozenset[str]:
    """The words a prompt says itself (its messages with every variable empty), as search terms."""
    empty = {name: "" for name in template.input_variables}
    return frozenset(bm25_terms.terms(" ".join(m.text for m in template.format_messages(**empty))))


def tidy(text: str, instructions: frozenset[str], *, cut_off: bool) -> str:
    """What a summary step wrote, less what is not summary: each sentence whose words (two or more,
    or one before a colon: "Summary:") are all the prompt's `instructions` (a small model echoes
    "Rewrite the summary so that it also covers the new part."), and, when the output was `cut_off`
    at its token limit, its last sentence if unfinished ("Unve") and not the only one. The layout
    between the sentences kept stays."""

    def echoed(sentence: str) -> bool:
        words = set(bm25_terms.terms(sentence))
        return bool(words) and words <= instructions and (len(words) >= 2 or sentence.endswith(":"))

    spans = [(a, b) for a, b in sentence_spans(text) if not echoed(text[a:b])]
    if cut_off and len(spans) > 1 and not _FINISHED.search(text[spans[-1][0] : spans[-1][1]]):
        spans.pop()
    out: list[str] = []
    for a, b in spans:
        gap = text[:a][len(text[:a].rstrip()) :]  # the whitespace before the sentence
        out.append((gap if out else "") + text[a:b])
    return "".join(out)


UNSUPPORTED = ("mark", "drop")  # what becomes of a summary sentence the sources do not support


class Summarizer(Protocol):
    def __call__(
        self,
        llm: BaseChatModel,
        docs: Sequence[Document],
        *,
        token_max: int | None = None,
        max_new_tokens: int = 256,
        progress: Progress | None = None,
        batch_size: int = 8,
        scope: str = "",
        support: float = SUPPORTED,
    ) -> SummaryResult: ...


class _Calls:
    """Sends checked prompts and counts them; reports progress."""

    def __init__(
        self, llm: BaseChatModel, max_new_tokens: int, progress: Progress | None, total: int
    ) -> None:
        self.llm = llm
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.done = 0
        self.total = total
        self.gen = generation_kwargs(llm, max_new_tokens)
        if progress is not None:  # the total up front: a first call can take minutes on a CPU
            progress(0, total)

    def check(self, messages: list[BaseMessage], field: str) -> list[BaseMessage]:
        ensure_fits(self.llm, count_messages(self.llm, messages), self.max_new_tokens, field)
        return messages

    def one(self, template: ChatPromptTemplate, field: str = "documents", **variables: Any) -> str:
        reply = self.llm.invoke(self.check(template.format_messages(**variables), field), **self.gen)
        self._tick(1)
        return self._tidy(reply, instruction_words(template))

    def batch(self, template: ChatPromptTemplate, texts: Sequence[str], batch_size: int) -> list[str]:
        """One llm.batch call per group of `batch_size` prompts."""
        prompts = [self.check(template.format_messages(text=t), "documents") for t in texts]
        outs: list[str] = []
        instructions = instruction_words(template)
        for i in range(0, len(prompts), batch_size):
            group = prompts[i : i + batch_size]
            outs.extend(self._tidy(m, instructions) for m in self.llm.batch(list(group), **self.gen))  # type: ignore[arg-type]
            self._tick(len(group))
        return outs

    def _tidy(self, reply: BaseMessage, instructions: frozenset[str]) -> str:
        """The reply's text through `tidy`: cut off when it wrote `max_new_tokens` tokens (by its
        usage, else by the model's count of its text)."""
        text = reply.text.strip()
        used = reply.usage_metadata if isinstance(reply, AIMessage) else None
        written = used["output_tokens"] if used else count_tokens(self.llm, text)
        return tidy(text, instructions, cut_off=written >= self.max_new_tokens)

    def _tick(self, n: int) -> None:
        self.done += n
        self.total = max(self.total, self.done)
        if self.progress is not None:
            self.progress(self.done, self.total)


def _texts(docs: Sequence[Document]) -> list[str]:
    texts = [d.page_content.strip() for d in docs if d.page_content.strip()]
    if not texts:
        raise NothingToSummarize()
    return texts


def _room(llm: BaseChatModel, template: ChatPromptTemplate, max_new_tokens: int, **variables: Any) -> int:
    """Tokens left for {text} in `template` once the answer is reserved."""
    return tokens_left(llm, prompt_tokens(llm, template, text="", **variables), max_new_tokens)


def _split(llm: BaseChatModel, text: str, budget: int) -> list[str]:
    """`text` cut into parts of at most `budget` tokens; ContextTooLong when a piece that small
    leaves too little to summarize."""
    if budget < MIN_PIECE_TOKENS:
        raise ContextTooLong(tokens=MIN_PIECE_TOKENS - budget, window=context_window(llm), field="prompt")
    return split_to_tokens(llm, text, budget) if count_tokens(llm, text) > budget else [text]


def pack_texts(llm: BaseChatModel, texts: Sequence[str], budget: int) -> list[list[tuple[int, str]]]:
    """Consecutive texts grouped into pieces of at most `budget` tokens (a longer text split): each
    piece's parts, joined by SEPARATOR in a prompt, with the index of the text each comes from."""
    parts = [(i, part) for i, text in enumerate(texts) for part in _split(llm, text, budget)]

    def measure(group: list[tuple[int, str]]) -> int:
        return count_tokens(llm, SEPARATOR.join(t for _, t in group))

    pieces: list[list[tuple[int, str]]] = []
    start = 0
    while start < len(parts):
        rest = parts[start:]
        group = pack(llm, rest, budget, render=lambda p: p[1], separator=SEPARATOR, measure=measure)
        pieces.append(group or rest[:1])
        start += len(pieces[-1])
    return pieces


@dataclass(frozen=True)
class _Partial:
    """A text a step reads (a piece of the document, a partial summary) and the passages it holds or
    summarizes, as far as read: what the step's output is checked against."""

    text: str
    passages: tuple[Context, ...]


def _merged(passages: Iterable[Context]) -> tuple[Context, ...]:
    """One context per passage, the parts of a split passage joined, in order of first appearance."""
    texts: dict[int, list[str]] = {}
    first: dict[int, Context] = {}
    for c in passages:
        first.setdefault(c.number, c)
        if c.text not in texts.setdefault(c.number, []):
            texts[c.number].append(c.text)
    return tuple(c.model_copy(update={"text": " ".join(texts[n])}) for n, c in first.items())


def _passages(llm: BaseChatModel, docs: Sequence[Document], budget: int) -> list[_Partial]:
    """The non-empty passages numbered as the final check numbers them (1..len(docs)), a passage
    longer than `budget` tokens split into parts that fit."""
    contexts = [c for c in number_contexts(docs) if c.text.strip()]
    if not contexts:
        raise NothingToSummarize()
    return [
        _Partial(part, (c.model_copy(update={"text": part}),))
        for c in contexts
        for part in _split(llm, c.text.strip(), budget)
    ]


def _grouped(llm: BaseChatModel, partials: Sequence[_Partial], budget: int) -> list[_Partial]:
    """Consecutive partials packed into pieces of at most `budget` tokens, with their passages."""
    return [
        _Partial(
            SEPARATOR.join(t for _, t in group),
            _merged(c for i in dict.fromkeys(i for i, _ in group) for c in partials[i].passages),
        )
        for group in pack_texts(llm, [p.text for p in partials], budget)
    ]


def _keep(
    summary: str, read: tuple[Context, ...], support: float, stage: str, step: int
) -> tuple[str, list[WithheldSentence]]:
    """What of a partial summary the passages its step read support, and what is withheld."""
    kept, left_out = keep_supported(summary, read, threshold=support)
    passages = [c.number for c in read]
    return kept, [
        WithheldSentence(
            stage=stage,
            step=step,
            text=s.text,
            passages=passages,
            support=s.support,
            problem=s.problem or "",
        )
        for s in left_out
    ]


def fits_stuff(
    llm: BaseChatModel, docs: Sequence[Document], *, max_new_tokens: int = 256, token_max: int | None = None
) -> bool:
    """Whether the whole text goes in one stuff prompt with `max_new_tokens` left in the window
    (and, when `token_max` is given, is at most that many tokens)."""
    text = SEPARATOR.join(_texts(docs))
    if token_max is not None and count_tokens(llm, text) > token_max:
        return False
    return tokens_left(llm, prompt_tokens(llm, SUMMARIZE_STUFF, text=text), max_new_tokens) >= 0


def choose_method(
    llm: BaseChatModel,
    docs: Sequence[Document],
    *,
    method: str = "auto",
    max_new_tokens: int = 256,
    token_max: int | None = None,
) -> tuple[str, str]:
    """The method that runs for `method` and a short reason: stuff when the whole text fits one call
    (whatever was asked), else the method asked (map_reduce for auto)."""
    if method != "auto":
        get_summarizer(method)  # an unknown method is refused before any work
    if method == "stuff":
        return "stuff", "stuff, as asked"
    if fits_stuff(llm, docs, max_new_tokens=max_new_tokens, token_max=token_max):
        asked = "auto" if method == "auto" else f"{method} asked"
        return "stuff", f"stuff: the text fits the window in one call ({asked})"
    limit = "the window in one call" + (f" of token_max {token_max}" if token_max is not None else "")
    if method == "auto":
        return "map_reduce", f"map_reduce: the text does not fit {limit} (auto)"
    return method, f"{method}, as asked: the text does not fit {limit}"


def stuff(
    llm: BaseChatModel,
    docs: Sequence[Document],
    *,
    token_max: int | None = None,
    max_new_tokens: int = 256,
    progress: Progress | None = None,
    batch_size: int = 8,
    scope: str = "",
    support: float = SUPPORTED,
) -> SummaryResult:
    """One prompt with all the text; ContextTooLong(field="documents") when it does not fit."""
    text = SEPARATOR.join(_texts(docs))
    calls = _Calls(llm, max_new_tokens, progress, total=1)
    summary = calls.one(SUMMARIZE_STUFF, text=text)
    return SummaryResult(summary=summary, method="stuff", scope=scope, chunks=len(docs), steps=calls.done)


def refine(
    llm: BaseChatModel,
    docs: Sequence[Document],
    *,
    token_max: int | None = None,
    max_new_tokens: int = 256,
    progress: Progress | None = None,
    batch_size: int = 8,
    scope: str = "",
    support: float = SUPPORTED,
) -> SummaryResult:
    """Summarize the first piece, then refine the summary piece by piece in document order.

    Before each refine step the summary so far loses the sentences that the passages read so far do
    not support (none left: the next piece is summarized afresh). Pieces are packed so that a refine
    prompt fits with a summary of up to `max_new_tokens` (a longer summary is trimmed to that)."""
    budget = _room(llm, REFINE_STEP, max_new_tokens, summary="") - max_new_tokens
    if token_max is not None:
        budget = min(budget, token_max)
    pieces = _grouped(llm, _passages(llm, docs, budget), budget)
    calls = _Calls(llm, max_new_tokens, progress, total=len(pieces))
    summary = calls.one(REFINE_INITIAL, text=pieces[0].text)
    read = pieces[0].passages
    withheld: list[WithheldSentence] = []
    for piece in pieces[1:]:
        summary, left_out = _keep(summary, read, support, "refine", calls.done)
        withheld += left_out
        previous = trim_to_tokens(llm, summary, max_new_tokens)
        if previous:
            refined = calls.one(REFINE_STEP, summary=previous, text=piece.text)
        else:
            refined = calls.one(REFINE_INITIAL, text=piece.text)
        summary = refined or summary
        read = _merged(read + piece.passages)
    return SummaryResult(
        summary=summary, method="refine", scope=scope, chunks=len(docs), steps=calls.done, withheld=withheld
    )


def map_reduce(
    llm: BaseChatModel,
    docs: Sequence[Document],
    *,
    token_max: int | None = None,
    max_new_tokens: int = 256,
    progress: Progress | None = None,
    batch_size: int = 8,
    scope: str = "",
    support: float = SUPPORTED,
) -> SummaryResult:
    """Summarize pieces in batches, collapse the partial summaries in groups of at most `token_max`
    tokens until they fit `token_max` together, then reduce them into one summary.

    A partial summary that goes on to a collapse or the reduce keeps only the sentences that its
    piece's passages support; one left with none is not passed on."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cap = _room(llm, SUMMARIZE_REDUCE, max_new_tokens)
    limit = min(token_max, cap) if token_max is not None else cap
    budget = min(_room(llm, SUMMARIZE_MAP, max_new_tokens), limit)
    pieces = _grouped(llm, _passages(llm, docs, budget), budget)
    calls = _Calls(llm, max_new_tokens, progress, total=len(pieces) + (len(pieces) > 1))
    withheld: list[WithheldSentence] = []

    def run(stage: str, template: ChatPromptTemplate, inputs: list[_Partial]) -> list[_Partial]:
        """The step's outputs, each with the passages its input held; when more than one (so not yet
        the summary), each less what those passages do not support, and none left empty."""
        outs = calls.batch(template, [p.text for p in inputs], batch_size)
        partials = [_Partial(out, p.passages) for out, p in zip(outs, inputs, strict=True)]
        if len(partials) == 1:
            return partials
        kept = []
        first = calls.done - len(partials)  # the calls that wrote them: first + 1, first + 2, ...
        for step, partial in enumerate(partials, first + 1):
            text, left_out = _keep(partial.text, partial.passages, support, stage, step)
            withheld.extend(left_out)
            if text:
                kept.append(_Partial(text, partial.passages))
        return kept

    summaries = run("map", SUMMARIZE_MAP, pieces)
    rounds = 0
    while len(summaries) > 1 and count_tokens(llm, SEPARATOR.join(p.text for p in summaries)) > limit:
        rounds += 1
        if rounds > MAX_COLLAPSE_ROUNDS:
            tokens = count_tokens(llm, SEPARATOR.join(p.text for p in summaries))
            raise ContextTooLong(tokens=tokens, window=limit, field="summaries")
        groups = _grouped(llm, summaries, limit)
        calls.total = calls.done + len(groups) + 1
        summaries = run("collapse", SUMMARIZE_REDUCE, groups)
    if len(summaries) > 1:
        summary = calls.one(SUMMARIZE_REDUCE, text=SEPARATOR.join(p.text for p in summaries))
    else:
        summary = summaries[0].text if summaries else ""
        if calls.progress is not None and calls.total != calls.done:
            calls.total = calls.done
            calls.progress(calls.done, calls.total)
    return SummaryResult(
        summary=summary,
        method="map_reduce",
        scope=scope,
        chunks=len(docs),
        steps=calls.done,
        withheld=withheld,
    )


SUMMARIZERS: dict[str, Summarizer] = {"stuff": stuff, "refine": refine, "map_reduce": map_reduce}


def get_summarizer(method: str) -> Summarizer:
    if method not in SUMMARIZERS:
        raise UnknownKey("summary method", method, [*SUMMARIZERS, "auto"])
    return SUMMARIZERS[method]


def summarize(
    llm: BaseChatModel,
    docs: Sequence[Document],
    *,
    method: str = "auto",
    token_max: int | None = None,
    max_new_tokens: int = 256,
    progress: Progress | None = None,
    batch_size: int = 8,
    scope: str = "",
    support: float = SUPPORTED,
    unsupported: str = "mark",
) -> SummaryResult:
    """Summarize `docs` (chunks in document order) with a method of SUMMARIZERS, or "auto" (map_reduce
    when the text does not fit one call); a text that fits is summarized by stuff whatever was asked.
    Each summary sentence is checked against `docs` (rag.faithful): one whose best passage holds less
    than `support` of it is kept and flagged (`unsupported="mark"`) or left out ("drop"). Partial
    summaries are checked by the same rule before the next step (`withheld`)."""
    if unsupported not in UNSUPPORTED:
        raise UnknownKey("unsupported sentences policy", unsupported, list(UNSUPPORTED))
    chosen, reason = choose_method(
        llm, docs, method=method, max_new_tokens=max_new_tokens, token_max=token_max
    )
    result = get_summarizer(chosen)(
        llm,
        docs,
        token_max=token_max,
        max_new_tokens=max_new_tokens,
        progress=progress,
        batch_size=batch_size,
        scope=scope,
        support=support,
    )
    result = result.model_copy(update={"requested": method, "reason": reason})
    return check(result, docs, threshold=support, drop=unsupported == "drop")
