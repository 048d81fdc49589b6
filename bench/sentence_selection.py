"""Which sentences reach the model: how often the shown excerpts hold the gold answer (and, on the
paraphrase sets, the evidence sentence), for sentence selection by words alone and by words and
meaning (rag.sentences.select_sentences' `meaning`). Retrieval only, no model: seconds a question.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.sentence_selection --qa-dir ../shared/data/cmu-wikiqa/S08 \
        --limit 200 [--questions bench/data/paraphrase_s08.jsonl] [--meaning 0 --meaning 0.5 ...]

Every question is retrieved once as the QA chain retrieves it (the collection's settings, k chunks,
spelling correction); each variant then selects from the same chunks. `retrieved` is the ceiling:
the gold answer is somewhere in the k chunks. `shown_words` is the excerpts' mean length, since
showing more trivially finds more. Tune on S08 (and the S08 paraphrases); S09 confirms.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lectern.ingest import bm25_terms
from lectern.rag import sentences
from lectern.rag.answer_metrics import context_has_answer, normalise
from lectern.rag.evaluate import QAItem, articles_of, eval_searcher, load_qa, load_questions
from lectern.rag.evaluate_answers import sample_answerable
from lectern.rag.retrieval import LecternRetriever, Searcher
from lectern.rag.settings import Settings, load_settings
from lectern.rag.types import Context
from lectern.rag.verify import FACT_MEANING, answering_sentence, asked_kind, values


def shows_sentence(shown: list[str], sentence: str) -> bool:
    """The evidence sentence is in the shown text, or at least 0.8 of its words are in one excerpt
    (an excerpt may cut a long sentence at an abbreviation)."""
    want = normalise(sentence).split()
    if not want:
        return False
    for text in shown:
        have = set(normalise(text).split())
        if f" {' '.join(want)} " in f" {normalise(text)} " or sum(w in have for w in want) >= 0.8 * len(want):
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qa-dir", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--questions", type=Path, action="append", help="JSONL questions files (with `evidence`)")
    ap.add_argument("--own", action="store_true", help="with --questions: the folder's own questions too")
    ap.add_argument("--wording", default="question")
    ap.add_argument("--meaning", type=float, action="append", help="cosine weights to try (0: words only)")
    ap.add_argument("--rank-penalty", type=float, action="append", help="with meaning: per-rank penalties")
    ap.add_argument("--sentences", type=int, default=None, help="best sentences shown (default: settings)")
    ap.add_argument("--extra", type=int, action="append", help="sentences added by meaning alone (0: none)")
    ap.add_argument("--data-dir", type=Path, default=Path(".lectern-data/bench"))
    args = ap.parse_args()

    settings = load_settings(data_dir=args.data_dir, ingest={"parse_workers": 0}, llm={"backend": "fake"})
    top = args.sentences or settings.answer.sentences
    articles = articles_of(load_qa(args.qa_dir))
    sets: list[tuple[str, list[QAItem], dict[str, str]]] = []
    if not args.questions or args.own:
        sets.append((str(args.qa_dir), sample_answerable(load_qa(args.qa_dir), args.limit, args.seed), {}))
    for path in args.questions or []:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        key = "question" if args.wording == "question" else "original"
        items = sample_answerable(load_questions(path, args.qa_dir, args.wording), args.limit, args.seed)
        sets.append((str(path), items, {r[key]: r.get("evidence", "") for r in rows}))
    variants = [
        (m, p, e)
        for m in (args.meaning or [0.0, 0.5, 1.0, 2.0])
        for p in (args.rank_penalty or [0.03])
        for e in (args.extra or [0])
    ]
    variants = list(dict.fromkeys((m, p if m else 0.0, e) for m, p, e in variants))

    with eval_searcher(articles, settings, None) as base:
        searcher = Searcher(base.collection, base.embedder, settings.retrieval)
        r = settings.retrieval
        retriever = LecternRetriever(searcher=searcher, k=r.k, mode=r.mode, mmr=r.mmr)
        for name, items, evidence_of in sets:
            measure(name, items, evidence_of, variants, searcher, retriever, top, settings)


def measure(
    name: str,
    items: list[QAItem],
    evidence_of: dict[str, str],
    variants: list[tuple[float, float, int]],
    searcher: Searcher,
    retriever: LecternRetriever,
    top: int,
    settings: Settings,
) -> None:
    """Print one JSON line for the set, then one per variant."""
    a = settings.answer
    hits: dict[tuple[float, float, int], list[bool]] = {v: [] for v in variants}
    sentence_hits: dict[tuple[float, float, int], list[bool]] = {v: [] for v in variants}
    words: dict[tuple[float, float, int], list[int]] = {v: [] for v in variants}
    facts: dict[tuple[float, float, int], list[bool]] = {v: [] for v in variants}
    ceiling: list[bool] = []
    for item in items:
        docs = retriever.invoke(item.question)
        contexts = [Context.from_document(i, d) for i, d in enumerate(docs, start=1)]
        ceiling.append(context_has_answer([c.text for c in contexts], item.answerable))
        terms = searcher.spelled(bm25_terms.terms(item.question))
        similarity = sentences.remembered(searcher.similarities)
        kind = asked_kind(item.question)
        for meaning, penalty, extra in variants:
            sentences.MEANING_RANK_PENALTY = penalty
            shown = sentences.select_sentences(
                item.question,
                contexts,
                searcher.term_weights,
                top=top,
                neighbours=a.neighbours,
                terms=terms,
                order=a.order,
                similarity=similarity,
                meaning=meaning,
                extra=extra,
            )
            texts = [c.text for c in shown]
            hits[meaning, penalty, extra].append(context_has_answer(texts, item.answerable))
            words[meaning, penalty, extra].append(sum(len(t.split()) for t in texts))
            if kind and hits[meaning, penalty, extra][-1]:  # would the fact check pick the gold's sentence?
                spans = [sentences.sentence_spans(t) for t in texts]
                scores = sentences.sentence_scores(
                    item.question, shown, spans, searcher.term_weights, terms=terms,
                    similarity=similarity, meaning=meaning or FACT_MEANING,
                )  # fmt: skip
                best = answering_sentence(item.question, shown, kind, scores)
                said = texts[best[0]][slice(*spans[best[0]][best[1]])] if best else ""
                gold = set().union(*(values(g, kind) for g in item.answerable))
                facts[meaning, penalty, extra].append(
                    bool(best)
                    and (context_has_answer([said], item.answerable) or bool(gold & values(said, kind)))
                )
            if evidence_of.get(item.question):
                sentence_hits[meaning, penalty, extra].append(
                    shows_sentence(texts, evidence_of[item.question])
                )
    n = len(items)
    print(json.dumps({"set": name, "n": n, "top": top, "retrieved": round(sum(ceiling) / n, 4)}), flush=True)
    for v in variants:
        row: dict[str, object] = {
            "meaning": v[0],
            "rank_penalty": v[1],
            "extra": v[2],
            "gold_shown": round(sum(hits[v]) / n, 4),
            "shown_words": round(statistics.fmean(words[v]), 1),
        }
        if facts[v]:
            row["fact_sentence_right"] = f"{sum(facts[v])}/{len(facts[v])}"
        if sentence_hits[v]:
            row["evidence_shown"] = round(sum(sentence_hits[v]) / len(sentence_hits[v]), 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
