"""The evidence gate: is the question's subject in the sources at all, before the model is asked?

    weights = searcher.term_weights                      # IDF of the collection (or local_idf)
    evidence = assess(question, contexts, weights)       # calibrated on CMU S08: P(answer is here)

A 0.5B model is a poor judge of "the sources do not say": it abstains on answerable questions and
answers unanswerable ones. The words of the question are a better one. When the rare words of a
question (a name, a term) are missing from the best chunk, and the best chunk is far from the
question in embedding space, the answer is very likely not in the collection; `assess` turns
those facts into a probability with a logistic model fitted on S08 (docs/ANSWERS.md). Which
sentences the model is then shown is rag.sentences.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lectern.ingest import bm25_terms
from lectern.rag.sentences import Similarity, TermWeights, sentences_and_lines
from lectern.rag.types import Context


def coverage(question_terms: Sequence[str], text: str, weights: Mapping[str, float]) -> float:
    """Share of the question's terms, weighted by rarity, that occur in `text` (1.0 for no terms)."""
    unique = set(question_terms)
    total = sum(weights.get(t, 0.0) for t in unique)
    if total <= 0:
        return 1.0
    present = set(bm25_terms.terms(text))
    return sum(weights.get(t, 0.0) for t in unique if t in present) / total


FEATURES = ("coverage", "dense", "sentence", "names")


@dataclass(frozen=True)
class Calibration:
    """A logistic model of P(the answer is in the sources) from named evidence features (FEATURES)."""

    weights: Mapping[str, float]
    bias: float
    threshold: float  # abstain below this probability

    def usable(self, features: Mapping[str, float | None]) -> bool:
        """Every feature this model weighs is known (a sentence similarity needs an embedder)."""
        return all(features.get(name) is not None for name in self.weights)

    def probability(self, features: Mapping[str, float | None]) -> float:
        z = self.bias + sum(w * float(features[name] or 0.0) for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-z))


# All fitted on CMU S08 with bench/calibrate_evidence.py: each question retrieved with its article and
# with it hidden, 5-fold cross-validated (a question's rows in one fold), MiniLM embeddings, the
# threshold the highest that keeps 92% of the answerable questions out of fold (docs/ANSWERS.md).
#
# MEANING reads the question's meaning, not its words: the best chunk's cosine to the question, the
# best sentence's, and the share of the question's names (capitalised words) the chunks hold. Fitted
# on 200 CMU questions and 60 reworded ones (bench/data/paraphrase_s08.jsonl) with their 60
# originals: it keeps 95% of the reworded questions where WORDS kept 58%, and abstains as often
# on hidden articles (88% against 87%).
MEANING = Calibration({"dense": 2.3, "sentence": 19.68, "names": 3.36}, bias=-15.47, threshold=0.38)
# The question's rarer words in the best chunk, and its cosine: when no sentence similarity is at hand.
WORDS = Calibration({"coverage": 7.6, "dense": 10.23}, bias=-9.69, threshold=0.35)
# Without a dense score (BM25-only retrieval, or an embedder whose cosine scale differs): coverage alone.
COVERAGE_ONLY = Calibration({"coverage": 6.75}, bias=-4.91, threshold=0.35)
CALIBRATED = MEANING  # the gate for MiniLM (the accurate profile); rag.workspace.evidence_calibration


@dataclass(frozen=True)
class Evidence:
    """What the retrieved chunks say about answerability, before any generation."""

    coverage: float  # of the question's weighted terms, in the best chunk (with its title)
    dense: float | None  # the best chunk's cosine similarity to the question, when known
    probability: float
    threshold: float = CALIBRATED.threshold
    sentence: float | None = None  # the best sentence's cosine to the question, when an embedder is at hand
    names: float = 1.0  # share of the question's names the chunks hold (1.0: it names nothing)

    @property
    def answerable(self) -> bool:
        return self.probability >= self.threshold

    def features(self) -> dict[str, float | None]:
        return {
            "coverage": self.coverage,
            "dense": self.dense,
            "sentence": self.sentence,
            "names": self.names,
        }


# A capitalised word that does not open the question or a sentence: a name ("Volta", "Marrow Point",
# "Jean-Paul"); a hyphen goes on only to another capital ("Greek" of "Greek-letter" is the name).
_NAME = re.compile(r"(?<![.?!:]\s)(?<!^)\b[A-Z][\w'\u2019]*(?:-[A-Z][\w'\u2019]*)*")


def names(question: str) -> list[str]:
    """The question's names as stemmed terms: capitalised words past its first word."""
    found = _NAME.findall(question.strip())
    return [t for t in dict.fromkeys(bm25_terms.terms(" ".join(found))) if len(t) > 1]


def _text_with_title(ctx: Context) -> str:
    return f"{ctx.title}\n{ctx.heading or ''}\n{ctx.text}"


def names_share(asked: Sequence[str], contexts: Sequence[Context]) -> float:
    """The share of the question's names (stemmed) that the passages hold, titles and headings
    included: the gate's `names` feature over all passages, the subject check's over one cited chunk.
    1.0 when the question names nothing."""
    wanted = set(asked)
    if not wanted:
        return 1.0
    held = set(bm25_terms.terms(" ".join(_text_with_title(c) for c in contexts)))
    return len(wanted & held) / len(wanted)


def assess(
    question: str,
    contexts: Sequence[Context],
    weights: TermWeights | None = None,
    calibration: Calibration | None = None,
    *,
    terms: Sequence[str] | None = None,
    similarity: Similarity | None = None,
    named: Sequence[str] | None = None,
) -> Evidence:
    """The evidence features of the retrieved chunks and the calibrated probability. `terms` are
    the question's terms when the caller has them already (spelled by Searcher.spelled);
    `similarity` (Searcher.similarities) gives the best sentence's cosine; `named`, the question's
    names (spelled as `terms` are; else rag.evidence.names). The first of
    `calibration`, WORDS and COVERAGE_ONLY whose features are all known decides."""
    if not contexts:
        return Evidence(0.0, None, 0.0)
    terms = list(terms) if terms is not None else bm25_terms.terms(question)
    # Without the collection's statistics every word weighs the same: the k passages alone cannot
    # tell a rare word of the question from a common one that they happen to lack.
    w = weights(terms) if weights is not None else dict.fromkeys(terms, 1.0)
    best = contexts[0]
    cover = coverage(terms, _text_with_title(best), w)
    sentence = None
    if similarity is not None and calibration is not None and "sentence" in calibration.weights:
        texts = [s for c in contexts for s in sentences_and_lines(c.text)]
        sentence = max((float(x) for x in similarity(question, texts)), default=0.0) if texts else 0.0
    share = names_share(named if named is not None else names(question), contexts)
    features: dict[str, float | None] = {
        "coverage": cover,
        "dense": best.dense_score,
        "sentence": sentence,
        "names": share,
    }
    model = next(m for m in (calibration, WORDS, COVERAGE_ONLY) if m is not None and m.usable(features))
    return Evidence(cover, best.dense_score, model.probability(features), model.threshold, sentence, share)
