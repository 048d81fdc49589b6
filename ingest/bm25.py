"""BM25 over a sparse term matrix that updates incrementally.

Each chunk's terms are stored once, at ingest, as integer ids; the matrix is rebuilt from those ids
with numpy alone (no re-tokenising), so a delete or an update never re-reads documents. Scores are
exact Okapi BM25 (k1, b), computed for every chunk at once from the query terms' columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import IO

import numpy as np
from scipy import sparse

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


class Vocabulary:
    """Term to id, append-only so stored ids never change meaning."""

    def __init__(self, items: Iterable[tuple[str, int]] = ()) -> None:
        self.ids: dict[str, int] = dict(items)
        self.new: list[tuple[str, int]] = []

    def encode(self, words: Sequence[str]) -> np.ndarray:
        out = np.empty(len(words), dtype=np.int32)
        ids = self.ids
        for i, w in enumerate(words):
            tid = ids.get(w)
            if tid is None:
                tid = ids[w] = len(ids)
                self.new.append((w, tid))
            out[i] = tid
        return out

    def lookup(self, words: Sequence[str]) -> list[int]:
        return [self.ids[w] for w in words if w in self.ids]


@dataclass
class BM25Matrix:
    """Rows are chunks (in `ids` order), columns terms; values are ready-to-sum BM25 weights."""

    ids: np.ndarray  # int64 chunk row ids
    weights: sparse.csc_matrix
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def build(
        cls, ids: np.ndarray, term_blobs: Sequence[bytes], vocab_size: int, k1: float = 1.2, b: float = 0.75
    ) -> BM25Matrix:
        n = len(ids)
        arrays = [np.frombuffer(blob, dtype=np.int32) for blob in term_blobs]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        cols = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        width = max(vocab_size, int(cols.max()) + 1 if len(cols) else 0, 1)
        tf = sparse.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (rows, cols.astype(np.int64))), shape=(n, width)
        )
        tf.sum_duplicates()
        df = np.bincount(tf.indices, minlength=width).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avgdl = float(lengths.mean()) if n else 1.0
        norm = (k1 * (1 - b + b * lengths / max(avgdl, 1e-9))).astype(np.float32)
        data = tf.data
        row_of = np.repeat(np.arange(n), np.diff(tf.indptr))
        tf.data = (data * (k1 + 1) / (data + norm[row_of])) * idf[tf.indices]
        return cls(np.asarray(ids, dtype=np.int64), tf.tocsc(), k1, b)

    def scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """BM25 score of every row for a query (a repeated query term counts once)."""
        out = np.zeros(len(self.ids), dtype=np.float32)
        w = self.weights
        for t in set(term_ids):
            if t >= w.shape[1]:
                continue
            lo, hi = w.indptr[t], w.indptr[t + 1]
            out[w.indices[lo:hi]] += w.data[lo:hi]  # rows are unique within a column
        return out

    def save(self, fh: IO[bytes]) -> None:
        w = self.weights
        np.savez(
            fh,
            ids=self.ids,
            data=w.data,
            indices=w.indices,
            indptr=w.indptr,
            shape=np.array(w.shape),
            params=np.array([self.k1, self.b]),
        )

    @classmethod
    def load(cls, path: str) -> BM25Matrix:
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(x) for x in z["shape"])
            weights = sparse.csc_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            k1, b = (float(x) for x in z["params"])
            return cls(z["ids"], weights, k1, b)
