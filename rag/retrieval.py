"""Dense, BM25 and hybrid retrieval over a collection, with filters before the top-k cut, and MMR.

The question is embedded and cut into terms here; the store searches (the fusion of a hybrid search
is the store's: ingest.fusion for faiss, Milvus's hybrid_search and store.ranker for milvus). MMR then
diversifies the store's candidates. Exposed as a small API (`Searcher.search`) and as a
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
from lectern.ingest import bm25_terms
from lectern.ingest.embed_base import Embedder
from lectern.ingest.fusion import rescale as _rescale
from lectern.ingest.stores import Filters, Scored, SearchRequest, Store, StoredChunk
from lectern.rag.limits import CANDIDATES_MAX, K_MAX, check_k, check_page, check_query
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


__all__ = ["Filters", "Hit", "LecternRetriever", "Searcher", "one_edit_away"]


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


class Searcher:
    """Queries one collection; the embedder must be the one the collection was built with."""

    def __init__(self, collection: Store, embedder: Embedder, settings: RetrievalSettings) -> None:
        collection.manifest.check_compatible(embedder.identity, embedder.dimension, collection.where)
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
        query = check_query(query)
        k = check_k(self.settings.k if k is None else k, limit=limit)
        if filters is not None:
            check_page(filters.page_min, "page_min")
            check_page(filters.page_max, "page_max")
        use_mmr = self.settings.mmr if mmr is None else mmr
        fetch = max(self.settings.fetch_k, k * 4 if use_mmr else k)
        qvec: np.ndarray | None = None
        terms: list[str] = []
        if mode in ("dense", "hybrid") or use_mmr:
            qvec = self.embedder.embed_query(query)
        with self.collection.reading():
            if mode in ("bm25", "hybrid"):
                terms = self.spelled(bm25_terms.terms(query))
            request = SearchRequest(
                mode, qvec, terms, k, fetch if mode == "hybrid" or use_mmr else k, filters,
                self.settings.dense_weight, self.settings.bm25_weight,
            )  # fmt: skip
            scored = self.collection.search(request)
            if use_mmr and qvec is not None and len(scored) > k:
                scored = self._mmr(scored, qvec, k)
            scored = scored[:k]
            chunks = self.collection.fetch([i for i, *_ in scored])
        name = self.collection.name
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
        if not self.settings.spelling or not self.collection.corrects_spelling:
            return list(terms)
        unseen = [t for t in dict.fromkeys(terms) if len(t) >= MIN_SPELLED and t.isalpha() and t.isascii()]
        known = self.collection.vocabulary(unseen)
        unseen = [t for t in unseen if t not in known]
        if not unseen:
            return list(terms)
        candidates = {t: one_edit_away(t) for t in unseen}
        idf, rarest = self.collection.term_idf(sorted({c for cs in candidates.values() for c in cs}))
        if not idf:
            return list(terms)
        # a term no live chunk holds (deleted since) is no correction: it weighs as the rarest
        fixes: dict[str, str] = {}
        for term, options in candidates.items():
            live = [(idf[c], c) for c in options if c in idf and idf[c] < rarest]
            if live:
                fixes[term] = min(live)[1]
        return [fixes.get(t, t) for t in terms]

    def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        """The cosine of each text to the query, with the collection's embedder (the evidence gate's
        sentence similarity, rag.evidence.assess)."""
        if not texts:
            return []
        q = self.embedder.embed_query(query)
        vectors = self.embedder.embed(list(texts))
        norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(q)), 1e-12)
        return (vectors @ q / np.maximum(norms, 1e-12)).astype(float).tolist()

    def term_weights(self, terms: Sequence[str]) -> dict[str, float]:
        """The collection's IDF of each stemmed term (rag.evidence weighs a question's words by it);
        a term no chunk holds weighs as the rarest."""
        unique = list(dict.fromkeys(terms))
        idf, rarest = self.collection.term_idf(unique)
        return {t: float(idf.get(t, rarest)) for t in unique}

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
