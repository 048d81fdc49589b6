"""BM25 over a sparse term-count matrix that updates incrementally.

Each chunk's terms are stored once, at ingest, as integer ids. The matrix holds raw counts and the
live rows' statistics; a delete marks rows dead and subtracts their own terms from the statistics,
an add appends rows in memory, so neither re-reads other chunks nor re-tokenises anything. Scores
are exact Okapi BM25 (k1, b) over the live rows, computed from the query terms' columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import IO

import numpy as np
from scipy import sparse

from lectern.ingest.bm25_terms import idf


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


FORMAT = 2  # saved arrays: 1 held baked weights; 2 holds raw counts and lengths


def _counts(n_rows: int, width: int, rows: np.ndarray, cols: np.ndarray) -> sparse.csc_matrix:
    tf = sparse.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (rows, cols.astype(np.int64))), shape=(n_rows, width)
    )
    tf.sum_duplicates()
    return tf.tocsc()


@dataclass(frozen=True)
class BM25Matrix:
    """Raw term counts, rows are chunks (in ascending `ids` order), columns terms, plus the live rows'
    statistics (document frequencies, total length). Weights are computed per query from them, so a
    removed row only marks itself dead and updates the statistics (proportional to its own terms):
    the scores stay exact Okapi BM25 over the live rows, with nothing rebuilt.

    Immutable: `without` and `with_rows` return new matrices that share what did not change."""

    ids: np.ndarray  # int64 chunk row ids, ascending (row ids are never reused, so appends keep the order)
    tf: sparse.csc_matrix  # float32 term counts
    lengths: np.ndarray  # float32 terms per row
    live: np.ndarray  # bool per row: False for rows deleted since the counts were written
    df: np.ndarray  # float32 live rows that hold each term
    n_live: int
    total_length: float  # of the live rows
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def from_arrays(
        cls,
        ids: np.ndarray,
        term_arrays: Sequence[np.ndarray],
        vocab_size: int,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> BM25Matrix:
        n = len(ids)
        lengths = np.array([len(a) for a in term_arrays], dtype=np.float32)
        cols = np.concatenate(term_arrays).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths.astype(np.int64))
        width = max(vocab_size, int(np.max(cols, initial=0)) + 1, 1)
        tf = _counts(n, width, rows, cols)
        live = np.ones(n, dtype=bool)
        return cls._with_stats(np.asarray(ids, dtype=np.int64), tf, lengths, live, k1, b)

    @classmethod
    def from_batches(
        cls,
        batches: Iterable[tuple[np.ndarray, Sequence[np.ndarray]]],
        vocab_size: int,
        k1: float = 1.2,
        b: float = 0.75,
    ) -> BM25Matrix:
        """From (ids, term arrays) batches in ascending id order, as from_arrays would from them all
        at once; each batch's counts are summed before the next is read, so what is held is the
        matrix itself (a term's count once per row), not every occurrence of every term."""
        ids, lengths, indptr, indices, data = [], [], [np.zeros(1, dtype=np.int64)], [], []
        rows, width = 0, max(vocab_size, 1)
        for batch_ids, arrays in batches:
            part = cls.from_arrays(np.asarray(batch_ids, dtype=np.int64), arrays, vocab_size).tf.tocsr()
            width = max(width, part.shape[1])
            ids.append(np.asarray(batch_ids, dtype=np.int64))
            lengths.append(np.array([len(a) for a in arrays], dtype=np.float32))
            indptr.append(part.indptr[1:].astype(np.int64) + (indptr[-1][-1] if rows else 0))
            indices.append(part.indices.astype(np.int32))
            data.append(part.data.astype(np.float32))
            rows += len(batch_ids)
        if not rows:
            return cls.from_arrays(np.zeros(0, dtype=np.int64), [], vocab_size, k1, b)
        parts = (np.concatenate(data), np.concatenate(indices), np.concatenate(indptr))
        for pieces in (data, indices, indptr):
            pieces.clear()  # the pieces go as the whole is made
        tf = sparse.csr_matrix(parts, shape=(rows, width))
        del parts
        tf = tf.tocsc()
        live = np.ones(rows, dtype=bool)
        return cls._with_stats(np.concatenate(ids), tf, np.concatenate(lengths), live, k1, b)

    @classmethod
    def build(
        cls, ids: np.ndarray, term_blobs: Sequence[bytes], vocab_size: int, k1: float = 1.2, b: float = 0.75
    ) -> BM25Matrix:
        """From the term ids stored with each chunk (int32 blobs), in row order."""
        arrays = [np.frombuffer(blob, dtype=np.int32) for blob in term_blobs]
        return cls.from_arrays(ids, arrays, vocab_size, k1, b)

    @classmethod
    def _with_stats(
        cls,
        ids: np.ndarray,
        tf: sparse.csc_matrix,
        lengths: np.ndarray,
        live: np.ndarray,
        k1: float,
        b: float,
    ) -> BM25Matrix:
        """Statistics counted from the matrix itself: O(nonzeros), for building and loading only."""
        width = tf.shape[1]
        if live.all():  # a column's entries are the rows that hold its term
            df = np.diff(tf.indptr).astype(np.float32)
        else:
            col_of = np.repeat(np.arange(width, dtype=np.int64), np.diff(tf.indptr))
            df = np.bincount(col_of[live[tf.indices]], minlength=width).astype(np.float32)
        return cls(ids, tf, lengths, live, df, int(live.sum()), float(lengths[live].sum()), k1, b)

    @property
    def dead_ids(self) -> np.ndarray:
        return self.ids[~self.live]

    @cached_property
    def _norm(self) -> np.ndarray:
        avgdl = self.total_length / self.n_live if self.n_live else 1.0
        return (self.k1 * (1 - self.b + self.b * self.lengths / max(avgdl, 1e-9))).astype(np.float32)

    def idf(self, term_ids: Sequence[int]) -> np.ndarray:
        """BM25's IDF of each term over the live rows (a term no live chunk holds gets the largest)."""
        width = len(self.df)
        df = [float(self.df[t]) if 0 <= t < width else 0.0 for t in term_ids]
        return np.array([idf(self.n_live, d) for d in df], dtype=np.float64)

    def scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """BM25 score of every row for a query (a repeated query term counts once; dead rows score 0)."""
        out = np.zeros(len(self.ids), dtype=np.float32)
        if not self.n_live:
            return out
        tf, norm, k1 = self.tf, self._norm, self.k1
        for t in set(term_ids):
            if t >= tf.shape[1] or self.df[t] <= 0:
                continue
            weight = np.float32(idf(self.n_live, float(self.df[t])))
            lo, hi = tf.indptr[t], tf.indptr[t + 1]
            rows, counts = tf.indices[lo:hi], tf.data[lo:hi]
            out[rows] += counts * (k1 + 1) / (counts + norm[rows]) * weight  # rows are unique within a column
        if self.n_live < len(self.ids):
            out[~self.live] = 0.0
        return out

    def without(self, removed: Mapping[int, np.ndarray]) -> BM25Matrix:
        """The matrix with these rows dead: their own terms (`removed[id]`, the term ids stored with
        the chunk) update the statistics; nothing else is read or rebuilt."""
        if not removed or not len(self.ids):
            return self
        want = np.fromiter(removed, dtype=np.int64, count=len(removed))
        pos = np.minimum(np.searchsorted(self.ids, want), len(self.ids) - 1)
        found = (self.ids[pos] == want) & self.live[pos]
        if not found.any():
            return self
        rows = pos[found]
        live = self.live.copy()
        live[rows] = False
        df = self.df.copy()
        gone = [np.unique(np.asarray(removed[int(i)], dtype=np.int64)) for i in want[found]]
        cols = np.concatenate(gone)
        np.subtract.at(df, cols[cols < len(df)], 1.0)
        return replace(
            self,
            live=live,
            df=df,
            n_live=self.n_live - len(rows),
            total_length=self.total_length - float(self.lengths[rows].sum()),
        )

    def with_rows(
        self, ids: np.ndarray, term_arrays: Sequence[np.ndarray], vocab_size: int, drop_dead: bool
    ) -> BM25Matrix:
        """New rows appended (their ids above every present one); dead rows dropped when asked.
        In memory, O(nonzeros): no stored chunk is read again."""
        added = BM25Matrix.from_arrays(np.asarray(ids, dtype=np.int64), term_arrays, 1)
        return self.with_matrix(added, vocab_size, drop_dead)

    def with_matrix(self, added: BM25Matrix, vocab_size: int, drop_dead: bool) -> BM25Matrix:
        """`added`'s rows appended (with_rows, from a matrix built batch by batch: from_batches)."""
        keep = np.flatnonzero(self.live) if drop_dead else np.arange(len(self.ids))
        width = max(vocab_size, self.tf.shape[1], added.tf.shape[1], 1)
        old = self.tf.tocsr()[keep]  # a new matrix: the shared one is never changed
        new = added.tf.tocsr()
        old.resize((old.shape[0], width))
        new.resize((new.shape[0], width))
        tf = sparse.vstack([old, new], format="csc", dtype=np.float32)
        all_ids = np.concatenate([self.ids[keep], added.ids])
        if len(all_ids) > 1 and not (np.diff(all_ids) > 0).all():
            raise ValueError("BM25 rows must be appended in ascending id order")
        lengths = np.concatenate([self.lengths[keep], added.lengths])
        live = np.concatenate([self.live[keep], np.ones(len(added.ids), dtype=bool)])
        return BM25Matrix._with_stats(all_ids, tf, lengths, live, self.k1, self.b)

    def save(self, fh: IO[bytes]) -> None:
        """Counts of every row, dead ones included (the snapshot's tombstones say which are dead)."""
        tf = self.tf
        np.savez(
            fh,
            format=np.array([FORMAT]),
            ids=self.ids,
            data=tf.data,
            indices=tf.indices,
            indptr=tf.indptr,
            shape=np.array(tf.shape),
            lengths=self.lengths,
            params=np.array([self.k1, self.b]),
        )

    @classmethod
    def load(cls, path: str, dead: np.ndarray | None = None) -> BM25Matrix:
        """A saved matrix with the `dead` row ids marked dead; ValueError for another format."""
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or int(z["format"][0]) != FORMAT:
                raise ValueError(f"{path}: BM25 snapshot of another format")
            shape = tuple(int(x) for x in z["shape"])
            tf = sparse.csc_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            k1, b = (float(x) for x in z["params"])
            ids = np.asarray(z["ids"], dtype=np.int64)
            lengths = np.asarray(z["lengths"], dtype=np.float32)
        live = np.ones(len(ids), dtype=bool)
        if dead is not None and len(dead):
            live &= ~np.isin(ids, dead)
        return cls._with_stats(ids, tf, lengths, live, k1, b)
