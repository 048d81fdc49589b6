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

from lectern.ingest import tokenize
from lectern.rag.citations import without_markers
from lectern.rag.evidence import SENTENCES, TermWeights, _join, select_sentences, sentence_spans, sentences
from lectern.rag.plan import Subject, Subjects, name_terms, names
from lectern.rag.types import Context
from lectern.rag.verify import _YES_NO, terms

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
    """The `top` best sentences of everything `found` (rag.evidence.select_sentences, against the
    question), and for each search its own `quota` best of the chunks it returned, chosen against its
    query and the words of the question that name no other subject; merged by chunk (a sentence
    chosen twice is shown once), the selections' best excerpts in turn, renumbered from 1."""
    selections = [select_sentences(question, found, weights, top=top)]
    for subject, chunks in searches:
        if not chunks:
            continue
        others = {t for s, _ in searches if s.name != subject.name for t in name_terms(s.name)}
        asked = set(tokenize.terms(subject.query)) | (set(tokenize.terms(question)) - others)
        selections.append(select_sentences(subject.query, chunks, weights, top=quota, terms=sorted(asked)))
    originals = {c.chunk_id: c for c in found}
    for _, chunks in searches:
        originals.update({c.chunk_id: c for c in chunks if c.chunk_id not in originals})
    return _merge(selections, originals)


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
        text = _join(original.text, [spans[j] for j in sorted(kept[chunk_id])])
        if text:
            out.append(original.model_copy(update={"number": len(out) + 1, "text": text, "excerpt": True}))
    return out


def passages_of(
    name: str, all_names: Sequence[str], shown: Sequence[Context], chunks: Mapping[str, Context]
) -> list[Context]:
    """The shown passages about `name`: those whose title names it, and those that name it in their
    whole chunk (`chunks`, by chunk id) while their title names none of `all_names`."""
    out: list[Context] = []
    for ctx in shown:
        whole = chunks.get(ctx.chunk_id, ctx)
        title = f"{whole.title} {whole.heading or ''}"
        titled = [n for n in all_names if names(title, n)]
        if name in titled or (not titled and names(f"{title} {whole.text}", name)):
            out.append(ctx)
    return out


def missing_subjects(
    subjects: Sequence[str], shown: Sequence[Context], chunks: Mapping[str, Context]
) -> list[str]:
    """The subjects no shown passage is about: nothing was found for them."""
    return [s for s in subjects if not passages_of(s, subjects, shown, chunks)]


def answer_words(answer: str, question: str, subjects: Sequence[str]) -> dict[str, set[str]]:
    """The answer's words for each subject: its sentences and clauses are read in turn, each giving
    its new words (not the question's, not a subject's name) to the subjects it names, or to those
    of the clause before when it names none ("He died in Vienna"), or to all when none was named yet."""
    asked = terms(question) | {t for s in subjects for t in terms(s)}
    out: dict[str, set[str]] = {s: set() for s in subjects}
    current = list(subjects)
    for sentence in sentences(without_markers(answer)):
        for piece in _CLAUSE.split(sentence):
            named = [s for s in subjects if names(piece, s)]
            current = named or current
            for s in current:
                out[s] |= terms(piece) - asked
    return out


def misattributed(
    answer: str, question: str, subjects: Subjects, shown: Sequence[Context], chunks: Mapping[str, Context]
) -> list[str]:
    """The subjects whose fact the answer does not give from their own passages: it states none for
    them, or none of its words for them is in their passages (one subject's fact given to both).
    A comparison ("Which is older, X or Y?") or a yes/no question states no fact: never faulted."""
    if len(subjects.names) < 2 or subjects.comparison or _YES_NO.match(question.strip()):
        return []
    wrong = []
    for name, words in answer_words(answer, question, subjects.names).items():
        held: set[str] = set()
        for ctx in passages_of(name, subjects.names, shown, chunks):
            held |= terms(f"{ctx.title} {ctx.heading or ''} {ctx.text}")
        if not words & held:
            wrong.append(name)
    return wrong
