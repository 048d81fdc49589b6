"""Citations: read the [n] a model wrote, check each against its source, infer them when the model
wrote none, and find the sentences of a passage that hold the answer (what the UI highlights).

    numbers = parse_citations("Eiffel designed it [1][3].")         -> [1, 3]
    support = support_scores(answer, question, contexts)           -> {1: 0.9, 2: 0.1, ...}
    marked, cited, share = attribute_sentences(answer, question, contexts)

Support is the share of an answer's new words (`new_terms`: stemmed, numbers and dates in one form,
beyond the question's own; the answer check of rag.verify reads the same words) that a source holds, each word weighted by its rarity among the sources shown (IDF over the k passages) and in the
collection (its IDF there, when the chain knows it): a name found in one passage outweighs topic
words found in all of them, so the passage that holds the fact wins over the one that only shares
its subject.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from lectern.ingest import bm25_terms
from lectern.rag.answer_metrics import canonical
from lectern.rag.prompts import NO_ANSWER
from lectern.rag.sentences import TermWeights, sentence_spans
from lectern.rag.types import Answer, Context

CITATION = re.compile(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
_ABSTAIN = re.compile(
    r"\b(i (?:do not|don't|dont) know"
    r"|(?:do|does|did) not (?:contain|include|mention|provide|say)"
    r"|(?:don't|doesn't|didn't) (?:contain|include|mention|provide|say)"
    r"|no (?:relevant )?information"
    r"|not (?:mentioned|provided|stated|specified) in the (?:sources|documents|context)"
    r"|(?:cannot|can't|unable to) (?:be )?answer(?:ed)?"
    r"|not enough information)\b"
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

SUPPORTED = 0.6  # weighted share of an answer's new words a source must hold to be its source
UNSUPPORTED = 0.25  # a cited source holding less than this is replaced when another holds SUPPORTED
FALLBACK_SUPPORTED = 0.4  # an answer no sentence of which is attributed cites a source holding this much
MAX_HIGHLIGHTS = 2  # sentences highlighted per cited passage


def parse_citations(text: str) -> list[int]:
    """Source numbers cited as [n], [n, m] or [n][m], in order of first appearance, without repeats."""
    found: list[int] = []
    for match in CITATION.finditer(text):
        found.extend(int(n) for n in re.split(r"[,;]", match.group(1)))
    return list(dict.fromkeys(found))


def strip_citations(text: str, numbers: set[int]) -> str:
    """Remove the given numbers from [n] markers (a marker left empty disappears)."""
    if not numbers:
        return text

    def keep(match: re.Match[str]) -> str:
        kept = [n.strip() for n in re.split(r"[,;]", match.group(2)) if int(n) not in numbers]
        return f"{match.group(1)}[{', '.join(kept)}]" if kept else ""

    return re.sub(r"(\s?)" + CITATION.pattern, keep, text)


def renumber_citations(text: str, numbers: Mapping[int, int]) -> str:
    """The [n] markers with each n replaced by `numbers[n]` (a number not in it kept)."""

    def renumber(match: re.Match[str]) -> str:
        cited = [int(n) for n in re.split(r"[,;]", match.group(1))]
        return "[" + ", ".join(str(numbers.get(n, n)) for n in cited) + "]"

    return CITATION.sub(renumber, text)


def without_markers(text: str) -> str:
    """The text with every [n] marker removed and spaces tidied."""
    return " ".join(CITATION.sub(" ", text).split())


def is_abstention(text: str, *, cited: bool) -> bool:
    """True when the model said it cannot answer: it opens with NO_ANSWER, or says it (or a common
    "I don't know" phrasing) without citing any source, or wrote nothing but markers."""
    norm = bm25_terms.fold(CITATION.sub(" ", text))  # "[1] The documents do not contain..." still abstains
    if not norm.strip(" .,;:"):
        return True
    no_answer = bm25_terms.fold(NO_ANSWER)
    if norm.startswith(no_answer):
        return True
    return not cited and (no_answer in norm or _ABSTAIN.search(norm) is not None)


DATE_TOKEN = re.compile(r"^d(\d{4})x\d{2}")  # a date as canonical writes it: d1852x10x14


def terms(text: str) -> set[str]:
    """Stemmed words, with numbers and dates in one form ("three" = "3", "14 October 1852" =
    "October 14, 1852"), so that an answer writing a number otherwise than its source still matches.
    A full date also stands for its year: "born in 1745" is what "February 18, 1745" says. [n]
    markers are no words."""
    return set(_terms(text))


@lru_cache(maxsize=4096)  # a passage is read again for each sentence of an answer or a summary
def _terms(text: str) -> frozenset[str]:
    words = set(bm25_terms.terms(canonical(CITATION.sub(" ", text))))
    return frozenset(words | {m.group(1) for w in words if (m := DATE_TOKEN.match(w))})


def new_terms(text: str, question: str) -> set[str]:
    """The answer's words (`terms`) that the question does not have: what it says."""
    return terms(text) - terms(question)


