"""Which sentences of the retrieved chunks the model is shown: the text cut into sentences, each
scored against the question by its (rarity-weighted) words and, optionally, its meaning, and the best
kept with their neighbours.

    contexts = select_sentences(question, contexts, weights)   # the best sentences, with neighbours

The evidence gate (rag.evidence) reads the same sentences; `remembered` embeds each once a question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from lectern.ingest import bm25_terms
from lectern.rag.types import Context

SENTENCES = 6  # best sentences shown to the model (docs/ANSWERS.md, sixth run); answer.sentences
NEIGHBOURS = 1  # sentences either side of each; answer.neighbours
ORDERS = ("rank", "best")  # the excerpts in retrieval rank, or best-matching sentence first; answer.order
ORDER = "best"  # docs/ANSWERS.md, eighth run: +4 of 180 S08 questions, +2 of 60 on S09, none lost

MEANING_WEIGHT = 0.0  # the cosine's weight beside the words' share: off (docs/ANSWERS.md); answer.meaning
MEANING_RANK_PENALTY = 0.03  # with a similarity: a chunk's rank breaks near-ties (in shares)
EXTRA = 0  # sentences shown for their meaning alone, beside the `top` by words (bench/sentence_selection.py)

TermWeights = Callable[[Sequence[str]], Mapping[str, float]]
"""Stemmed terms -> their weight (IDF) in the collection; unknown terms weigh as the rarest."""

Similarity = Callable[[str, Sequence[str]], Sequence[float]]
"""(question, texts) -> the cosine of each text to the question, with the collection's embedder."""

# End of a sentence: . ! ? (and closing quotes) before a capital, digit or quote; a blank line; or a
# line break, unless the line was wrapped inside a sentence (PDF and hard-wrapped text: the line
# ends in a comma, or the next begins in lower case or with a number that is no list item's).
_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])"
    r"|\n[^\S\n]*\n\s*"
    r"|(?<![,;(\-\u2013])\n\s*(?![a-z]|\d++(?![.)]\s))"
)
# ... nor does a list item's number ("1. Install it")
_ABBREVIATION = re.compile(
    r"\b(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e|No|Vol|pp|Fig|c|ca)\.$|(?:^|\n)\s*\d{1,3}\.$"
)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, whitespace trimmed; an abbreviation ("Dr.", "J.")
    does not end a sentence, nor does a line break inside a wrapped one (_SENTENCE_END)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _ABBREVIATION.search(text[start : match.start()]) and match.group().count("\n") < 2:
            continue  # a blank line ends a sentence whatever precedes it
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        a, b = a + lead, a + len(piece.rstrip())
        if b > a:
            out.append((a, b))
    return out


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


LIST_MARKER = re.compile(r"^(?:\d{1,3}[.)]|[-*\u2022])\s+")  # "2. ", "1) ", "- ": a list item's marker


def sentences_and_lines(text: str) -> list[str]:
    """Each sentence, each line of a sentence wrapped over several, and each of these without its list
    marker: what the evidence gate reads. Its sentence feature was fitted when text was cut at every
    line break and a numbered heading's "2." was a sentence of its own, so "Building the tower" was
    read apart from "2. " (CMU text, a paragraph a line, is cut the same either way). A whole wrapped
    sentence can score a lower cosine than its line that holds the answer ("Visitors may climb the
    143 steps of the tower" for "How many stairs ..."), so the gate keeps the best of them and
    refuses no question it passed before sentences were joined (docs/ANSWERS.md)."""
    out: list[str] = []
    for sentence in sentences(text):
        pieces = [sentence]
        if "\n" in sentence:
            pieces += [line.strip() for line in sentence.splitlines() if line.strip()]
        for piece in pieces:
            out.append(piece)
            bare = LIST_MARKER.sub("", piece)
            if bare and bare != piece:
                out.append(bare)
    return list(dict.fromkeys(out))


def local_idf(texts: Sequence[str]) -> TermWeights:
    """IDF over the given passages alone: for retrievers that know no collection statistics."""
    docs = [set(bm25_terms.terms(t)) for t in texts]
    n = len(docs)

    def weights(terms: Sequence[str]) -> dict[str, float]:
        return {t: bm25_terms.idf(n, sum(t in d for d in docs)) for t in terms}

    return weights


