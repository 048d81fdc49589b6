"""Does each sentence of a summary say what the summarized passages say? Checked as answers are.

    result = check(result, docs, threshold=SUPPORTED, drop=False)   # sentences, citations, faithfulness

The passages summarized are numbered 1..n as Contexts, and each sentence of the summary is
attributed to the passages holding most of its words, rarity-weighted (rag.citations.support_scores
and attribute, the answers' rule and threshold). A sentence that no passage holds enough of is
NOT_IN_SOURCES; one that writes a number its passages do not state is WRONG_NUMBER ("31 steps"
where the steps' passage says 143). Unsupported sentences are kept and flagged, or dropped from
`summary`. Words only:
a true word tied to another fact of the same passage passes ("built on 14 October 1852" where the
passage says the tower was built and, in another sentence, first lit on that day).

Partial summaries (refine's running summary, map_reduce's parts) are checked by the same rule
against the passages their step read, and what those do not support is left out before the next
step reads it (`keep_supported`, used by rag.summarize).

What says nothing about the text ("Here is a summary of the text:", a list's "2.") is no claim and
is not judged; `faithfulness` is the share of the claims supported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.documents import Document

from lectern.ingest import bm25_terms
from lectern.rag.answer_metrics import canonical
from lectern.rag.citations import SUPPORTED, attribute, highlights, support_scores
from lectern.rag.sentences import LIST_MARKER, sentence_spans
from lectern.rag.types import UNSUPPORTED_FLAG, Citation, Context, SummaryResult, SummarySentence

NOT_IN_SOURCES = "not in the sources"
WRONG_NUMBER = "a number its sources do not state"
# Words a summary uses about itself, not about the text: never evidence for or against a sentence.
ABOUT_ITSELF = (
    "Here is a summary of the following text, document, article, passage or part; overall, in summary"
)
_ABOUT_ITSELF = set(bm25_terms.terms(ABOUT_ITSELF))
_LAYOUT = re.compile(r"[\W\d_]{0,4}")  # "2.", "-", "(a)": list markers, no words
_NUMBER = re.compile(r"\d+(?:,\d{3})*")


def number_contexts(docs: Sequence[Document]) -> list[Context]:
    """The passages summarized, numbered from 1 in the order given: what a summary's [n] cite."""
    return [Context.from_document(i, doc) for i, doc in enumerate(docs, 1)]


def numbers(text: str) -> set[str]:
    """The numbers written in digits ("11,400" -> "11400"; a date's day and year)."""
    return {m.group().replace(",", "") for m in _NUMBER.finditer(text)}


def _held(number: str, stated: set[str]) -> bool:
    """A number the passage states; "51" of "1848-51" is held by a passage stating 1851."""
    return number in stated or (len(number) == 2 and any(len(s) == 4 and s.endswith(number) for s in stated))


def is_claim(sentence: str) -> bool:
    """Whether the sentence says something about the text (not a list marker or "Here is a summary:")."""
    if _LAYOUT.fullmatch(sentence):
        return False
    return bool(set(bm25_terms.terms(sentence)) - _ABOUT_ITSELF)


def check_sentences(
    summary: str, contexts: Sequence[Context], *, threshold: float = SUPPORTED
) -> list[SummarySentence]:
    """Each sentence of `summary` with the passages that hold it, its support and any problem."""
    stated: dict[int, set[str]] = {}  # each passage's numbers, digits and number words alike

    def stated_in(ctx: Context) -> set[str]:
        if ctx.number not in stated:
            stated[ctx.number] = numbers(ctx.text) | numbers(canonical(ctx.text))
        return stated[ctx.number]

    by_number = {c.number: c for c in contexts}
    out: list[SummarySentence] = []
    end = 0
    for a, b in sentence_spans(summary):
        text, before = summary[a:b], summary[end:a]
        end = b
        said = LIST_MARKER.sub("", text)  # "1. The tower..." claims what "The tower..." does
        if not is_claim(said):
            out.append(SummarySentence(text=text, before=before, claim=False))
            continue
        scores = support_scores(said, ABOUT_ITSELF, contexts)
        sources = attribute(scores, threshold)
        problem = None if sources else NOT_IN_SOURCES
        if sources:
            held = set().union(*(stated_in(by_number[n]) for n in sources))
            if not all(_held(n, held) for n in numbers(said)):
                problem = WRONG_NUMBER
        out.append(
            SummarySentence(
                text=text,
                before=before,
                sources=sources if problem is None else [],
                support=round(max(scores.values(), default=0.0), 4),
                problem=problem,
            )
        )
    return out