def _weights(
    words: set[str], contexts: Sequence[Context], collection: TermWeights | None
) -> dict[str, float]:
    """Each word's IDF over the passages shown (a word in one passage tells them apart, a word in all
    does not), times its IDF in the collection when known (a name is rarer than a topic word)."""
    docs = [terms(c.text) for c in contexts]
    n = len(docs)
    # A word in no passage tells none apart: it weighs as a word found in one.
    local = {t: bm25_terms.idf(n, max(1, sum(t in d for d in docs))) for t in words}
    if collection is None:
        return local
    rare = collection(sorted(words))
    return {t: local[t] * rare.get(t, 1.0) for t in words}


def _judged(text: str, question: str) -> set[str]:
    """The words an answer is judged on: its new ones, or all of them when it only restates the question."""
    return new_terms(text, question) or terms(text)


def support_scores(
    answer: str, question: str, contexts: Sequence[Context], weights: TermWeights | None = None
) -> dict[int, float]:
    """For each source, the rarity-weighted share of the answer's new words that it contains: how
    much of the answer it could have given. `weights` is the collection's IDF, when known."""
    novel = _judged(answer, question)
    if not novel or not contexts:
        return {c.number: 0.0 for c in contexts}
    weight = _weights(novel, contexts, weights)
    total = sum(weight.values()) or 1.0
    return {c.number: sum(weight[t] for t in novel & terms(c.text)) / total for c in contexts}


def attribute(support: dict[int, float], threshold: float = SUPPORTED, most: int = 3) -> list[int]:
    """Sources holding most (60%) of the answer's new words, and near the best one."""
    best = max(support.values(), default=0.0)
    if best < threshold:
        return []
    chosen = [n for n, s in sorted(support.items(), key=lambda kv: (-kv[1], kv[0])) if s >= 0.8 * best]
    return sorted(chosen[:most])


def _has_new_words(sentence: str, question: str) -> bool:
    return bool(new_terms(sentence, question))


def attribute_sentences(
    answer: str, question: str, contexts: Sequence[Context], weights: TermWeights | None = None
) -> tuple[str, list[int], float]:
    """Mark each sentence with the sources that hold most of its new words.

    Returns the answer with [n] markers after the supported sentences, the cited numbers in order,
    and the share of sentences (with any new words) that some source supports.
    """
    parts = [p for p in _SENTENCE_END.split(answer.strip()) if p]
    # An answer that only restates the question ("Avogadro's last name is Avogadro.") is judged on
    # all its words; otherwise a sentence that only restates it is not judged.
    restates = not any(_has_new_words(p, question) for p in parts)
    cited: list[int] = []
    marked: list[str] = []
    judged = supported = 0
    for sentence in parts:
        new = restates or _has_new_words(sentence, question)
        chosen = attribute(support_scores(sentence, question, contexts, weights)) if new else []
        judged += new
        supported += bool(chosen)
        cited.extend(n for n in chosen if n not in cited)
        marked.append(sentence + (" " + "".join(f"[{n}]" for n in chosen) if chosen else ""))
    if not cited and parts and contexts:
        # No sentence is held mostly by one source, but the answer as a whole may be: cite the
        # source that holds the most of it, when that is a fair share.
        whole = support_scores(answer, question, contexts, weights)
        best = min(whole, key=lambda n: (-whole[n], n))
        if whole[best] >= FALLBACK_SUPPORTED - 1e-9:
            marked[-1] += f" [{best}]"
            return " ".join(marked), [best], whole[best]
    return " ".join(marked), cited, (supported / judged if judged else 0.0)


def highlights(answer: str, question: str, passage: str, most: int = MAX_HIGHLIGHTS) -> list[str]:
    """The sentences of `passage` that hold the most of the answer's new words (at least half as many
    as the best sentence), in reading order: the evidence a reader should look at."""
    novel = _judged(answer, question)
    if not novel:
        return []
    spans = sentence_spans(passage)
    scored = []
    for a, b in spans:
        shared = len(novel & terms(passage[a:b]))
        if shared:
            scored.append((shared, a, b))
    if not scored:
        return []
    best = max(s for s, _, _ in scored)
    chosen = sorted(sorted(scored, key=lambda x: (-x[0], x[1]))[:most], key=lambda x: x[1])
    return [passage[a:b] for s, a, b in chosen if s * 2 >= best]


def grounding_note(answer: Answer, threshold: float = 0.5) -> str | None:
    """A warning for the reader when little of an answer is found in its sources (None: no warning).

    Small local models answer from memory when the sources lack the answer; this says so instead of
    letting a made-up answer pass for a cited one."""
    if answer.abstained or answer.support is None or answer.support >= threshold:
        return None
    if answer.support == 0:
        return "No source supports this answer: it may be made up. Check it against the passages."
    return f"Only {answer.support:.0%} of this answer is found in its sources: check it against the passages."