def select_sentences(
    question: str,
    contexts: Sequence[Context],
    weights: TermWeights | None = None,
    *,
    top: int = SENTENCES,
    neighbours: int = NEIGHBOURS,
    rank_penalty: float = 0.15,
    terms: Sequence[str] | None = None,
    order: str = ORDER,
    similarity: Similarity | None = None,
    meaning: float = MEANING_WEIGHT,
    extra: int = EXTRA,
) -> list[Context]:
    """The `top` sentences that share the most (rarity-weighted) terms with the question, each with
    `neighbours` sentences either side, kept in their chunk and in reading order; chunks with no
    chosen sentence are dropped and the rest renumbered from 1. A chunk's rank breaks near-ties. A
    sentence that shares no word is never chosen for itself (only as a neighbour). `terms`: the
    question's terms, when the caller has them already. `order`: the excerpts in their chunks'
    retrieval rank ("rank"), or the one holding the best-matching sentence first ("best").

    With `similarity` (Searcher.similarities) a sentence also scores by meaning: its words' share of
    the question's (rarity-weighted) plus `meaning` times its cosine to the question, so a sentence
    worded unlike the question ("open every day except Tuesdays" for "which day is it closed?") can
    be chosen though it shares no rare word (docs/ANSWERS.md). `extra` sentences closest in meaning
    (with `similarity`) are shown besides, with their neighbours, after those chosen by score: the
    word-matched ones keep their places."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    spans = [sentence_spans(c.text) for c in contexts]
    matched = sentence_scores(
        question, contexts, spans, weights, terms=terms, similarity=similarity, meaning=meaning
    )
    penalty = MEANING_RANK_PENALTY if meaning and similarity else rank_penalty
    scored = [(score - penalty * ci, -ci, -si) for (ci, si), score in matched.items()]
    if not scored and contexts:  # no sentence shares a word with the question: the best chunk's opening
        scored = [(0.0, 0, -si) for si in range(min(top, len(spans[0])))]
    scored.sort(reverse=True)
    chosen = scored[:top]
    if extra and similarity is not None:
        cosines = _sentence_cosines(question, contexts, spans, similarity)
        taken = {(-c, -s) for _, c, s in chosen}
        closest = sorted(
            (
                (cos, -ci, -si)
                for ci, row in enumerate(cosines)
                for si, cos in enumerate(row)
                if (ci, si) not in taken
            ),
            reverse=True,
        )
        chosen += [(0.0, neg_ci, neg_si) for _, neg_ci, neg_si in closest[:extra]]
    keep: dict[int, set[int]] = {}
    for _, neg_ci, neg_si in chosen:
        ci, si = -neg_ci, -neg_si
        keep.setdefault(ci, set()).update(range(si - neighbours, si + neighbours + 1))
    chunks = sorted(keep)
    if order == "best":  # stable: equal matches keep their rank
        chunks.sort(key=lambda ci: -max(matched.get((ci, j), 0.0) for j in keep[ci]))
    out: list[Context] = []
    for ci in chunks:
        chunk_spans = spans[ci]
        kept = sorted(j for j in keep[ci] if 0 <= j < len(chunk_spans))
        text = join_spans(contexts[ci].text, [chunk_spans[j] for j in kept])
        out.append(contexts[ci].model_copy(update={"number": len(out) + 1, "text": text, "excerpt": True}))
    return out


def sentence_scores(
    question: str,
    contexts: Sequence[Context],
    spans: Sequence[Sequence[tuple[int, int]]],
    weights: TermWeights | None = None,
    *,
    terms: Sequence[str] | None = None,
    similarity: Similarity | None = None,
    meaning: float = MEANING_WEIGHT,
) -> dict[tuple[int, int], float]:
    """How well each sentence ((chunk, sentence) -> score; `spans` from sentence_spans) matches the
    question: the rarity-weighted sum of the question's words it holds; with `similarity` and a
    `meaning` weight, their share of the question's plus `meaning` times the sentence's cosine, for
    every sentence. Without, a sentence that holds none of the question's words has no score."""
    asked = set(terms) if terms is not None else set(bm25_terms.terms(question))
    lookup = weights or local_idf([c.text for c in contexts])
    w = lookup(sorted(asked))
    cosines = _sentence_cosines(question, contexts, spans, similarity) if meaning and similarity else None
    scores: dict[tuple[int, int], float] = {}
    for ci, (ctx, chunk_spans) in enumerate(zip(contexts, spans, strict=True)):
        # The chunk's title names its subject ("Alessandro Volta"), which its sentences call "he":
        # the question's words found in the title are not looked for in the sentences.
        wanted = (asked - set(bm25_terms.terms(f"{ctx.title} {ctx.heading or ''}"))) or asked
        total = sum(w.get(t, 0.0) for t in wanted) or 1.0
        for si, (a, b) in enumerate(chunk_spans):
            shared = sum(w.get(t, 0.0) for t in wanted & set(bm25_terms.terms(ctx.text[a:b])))
            if cosines is not None:
                scores[ci, si] = shared / total + meaning * cosines[ci][si]
            elif shared:
                scores[ci, si] = shared
    return scores


def remembered(similarity: Similarity) -> Similarity:
    """`similarity` that embeds each (question, text) pair once: the gate and the sentence selection
    of one question read the same sentences."""
    seen: dict[tuple[str, str], float] = {}

    def similar(question: str, texts: Sequence[str]) -> list[float]:
        new = list(dict.fromkeys(t for t in texts if (question, t) not in seen))
        for text, value in zip(new, similarity(question, new) if new else [], strict=True):
            seen[question, text] = float(value)
        return [seen[question, t] for t in texts]

    return similar


def _sentence_cosines(
    question: str,
    contexts: Sequence[Context],
    spans: Sequence[Sequence[tuple[int, int]]],
    similarity: Similarity,
) -> list[list[float]]:
    """Each sentence's cosine to the question, chunk by chunk, in one call of `similarity`."""
    texts = [c.text[a:b] for c, chunk_spans in zip(contexts, spans, strict=True) for a, b in chunk_spans]
    flat = iter(similarity(question, texts) if texts else [])
    return [[float(next(flat)) for _ in chunk_spans] for chunk_spans in spans]


def join_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The spans of `text` in order; a gap between non-adjacent sentences is marked with an ellipsis."""
    parts: list[str] = []
    last_end: int | None = None
    for a, b in spans:
        if last_end is not None:
            gap = text[last_end:a]
            parts.append(" " if not gap.strip() else " … ")
        parts.append(text[a:b])
        last_end = b
    return "".join(parts)