def cite(sentences: Sequence[SummarySentence], contexts: Sequence[Context]) -> list[Citation]:
    """One citation per passage a supported sentence cites, in order of first citation, with the
    passage's sentences that hold those sentences' words highlighted."""
    by_number = {c.number: c for c in contexts}
    cited: dict[int, list[str]] = {}
    for s in sentences:
        for n in s.sources:
            cited.setdefault(n, []).append(s.text)
    return [
        Citation.from_context(by_number[n]).model_copy(
            update={"highlights": highlights(" ".join(said), ABOUT_ITSELF, by_number[n].text)}
        )
        for n, said in cited.items()
    ]


def faithfulness(sentences: Sequence[SummarySentence]) -> float | None:
    """The share of the claims supported; None when the summary makes none."""
    claims = [s for s in sentences if s.claim]
    return round(sum(s.supported for s in claims) / len(claims), 4) if claims else None


def supported_text(sentences: Sequence[SummarySentence]) -> str:
    """The summary as written less its unsupported claims (what says nothing about the text stays)."""
    return "".join(s.before + s.text for s in sentences if s.supported).strip()


def keep_supported(
    text: str, contexts: Sequence[Context], *, threshold: float = SUPPORTED
) -> tuple[str, list[SummarySentence]]:
    """What of a partial summary goes on to the next step: `text` less the claims `contexts` (the
    passages its step read) do not support, "" when no claim is left; and the claims left out."""
    sentences = check_sentences(text, contexts, threshold=threshold)
    left_out = [s for s in sentences if not s.supported]
    if not any(s.claim and s.supported for s in sentences):
        return "", left_out
    return supported_text(sentences), left_out


def check(
    result: SummaryResult, docs: Sequence[Document], *, threshold: float = SUPPORTED, drop: bool = False
) -> SummaryResult:
    """`result` with its sentences checked against `docs` (the passages it summarizes, in order),
    its citations and faithfulness; with `drop`, the unsupported sentences left out of `summary`."""
    contexts = number_contexts(docs)
    sentences = check_sentences(result.summary, contexts, threshold=threshold)
    summary = supported_text(sentences) if drop else result.summary
    return result.model_copy(
        update={
            "summary": summary,
            "sentences": sentences,
            "citations": cite(sentences, contexts),
            "faithfulness": faithfulness(sentences),
            "dropped": drop,
        }
    )


def note(result: SummaryResult) -> str | None:
    """One line for the reader on how much of the summary its sources hold, and how many sentences
    of its partial summaries were left out on the way (None: not checked)."""
    parts = []
    if result.faithfulness is not None:
        claims = [s for s in result.sentences if s.claim]
        held = sum(s.supported for s in claims)
        line = f"{held} of {len(claims)} sentences found in the sources ({result.faithfulness:.0%})"
        missing = len(claims) - held
        if missing:
            what = "left out" if result.dropped else f"marked {UNSUPPORTED_FLAG}"
            line += f"; {missing} not, {what}: check {'them' if missing > 1 else 'it'} against the passages"
        parts.append(line)
    if result.withheld:
        n = len(result.withheld)
        parts.append(
            f"{n} sentence{'s' if n > 1 else ''} of the partial summaries left out before the next "
            "step: not in the passages summarized"
        )
    return ". ".join(parts) or None
