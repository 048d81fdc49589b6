"""Query latency at scale: hybrid search over 100,000 chunks on CPU, models loaded.

    .venv/bin/python -m bench.query_latency [--chunks 100000] [--queries 200] [--index flat|hnsw|ivf]

The corpus is synthetic (sentences of the CMU articles shuffled into chunks of about 120 words) with
random unit vectors, written straight through the store's writer: what is measured is the query
path — the real MiniLM embedding of the query, FAISS, BM25, fusion and the SQLite fetch — not
ingestion. The baseline in the same run is the tutorial's FAISS similarity_search (LangChain's
vector store over the same vectors and the same MiniLM) for the same queries.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lectern.ingest import tokenize
from lectern.ingest.store import Collection, DocumentRow, Manifest, NewChunk
from lectern.rag.evaluate import load_qa
from lectern.rag.retrieval import Searcher
from lectern.rag.settings import load_settings
from lectern.rag.workspace import shared_embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa"


def sentences() -> list[str]:
    out: list[str] = []
    for year in ("S08", "S09"):
        for path in sorted((DATA / year / "data").glob("*/*.txt.clean")):
            text = path.read_bytes().decode("utf-8", "replace")
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) > 4)
    return out


def build(
    path: Path, n_chunks: int, embedder_identity: dict, dim: int, per_doc: int = 1000, kind: str = "flat"
) -> None:
    """A synthetic collection of `n_chunks` in documents of `per_doc` chunks, written in one writer."""
    rng = random.Random(0)
    sents = sentences()
    manifest = Manifest(embedder=embedder_identity, dimension=dim, chunking={}, index={"kind": kind})
    col = Collection.create(path, manifest)
    vec_rng = np.random.default_rng(0)
    with col.writer() as w:
        for d in range(0, n_chunks, per_doc):
            chunks = []
            for i in range(min(per_doc, n_chunks - d)):
                text = " ".join(rng.choice(sents) for _ in range(6))
                chunks.append(
                    NewChunk(f"c{d + i}", None, None, 0, len(text), i, text, "", tokenize.terms(text))
                )
            vectors = vec_rng.standard_normal((len(chunks), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            row = DocumentRow(f"synthetic-{d // per_doc}.txt", str(d), "synthetic", "text", 1, 0, 0, [], 0.0)
            w.replace_document(row, chunks, vectors)
    col.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--index", choices=["flat", "hnsw", "ivf"], default="flat", help="lectern's FAISS index kind"
    )
    args = parser.parse_args()
    settings = load_settings()
    embedder = shared_embedder(settings.ingest.embed, settings.built_models_dir)
    questions = [q.question for q in load_qa(DATA / "S08")][: args.queries]
    with tempfile.TemporaryDirectory(prefix="lectern-latency-") as tmp:
        path = Path(tmp) / "big"
        t0 = time.perf_counter()
        build(path, args.chunks, embedder.identity, embedder.dimension, kind=args.index)
        print(f"built {args.chunks} chunks in {time.perf_counter() - t0:.0f} s", flush=True)
        col = Collection.open(path)
        t0 = time.perf_counter()
        col.snapshot()
        print(f"snapshot load {time.perf_counter() - t0:.2f} s", flush=True)
        results: dict[str, list[float]] = {}
        for mode in ("hybrid", "dense", "bm25"):
            searcher = Searcher(col, embedder, settings.retrieval)
            searcher.search(questions[0], mode=mode)
            times = []
            for q in questions:
                t = time.perf_counter()
                searcher.search(q, k=5, mode=mode)
                times.append((time.perf_counter() - t) * 1000)
            results[f"lectern {mode}"] = times
        # Baseline: LangChain's FAISS vector store over the same vectors, same MiniLM for the query.
        from langchain_community.vectorstores import FAISS

        from lectern.rag.retrieval import LangChainEmbeddings

        rows = col.db.execute("SELECT text, vector FROM chunks").fetchall()
        pairs = [(r[0], np.frombuffer(r[1], dtype=np.float32).tolist()) for r in rows]
        store = FAISS.from_embeddings(pairs, LangChainEmbeddings(embedder))
        del pairs
        times = []
        store.similarity_search(questions[0], k=5)
        for q in questions:
            t = time.perf_counter()
            store.similarity_search(q, k=5)
            times.append((time.perf_counter() - t) * 1000)
        results["tutorial FAISS dense"] = times
        col.close()
    print(f"\n{args.chunks} chunks, {len(questions)} queries, k=5\n")
    print("| search | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for name, samples in results.items():
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"| {name} | {statistics.median(samples):.1f} | {p95:.1f} | {statistics.fmean(samples):.1f} |")
    base = statistics.median(results["tutorial FAISS dense"])
    print(f"\nhybrid p50 / tutorial dense p50 = {statistics.median(results['lectern hybrid']) / base:.2f}")


if __name__ == "__main__":
    main()
