"""Each subject of a many-subject question in the agent's prompt and in its answer, checked without a model.

    shown = quota_sentences(question, found, searches, weights)   # every search's best sentences
    missing_subjects(names, shown, chunks)                        # subjects no shown passage names
    misattributed(answer, question, subjects, shown, chunks)      # subjects whose fact is not theirs

A single selection of the best sentences over everything the searches found lets one subject's
sentences crowd out the other's (the fact "eight arms" was found and dropped before the prompt); a
quota keeps each search's own best sentences. A 0.5B model also states one subject's fact for both
("Klimt and Mondrian were born in Baumgarten") or a fact for a subject whose passages hold none
("Paris" for Picasso and El Greco): the answer's words for each subject must be in that subject's
passages, word for word as rag.verify compares them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from lectern.ingest import bm25_terms
from lectern.rag.citations import terms, without_markers
from lectern.rag.plan import Subject, Subjects, name_terms, names
from lectern.rag.sentences import (
    SENTENCES,
    TermWeights,
    join_spans,
    select_sentences,
    sentence_spans,
    sentences,
)
from lectern.rag.types import Context
from lectern.rag.verify import YES_NO

QUOTA = 2  # each planned search's own best sentences (with their neighbours) kept in the prompt
# Where an answer moves from one subject to the next: "Klimt was born in Baumgarten, and Mondrian in ..."
_CLAUSE = re.compile(r",\s*(?:and|but|while|whereas)\s+|;\s*|\s+(?:while|whereas|but)\s+", re.IGNORECASE)


def quota_sentences(
    question: str,
    found: Sequence[Context],
    searches: Sequence[tuple[Subject, Sequence[Context]]],
    weights: TermWeights | None = None,
    *,
    top: int = SENTENCES,
    quota: int = QUOTA,
) -> list[Context]:
    """The `top` best sentences of everything `found` (rag.sentences.select_sentences, against the
    question), and for each search a quota of its own: the first sentence that names its subject in
    full (an article's opening: "Volta (February 18, 1745 - ...) was ...") and its `quota` best,
    chosen against its query and its part of the question, less the other subjects' names, among
    the chunks it returned and those found whose title names it. Merged by chunk (a sentence chosen
    twice is shown once), the selections' best excerpts in turn, renumbered from 1."""
    selections = [select_sentences(question, found, weights, top=top)]
    for subject, chunks in searches:
        pool = list(chunks) + [
            c for c in found if c not in chunks and names(f"{c.title} {c.heading or ''}", subject.name)
        ]
        if not pool:
            continue
        others = {t for s, _ in searches if s.name != subject.name for t in name_terms(s.name)}
        asked = set(bm25_terms.terms(subject.query)) | (
            set(bm25_terms.terms(subject.asks or question)) - others
        )
        opening = _opening(subject.name, pool)
        best = select_sentences(subject.query, pool, weights, top=quota, terms=sorted(asked))
        selections.append([*opening, *best])
    originals = {c.chunk_id: c for c in found}
    for _, chunks in searches:
        originals.update({c.chunk_id: c for c in chunks if c.chunk_id not in originals})
    return _merge(selections, originals)


def _opening(name: str, pool: Sequence[Context]) -> list[Context]:
    """The first sentence that holds every word of `name` and says more, as a one-sentence excerpt:
    looked for first in the chunks that open their document (their text starts with its title)."""
    wanted = set(name_terms(name))
    first = sorted(pool, key=lambda c: not (c.title and c.text.lstrip().startswith(c.title)))
    for ctx in first:
        for a, b in sentence_spans(ctx.text):
            said = set(bm25_terms.terms(ctx.text[a:b]))
            if wanted and wanted <= said and len(said - wanted) >= 2:
                return [ctx.model_copy(update={"text": ctx.text[a:b], "excerpt": True})]
    return []


def _merge(selections: Sequence[Sequence[Context]], originals: Mapping[str, Context]) -> list[Context]:
    """One excerpt per chunk holding every sentence any selection chose from it, in turn: the first
    excerpt of each selection, then the second of each..., renumbered from 1."""
    order: list[str] = []
    kept: dict[str, set[int]] = {}
    for depth in range(max((len(s) for s in selections), default=0)):
        for selection in selections:
            if depth >= len(selection):
                continue
            excerpt = selection[depth]
            original = originals.get(excerpt.chunk_id)
            if original is None:
                continue
            spans = sentence_spans(original.text)
            chosen = {j for j, (a, b) in enumerate(spans) if original.text[a:b] in excerpt.text}
            if excerpt.chunk_id not in kept:
                order.append(excerpt.chunk_id)
            kept.setdefault(excerpt.chunk_id, set()).update(chosen)
    out: list[Context] = []
    for chunk_id in order:
        original = originals[chunk_id]
        spans = sentence_spans(original.text)
        text = join_spans(original.text, [spans[j] for j in sorted(kept[chunk_id])])
        if text:
            out.append(original.model_copy(update={"number": len(out) + 1, "text": text, "excerpt": True}))
    return out


def passages_of(
    name: str, all_names: Sequence[str], shown: Sequence[Context], chunks: Mapping[str, Context]
) -> list[Context]:
    """The shown passages about `name`: those whose title or shown text names it, and those whose
    whole chunk (`chunks`, by chunk id) names it while their title names none of `all_names` (a
    passage of Klimt's article that mentions Mondrian out of sight is not about Mondrian)."""
    out: list[Context] = []
    for ctx in shown:
        whole = chunks.get(ctx.chunk_id, ctx)
        title = f"{whole.title} {whole.heading or ''}"
        titled = [n for n in all_names if names(title, n)]
        if name in titled or names(ctx.text, name) or (not titled and names(f"{title} {whole.text}", name)):
            out.append(ctx)
    return out


def missing_subjects(
    subjects: Sequence[str], shown: Sequence[Context], chunks: Mapping[str, Context]
) -> list[str]:
    """The subjects no shown passage is about: nothing was found for them."""
    return [s for s in subjects if not passages_of(s, subjects, shown, chunks)]


def _pieces(answer: str, subjects: Sequence[str]) -> list[str]:
    """The answer cut where it moves from one subject to the next: at sentence ends, at ", and" or
    "; ", and before ", X" or "and X" where X is a word of a subject's name ("London lies on the
    Thames and Ottawa on ...")."""
    words = sorted({w for s in subjects for w in re.findall(r"[^\W\d_][\w'-]{2,}", s)}, key=len, reverse=True)
    before = re.compile(
        r"\s*(?:,|\band\b|&)\s+(?=(?:the\s+)?(?:" + "|".join(map(re.escape, words)) + r")\b)", re.IGNORECASE
    )
    out: list[str] = []
    for sentence in sentences(without_markers(answer)):
        for clause in _CLAUSE.split(sentence):
            out += [p for p in (before.split(clause) if words else [clause]) if p.strip()]
    return out


def answer_words(answer: str, question: str, subjects: Sequence[str]) -> tuple[dict[str, set[str]], set[str]]:
    """The answer's words for each subject, and the subjects it names. Its pieces (_pieces) are read
    in turn, each giving its new words (not the question's, not a subject's name) to the subjects it
    names, or to those of the piece before when it names none ("He died in Vienna"), or to all when
    none was named yet; a piece that names subjects and says nothing new ("Klimt and Mondrian were
    born in Paris": "Klimt") passes them on to the next piece's words."""
    asked = terms(question) | {t for s in subjects for t in terms(s)}
    out: dict[str, set[str]] = {s: set() for s in subjects}
    named_any: set[str] = set()
    current = list(subjects)
    waiting: list[str] = []
    for piece in _pieces(answer, subjects):
        named = [s for s in subjects if names(piece, s)]
        named_any.update(named)
        new = terms(piece) - asked
        if named and not new:
            waiting += [s for s in named if s not in waiting]
            continue
        current = list(dict.fromkeys([*waiting, *(named or ([] if waiting else current))]))
        waiting = []
        for s in current:
            out[s] |= new
    return out, named_any


def misattributed(
    answer: str, question: str, subjects: Subjects, shown: Sequence[Context], chunks: Mapping[str, Context]
) -> list[str]:
    """The subjects whose fact the answer does not give from their own passages: it neither names
    them nor gives them a word, or none of its words for them is in their passages (one subject's
    fact given to both). Words every subject's passages hold ("city") tell them apart only when the
    answer has no other words for a subject. A comparison ("Which is older, X or Y?") or a yes/no
    question states no fact: never faulted; nor is a subject named with no new word ("Ottawa on
    the Ottawa River")."""
    if len(subjects.names) < 2 or subjects.comparison or YES_NO.match(question.strip()):
        return []
    words_for, named = answer_words(answer, question, subjects.names)
    held: dict[str, set[str]] = {}
    for name in subjects.names:
        passages = passages_of(name, subjects.names, shown, chunks)
        held[name] = set().union(*(terms(f"{c.title} {c.heading or ''} {c.text}") for c in passages))
    everywhere = set.intersection(*held.values())
    wrong = []
    for name, words in words_for.items():
        telling = (words - everywhere) or words
        if (words and not telling & held[name]) or (not words and name not in named):
            wrong.append(name)
    return wrong
