"""Dense, BM25 and hybrid retrieval over a collection, with filters before the top-k cut, and MMR.

Hybrid fusion scores the union of both candidate lists exactly in both spaces (no candidate gets a
made-up zero because the other list missed it), rescales each score to [0, 1] over the candidates,
and mixes them with the configured weights. Exposed as a small API (`Searcher.search`) and as a
langchain-core BaseRetriever for users' own chains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from lectern.errors import UnknownKey
from lectern.ingest import tokenize
from lectern.ingest.embed import Embedder
from lectern.ingest.store import Collection, StoredChunk
from lectern.rag.limits import CANDIDATES_MAX, K_MAX, check_k, check_page
from lectern.rag.settings import RetrievalSettings

MODES = ("hybrid", "dense", "bm25")
MIN_SPELLED = 5  # Searcher.spelled corrects terms of at least this many letters
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def one_edit_away(term: str) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion (a-z) away from `term`."""
    splits = [(term[:i], term[i:]) for i in range(len(term) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
    inserts = {a + c + b for a, b in splits for c in _LETTERS}
    return (deletes | swaps | replaces | inserts) - {term}


Scored = list[tuple[int, float, float | None, float | None]]  # id, score, dense, bm25


@dataclass(frozen=True)
class Filters:
    """Metadata filters, applied inside the index search so k results still come back."""

    sources: tuple[str, ...] = ()
    page_min: int | None = None
    page_max: int | None = None

    @property
    def empty(self) -> bool:
        return not self.sources and self.page_min is None and self.page_max is None


@dataclass
class Hit:
    chunk: StoredChunk
    score: float
    dense: float | None = None
    lexical: float | None = None
    collection: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_document(self) -> Document:
        c = self.chunk
        return Document(
            page_content=c.text,
            id=c.chunk_id,
            metadata={
                "chunk_id": c.chunk_id,
                "source": c.source,
                "page": c.page,
                "heading": c.heading,
                "title": c.title or "",
                "start": c.start,
                "end": c.end,
                "score": self.score,
                "dense_score": self.dense,
                "bm25_score": self.lexical,
                "collection": self.collection,
            },
        )


def _rescale(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] over the candidates; a constant list maps to 1 (all equally good)."""
    if len(values) == 0:
        return values
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        return np.ones_like(values) if hi > 0 else np.zeros_like(values)
    return (values - lo) / (hi - lo)


class Searcher:
    """Queries one collection; the embedder must be the one the collection was built with."""

    def __init__(self, collection: Collection, embedder: Embedder, settings: RetrievalSettings) -> None:
        collection.manifest.check_compatible(embedder.identity, embedder.dimension, collection.path)
        self.collection = collection
        self.embedder = embedder
        self.settings = settings

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: str | None = None,
        filters: Filters | None = None,
        mmr: bool | None = None,
        limit: int = K_MAX,
    ) -> list[Hit]:
        """The best `k` chunks (1 to `limit`, rag.limits; unset: retrieval.k)."""
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise UnknownKey("retrieval mode", mode, list(MODES))
        k = check_k(self.settings.k if k is None else k, limit=limit)
        if filters is not None:
            check_page(filters.page_min, "page_min")
            check_page(filters.page_max, "page_max")
        use_mmr = self.settings.mmr if mmr is None else mmr
        snap = self.collection.snapshot()
        allowed = None
        if filters is not None and not filters.empty:
            allowed = self.collection.filter_ids(
                list(filters.sources) or None, filters.page_min, filters.page_max
            )
        fetch = max(self.settings.fetch_k, k * 4 if use_mmr else k)
        qvec: np.ndarray | None = None
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        term_ids: list[int] = []
        if mode in ("dense", "hybrid") or use_mmr:
            qvec = self.embedder.embed_query(query)
        if mode in ("dense", "hybrid"):
            assert qvec is not None
            dense = snap.dense(qvec, fetch if mode == "hybrid" or use_mmr else k, allowed)
        if mode in ("bm25", "hybrid"):
            term_ids = self.collection.term_ids(self.spelled(tokenize.terms(query)))
            lexical = snap.lexical(term_ids, fetch if mode == "hybrid" or use_mmr else k, allowed)
        scored: Scored
        if mode == "dense":
            scored = [(i, s, s, None) for i, s in dense]
        elif mode == "bm25":
            scored = [(i, s, None, s) for i, s in lexical]
        else:
            assert qvec is not None
            scored = self._fuse(dense, lexical, qvec, term_ids, snap)
        if use_mmr and qvec is not None and len(scored) > k:
            scored = self._mmr(scored, qvec, k)
        scored = scored[:k]
        chunks = self.collection.fetch([i for i, *_ in scored])
        name = self.collection.path.name
        return [
            Hit(chunks[i], float(s), d, lx, collection=name)
            for i, s, d, lx in scored
            if i in chunks and s >= self.settings.min_score
        ]

    def spelled(self, terms: Sequence[str]) -> list[str]:
        """The query's terms with each one the collection has never seen replaced by the commonest
        term one edit away (a letter missing, extra, wrong, or two swapped): "netwon" -> "newton".

        A misspelled name otherwise drops out of BM25 and, weighing as the rarest word, makes the
        evidence gate abstain on a question whose answer is right there. Short terms (under
        MIN_SPELLED letters) and terms with digits are left alone: too many words lie one edit away.
        """
        if not self.settings.spelling:
            return list(terms)
        unseen = [t for t in dict.fromkeys(terms) if len(t) >= MIN_SPELLED and t.isalpha() and t.isascii()]
        known = self.collection.vocabulary(unseen)
        unseen = [t for t in unseen if t not in known]
        if not unseen:
            return list(terms)
        candidates = {t: one_edit_away(t) for t in unseen}
        found = self.collection.vocabulary(sorted({c for cs in candidates.values() for c in cs}))
        if not found:
            return list(terms)
        bm = self.collection.snapshot().bm25
        names = list(found)
        idf = dict(zip(names, bm.idf([found[n] for n in names]).tolist(), strict=True))
        rarest = float(bm.idf([-1])[0])  # a term no live chunk holds (deleted since) is no correction
        fixes: dict[str, str] = {}
        for term, options in candidates.items():
            live = [(idf[c], c) for c in options if c in idf and idf[c] < rarest]
            if live:
                fixes[term] = min(live)[1]
        return [fixes.get(t, t) for t in terms]

    def term_weights(self, terms: Sequence[str]) -> dict[str, float]:
        """The collection's IDF of each stemmed term (rag.evidence weighs a question's words by it);
        a term no chunk holds weighs as the rarest."""
        unique = list(dict.fromkeys(terms))
        ids = self.collection.vocabulary(unique)
        idf = self.collection.snapshot().bm25.idf([ids.get(t, -1) for t in unique])
        return {t: float(w) for t, w in zip(unique, idf, strict=True)}

    def _fuse(
        self,
        dense: list[tuple[int, float]],
        lexical: list[tuple[int, float]],
        qvec: np.ndarray,
        term_ids: Sequence[int],
        snap: Any,
    ) -> Scored:
        ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
        if not ids:
            return []
        dense_map = dict(dense)
        missing = [i for i in ids if i not in dense_map]
        if missing:
            found = self.collection.vectors(missing)  # by id: rows deleted since the snapshot are absent
            dense_map.update({i: float(v @ qvec) for i, v in found.items()})
            ids = [i for i in ids if i in dense_map]  # a deleted row is no candidate
        lex_map = dict(lexical)
        if term_ids:
            lex_missing = [i for i in ids if i not in lex_map]
            if lex_missing:
                lex_map.update(snap.bm25_scores_for(term_ids, lex_missing))
        d = np.array([dense_map.get(i, 0.0) for i in ids], dtype=np.float32)
        b = np.array([lex_map.get(i, 0.0) for i in ids], dtype=np.float32)
        wd, wb = self.settings.dense_weight, self.settings.bm25_weight
        total = (wd + wb) or 1.0
        fused = (wd * _rescale(d) + wb * _rescale(b)) / total
        order = np.argsort(-fused, kind="stable")
        return [(ids[j], float(fused[j]), float(d[j]), float(b[j])) for j in order]

    def _mmr(self, scored: Scored, qvec: np.ndarray, k: int) -> Scored:
        """Maximal marginal relevance: trade relevance for novelty among the candidates."""
        found = self.collection.vectors([i for i, *_ in scored])
        scored = [s for s in scored if s[0] in found]  # rows deleted since the snapshot drop out
        if not scored:
            return []
        vectors = np.vstack([found[i] for i, *_ in scored])
        relevance = _rescale(np.array([s for _, s, *_ in scored], dtype=np.float32))
        lam = self.settings.mmr_lambda
        chosen: list[int] = []
        rest = list(range(len(scored)))
        while rest and len(chosen) < k:
            if chosen:
                sim = vectors[rest] @ vectors[chosen].T
                penalty = sim.max(axis=1)
            else:
                penalty = np.zeros(len(rest), dtype=np.float32)
            best = int(np.argmax(lam * relevance[rest] - (1 - lam) * penalty))
            chosen.append(rest.pop(best))
        return [scored[j] for j in chosen]


class LecternRetriever(BaseRetriever):
    """langchain-core retriever over a lectern collection: plug it into any LangChain chain."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    searcher: Searcher
    k: int = 5
    mode: str = "hybrid"
    filters: Filters | None = None
    mmr: bool = False
    reranker: Any = None  # a rag.rerank.CrossEncoderReranker: fetch rerank_candidates, keep the best k
    rerank_candidates: int = 20

    def __init__(self, **data: Any) -> None:
        if "k" in data:
            check_k(data["k"])  # before pydantic turns True into 1 or "3" into 3
        super().__init__(**data)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        k = check_k(self.k)
        fetch = (
            max(k, check_k(self.rerank_candidates, limit=CANDIDATES_MAX)) if self.reranker is not None else k
        )
        hits = self.searcher.search(
            query, k=fetch, mode=self.mode, filters=self.filters, mmr=self.mmr, limit=CANDIDATES_MAX
        )
        docs = [h.to_document() for h in hits]
        if self.reranker is not None:
            docs = self.reranker.rerank(query, docs, self.k)
        return docs


class LangChainEmbeddings(Embeddings):
    """Adapter to langchain-core's Embeddings interface, for users' own LangChain chains."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).tolist()
