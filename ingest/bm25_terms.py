"""BM25's terms: words from text, the same way wherever lectern compares them.

`terms` is the BM25 tokenizer: ingest indexes chunks with it, and rag uses it to weigh evidence,
pick sentences and check citations, so a question and a passage always meet as the same words.
`fold` is the lighter normal form for matching phrases ("I don't know") in a model's answer.
`idf` is how rare a term is: BM25's IDF, the one formula the index, Milvus' counts, the evidence
gate and the citations' weights all read.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

TOKENIZER = "en-snowball-v1"  # recorded in the manifest: a change here needs a re-index
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Question words are stop words here: "who", "when" and "which" never name the answer's passage.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "also",
        "many",
        "much",
        "one",
        "may",
        "might",
        "must",
        "shall",
        "us",
    ]
)


@lru_cache(maxsize=1)
def _stemmer() -> object | None:
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # stemming is a quality gain, not a requirement
        return None


def terms(text: str) -> list[str]:
    """Lower-cased, stop words dropped, Snowball-stemmed words."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) < 40]
    stemmer = _stemmer()
    if stemmer is not None:
        return list(stemmer.stemWords(words))  # type: ignore[attr-defined]
    return words


def fold(text: str) -> str:
    """Lower case, curly apostrophes made straight and whitespace collapsed: for phrase matching."""
    return " ".join(text.replace("\u2019", "'").lower().split())


def idf(documents: float, holding: float) -> float:
    """BM25's IDF of a term that `holding` of `documents` documents hold: log(1 + (N - df + 0.5) /
    (df + 0.5)), never negative, largest for a term none holds."""
    return math.log1p((documents - holding + 0.5) / (holding + 0.5))
