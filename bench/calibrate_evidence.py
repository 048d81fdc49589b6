"""Refit the evidence gate (rag.evidence.MEANING, WORDS, COVERAGE_ONLY) on a CMU-layout QA set:
retrieval only, no model.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.calibrate_evidence --qa-dir ../shared/data/cmu-wikiqa/S08 \
        --limit 200 --questions bench/data/paraphrase_s08.jsonl [--keep 0.92]

Each question is retrieved as the QA chain retrieves it, twice: with every article in the collection
(label 1: its article is there) and with its own article hidden (label 0). The questions are `--limit`
sampled answerable ones of the folder, plus every line of each `--questions` file in its own wording
and in its `original` one (the paraphrase sets: a gate fitted on the CMU wording alone refuses what
people word their own way). The features are those rag.evidence.assess computes (rag.evidence.FEATURES). For each
feature set a logistic model is fitted by Newton's method, cross-validated in 5 folds (a question's
rows stay in one fold), and the threshold is the highest that keeps `--keep` of the answerable
questions out of fold. It prints each Calibration to paste into rag/evidence.py with the rates it gives
per question set, beside the shipped ones'.

Tune on S08 only: S09 is the held-out check, and a held-out set kept elsewhere checks both.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lectern.ingest import bm25_terms
from lectern.ingest.sources import source_key
from lectern.rag.evaluate import QAItem, articles_of, eval_searcher, load_qa, load_questions
from lectern.rag.evaluate_answers import sample_answerable
from lectern.rag.evidence import COVERAGE_ONLY, MEANING, WORDS, Calibration, assess
from lectern.rag.retrieval import Filters, LecternRetriever, Searcher
from lectern.rag.settings import load_settings
from lectern.rag.types import Context

SHIPPED = {"meaning": MEANING, "words": WORDS, "coverage": COVERAGE_ONLY}
CANDIDATES = {
    "meaning": ["dense", "sentence", "names"],
    "meaning+coverage": ["coverage", "dense", "sentence", "names"],
    "words": ["coverage", "dense"],
    "coverage": ["coverage"],
}


def features(searcher: Searcher, question: str, filters: Filters | None) -> dict[str, float]:
    """Every evidence feature of the retrieved chunks, as the QA chain's gate sees them."""
    r = searcher.settings
    retriever = LecternRetriever(searcher=searcher, k=r.k, mode=r.mode, mmr=r.mmr, filters=filters)
    docs = retriever.invoke(question)
    contexts = [Context.from_document(i, d) for i, d in enumerate(docs, start=1)]
    terms = searcher.spelled(bm25_terms.terms(question))
    evidence = assess(
        question, contexts, searcher.term_weights, MEANING, terms=terms, similarity=searcher.similarities
    )
    return {k: float(v or 0.0) for k, v in evidence.features().items()}


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Logistic regression weights (last one the bias) by Newton's method with a small L2 penalty."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def probability(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ w[:-1] + w[-1])))


def threshold_keeping(p_pos: np.ndarray, keep: float) -> float:
    """The highest threshold that keeps at least `keep` of the positives (p >= threshold)."""
    ordered = np.sort(p_pos)
    drop = int(np.floor((1 - keep) * len(ordered) + 1e-9))  # (1 - 0.8) * 10 is 1.999...: count it as 2
    return float(ordered[drop])


def rates(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "answerable_kept": round(float((p[y == 1] >= threshold).mean()), 4),
        "hidden_abstained": round(float((p[y == 0] < threshold).mean()), 4),
    }


def cross_validated(x: np.ndarray, y: np.ndarray, groups: Sequence[int], folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities; the rows of one question stay in one fold."""
    ids = sorted(set(groups))
    random.Random(seed).shuffle(ids)
    fold_of = {g: i % folds for i, g in enumerate(ids)}
    out = np.zeros(len(y))
    for f in range(folds):
        test = np.array([fold_of[g] == f for g in groups])
        out[test] = probability(fit(x[~test], y[~test]), x[test])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qa-dir", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--questions", type=Path, action="append", default=[], help="a paraphrase set (JSONL)")
    ap.add_argument("--keep", type=float, default=0.92, help="share of answerable questions to keep")
    ap.add_argument("--data-dir", type=Path, default=Path(".lectern-data/bench"))
    args = ap.parse_args()
    if "S09" in (args.qa_dir.name, *(q.stem.upper()[-3:] for q in args.questions)):
        raise SystemExit("S09 is the held-out set: calibrate on S08")
    settings = load_settings(data_dir=args.data_dir, ingest={"parse_workers": 0})
    items = load_qa(args.qa_dir)
    articles = articles_of(items)
    sets: dict[str, list[QAItem]] = {args.qa_dir.name: sample_answerable(items, args.limit, args.seed)}
    for path in args.questions:
        sets[path.stem] = load_questions(path, args.qa_dir)
        sets[f"{path.stem}:original"] = load_questions(path, args.qa_dir, "original")
    rows: list[dict[str, float]] = []
    labels: list[int] = []
    groups: list[int] = []
    names: list[str] = []
    with eval_searcher(articles, settings) as searcher:
        keys = {a: source_key(a) for a in articles}
        for name, sample in sets.items():
            for item in sample:
                others = tuple(keys[a] for a in articles if a != item.article)
                question = len(set(groups))  # the two rows of one question share a fold
                for label, filters in ((1, None), (0, Filters(sources=others))):
                    rows.append(features(searcher, item.question, filters))
                    labels.append(label)
                    groups.append(question)
                    names.append(name)
    y = np.array(labels, dtype=float)
    which = np.array(names)
    report: dict[str, object] = {"sets": {k: len(v) for k, v in sets.items()}}

    def per_set(p: np.ndarray, threshold: float) -> dict[str, dict[str, float]]:
        return {name: rates(p[which == name], y[which == name], threshold) for name in sets}

    for name, model in SHIPPED.items():
        p = np.array([model.probability(r) for r in rows])
        report[f"shipped {name}"] = {"calibration": _dump(model), **per_set(p, model.threshold)}
    for name, columns in CANDIDATES.items():
        x = np.array([[r[c] for c in columns] for r in rows])
        oof = cross_validated(x, y, groups, folds=5, seed=args.seed)
        threshold = threshold_keeping(oof[y == 1], args.keep)
        w = fit(x, y)
        model = Calibration(
            dict(zip(columns, w[:-1].round(2).tolist(), strict=True)),
            round(float(w[-1]), 2),
            round(threshold, 2),
        )
        report[name] = {"calibration": _dump(model), "cross_validated": per_set(oof, threshold)}
    print(json.dumps(report, indent=2))


def _dump(model: Calibration) -> dict[str, object]:
    return {"weights": dict(model.weights), "bias": model.bias, "threshold": model.threshold}


if __name__ == "__main__":
    main()
