"""The search structures of one generation of a collection: a FAISS index and a BM25 matrix.

Immutable once built, so readers share them. Rows deleted since the files were written stay in
both as tombstones (the BM25 matrix marks them dead, FAISS searches skip them), which is what lets
a delete write a list of ids instead of the whole index. The index kinds and how each is built or
searched also live here; ingest.store decides when to write which file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lectern.ingest.bm25 import BM25Matrix

HNSW_EF_SEARCH = 128
IVF_MIN_ROWS = 1024  # below this an ivf collection uses a flat index (nothing to train on)


def new_index(
    kind: str, dimension: int, vectors: np.ndarray, ids: np.ndarray, options: dict[str, Any]
) -> Any:
    """A FAISS IndexIDMap2 (inner product) of the given kind over these vectors."""
    import faiss

    base: Any
    n = len(ids)
    if kind == "hnsw":
        base = faiss.IndexHNSWFlat(dimension, int(options.get("hnsw_m", 32)), faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf" and n >= IVF_MIN_ROWS:
        lists = ivf_lists(n, options)
        base = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT)
        base.train(vectors)
        base.nprobe = max(1, lists // 8)
    else:
        base = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIDMap2(base)
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    return index


def ivf_lists(n: int, options: dict[str, Any]) -> int:
    lists = int(options.get("ivf_lists") or max(16, int(4 * np.sqrt(n))))
    return max(1, min(lists, n // 39))


def base_of(index: Any) -> Any:
    """The index under the id map (IndexFlatIP, IndexHNSWFlat or IndexIVFFlat)."""
    import faiss

    return faiss.downcast_index(index.index)


def needs_rebuild(kind: str, index: Any, rows_after: int, dead: int) -> bool:
    """Whether the next write must rebuild the index from SQLite rather than update it in place:
    more than a quarter of its rows dead where rows cannot be removed (HNSW, IVF), or an ivf index
    still flat or trained when it had a quarter of today's rows or fewer."""
    import faiss

    if not can_remove(index) and dead > 0.25 * max(1, int(index.ntotal)):
        return True
    if kind == "ivf":
        base = base_of(index)
        if not isinstance(base, faiss.IndexIVF):
            return rows_after >= IVF_MIN_ROWS
        return ivf_lists(rows_after, {}) >= 2 * int(base.nlist)
    return False


def can_remove(index: Any) -> bool:
    """Only a flat index can drop rows under FAISS's id map: an HNSW graph cannot remove at all, and
    IVF lists keep their internal ids while IndexIDMap2 renumbers its map, so labels would shift.
    The others keep deleted rows as tombstones until a rebuild."""
    import faiss

    return isinstance(base_of(index), faiss.IndexFlat)


class Snapshot:
    """FAISS and BM25 of one generation, immutable once built: safe to share between readers.

    `persisted`: these are the structures state.json points to (else they were rebuilt from SQLite
    in memory and the next writer must write them in full)."""

    def __init__(self, generation: int, index: Any, bm25: BM25Matrix, persisted: bool = False) -> None:
        import faiss

        if int(index.ntotal) != len(bm25.ids):
            raise ValueError(f"FAISS holds {index.ntotal} rows, BM25 {len(bm25.ids)}")
        self.generation = generation
        self.index = index
        self.bm25 = bm25
        self.persisted = persisted
        self.dead = bm25.dead_ids
        self.size = bm25.n_live
        self._faiss = faiss
        self._exclude: Any = None
        if len(self.dead):
            inner = faiss.IDSelectorBatch(np.ascontiguousarray(self.dead, dtype=np.int64))
            self._exclude = (faiss.IDSelectorNot(inner), inner)  # keep the inner one alive
        self._last: tuple[tuple[int, ...], np.ndarray] = ((), np.zeros(0, dtype=np.float32))

    def _params(self, selector: Any) -> Any:
        """Search parameters of the index's own kind (IVF refuses the generic ones)."""
        faiss = self._faiss
        base = base_of(self.index)
        if isinstance(base, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(base.nprobe))
        if isinstance(base, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(base.hnsw.efSearch))
        return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]

    def _bm25_scores(self, term_ids: Sequence[int]) -> np.ndarray:
        """All BM25 scores for a query; the last one is kept, as hybrid fusion asks twice."""
        key = tuple(sorted(set(term_ids)))
        last = self._last
        if last[0] != key or not key:
            last = (key, self.bm25.scores(key))
            self._last = last  # one tuple store: safe to race, at worst recomputed
        return last[1]

    def dense(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top k live rows by inner product; `allowed` (live row ids from SQLite) filters first."""
        if self.size == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        params = None
        keep: Any = None
        if allowed is not None:
            if len(allowed) == 0:
                return []
            keep = self._faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            params = self._params(keep)
        elif self._exclude is not None:
            params = self._params(self._exclude[0])
        scores, ids = self.index.search(q, min(k, self.size), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def lexical(
        self, term_ids: Sequence[int], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        if self.size == 0 or not term_ids or k <= 0:
            return []
        scores = self._bm25_scores(term_ids)
        if allowed is not None:
            mask = np.isin(self.bm25.ids, allowed)
            scores = np.where(mask, scores, 0.0)
        k = min(k, int((scores > 0).sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.bm25.ids[i]), float(scores[i])) for i in top]

    def bm25_scores_for(self, term_ids: Sequence[int], ids: Sequence[int]) -> dict[int, float]:
        """Exact BM25 scores of given chunks, for fusing with dense candidates."""
        if not term_ids or not ids:
            return {i: 0.0 for i in ids}
        scores = self._bm25_scores(term_ids)
        pos = np.searchsorted(self.bm25.ids, np.asarray(ids, dtype=np.int64))
        out: dict[int, float] = {}
        for i, p in zip(ids, pos, strict=True):
            ok = p < len(self.bm25.ids) and self.bm25.ids[p] == i
            out[i] = float(scores[p]) if ok else 0.0
        return out
