"""Query latency at scale: hybrid search over 100,000 chunks on CPU, models loaded.

    .venv/bin/python -m bench.query_latency [--chunks 100000] [--queries 200] \
        [--index flat,auto,hnsw,ivf] [--vectors minilm|random]

The corpus is synthetic: sentences of the CMU articles shuffled into chunks of six, written straight
through the store's writer, so what is measured is the query path (the real MiniLM embedding of the
query, FAISS, BM25, fusion and the SQLite fetch), not ingestion. A chunk's vector is, by default,
the normalised sum of its sentences' MiniLM vectors (`--vectors minilm`: real embeddings with the
neighbourhood structure an approximate index relies on; the 17k sentences are embedded once and
kept under bench/out/); `--vectors random` gives random unit vectors, an approximate index's worst
case. For each index kind the dense search's recall@5 is the share of the exact top 5 (a NumPy
scan of all vectors) that lectern's dense search returns. The baseline in the same run is the
tutorial's (bench/tutorial.py): LangChain's FAISS vector store, flat, over the same vectors, with
HuggingFaceEmbeddings embedding the question (MiniLM in torch, as the tutorial does).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lectern.ingest import bm25_terms
from lectern.ingest.faiss_store import Collection
from lectern.ingest.stores import DocumentRow, Manifest, NewChunk
from lectern.rag.evaluate import load_qa
from lectern.rag.retrieval import Searcher
from lectern.rag.settings import load_settings
from lectern.rag.workspace import shared_embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa"
OUT = Path(__file__).resolve().parent / "out" / "query-latency"
PER_CHUNK = 6


def sentences() -> list[str]:
    out: list[str] = []
    for year in ("S08", "S09"):
        for path in sorted((DATA / year / "data").glob("*/*.txt.clean")):
            text = path.read_bytes().decode("utf-8", "replace")
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) > 4)
    return list(dict.fromkeys(out))


def sentence_vectors(sents: list[str], embed: Callable[[list[str]], np.ndarray], dim: int) -> np.ndarray:
    """MiniLM vectors of every sentence, computed once and kept as a .npy under bench/out/."""
    key = hashlib.sha256("\n".join(sents).encode()).hexdigest()[:16]
    path = OUT / f"sentences-{key}-{dim}.npy"
    if path.is_file():
        return np.load(path)
    t0 = time.perf_counter()
    vectors = np.asarray(embed(sents), dtype=np.float32)
    print(f"embedded {len(sents)} sentences in {time.perf_counter() - t0:.0f} s", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def corpus(
    n_chunks: int, sents: list[str], sent_vecs: np.ndarray | None, dim: int
) -> tuple[list[str], np.ndarray]:
    """`n_chunks` texts of six sentences each and their vectors (sentence sums, or random)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(sents), size=(n_chunks, PER_CHUNK))
    texts = [" ".join(sents[j] for j in row) for row in picks]
    if sent_vecs is None:
        vectors = rng.standard_normal((n_chunks, dim)).astype(np.float32)
    else:
        vectors = sent_vecs[picks].sum(axis=1)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors


def build(
    path: Path, texts: list[str], vectors: np.ndarray, identity: dict, kind: str, per_doc: int = 1000
) -> None:
    """A collection of these chunks in documents of `per_doc` chunks, written in one writer."""
    dim = vectors.shape[1]
    manifest = Manifest(embedder=identity, dimension=dim, chunking={}, index={"kind": kind})
    col = Collection.create(path, manifest)
    with col.writer() as w:
        for d in range(0, len(texts), per_doc):
            chunks = [
                NewChunk(f"c{d + i}", None, None, 0, len(text), i, text, "", bm25_terms.terms(text))
                for i, text in enumerate(texts[d : d + per_doc])
            ]
            row = DocumentRow(f"synthetic-{d // per_doc}.txt", str(d), "synthetic", "text", 1, 0, 0, [], 0.0)
            w.replace_document(row, chunks, vectors[d : d + len(chunks)])
    col.close()


def timed(fn: Callable[[str], object], questions: list[str]) -> list[float]:
    fn(questions[0])
    times = []
    for q in questions:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index", default="flat,auto", help="lectern's FAISS index kinds, comma-separated")
    parser.add_argument("--vectors", choices=["minilm", "random"], default="minilm")
    args = parser.parse_args()
    settings = load_settings()
    embedder = shared_embedder(settings.ingest.embed, settings.models_dir)
    questions = [q.question for q in load_qa(DATA / "S08")][: args.queries]
    sents = sentences()
    sent_vecs = (
        sentence_vectors(sents, embedder.embed, embedder.dimension) if args.vectors == "minilm" else None
    )
    texts, vectors = corpus(args.chunks, sents, sent_vecs, embedder.dimension)
    qvecs = np.stack([embedder.embed_query(q) for q in questions])
    exact = np.argsort(-(qvecs @ vectors.T), axis=1)[:, :5]  # chunk c{i} is row i of `vectors`
    results: dict[str, list[float]] = {"query embedding alone": timed(embedder.embed_query, questions)}
    recalls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lectern-latency-") as tmp:
        for kind in args.index.split(","):
            path = Path(tmp) / kind
            t0 = time.perf_counter()
            build(path, texts, vectors, embedder.identity, kind)
            print(f"{kind}: built {args.chunks} chunks in {time.perf_counter() - t0:.0f} s", flush=True)
            col = Collection.open(path)
            t0 = time.perf_counter()
            col.snapshot()
            print(f"{kind}: snapshot load {time.perf_counter() - t0:.2f} s", flush=True)
            searcher = Searcher(col, embedder, settings.retrieval)
            for mode in ("hybrid", "dense", "bm25"):
                results[f"lectern {mode}, {kind}"] = timed(
                    lambda q, mode=mode, s=searcher: s.search(q, k=5, mode=mode), questions
                )
            found = []
            for q, best in zip(questions, exact, strict=True):
                got = {int(h.chunk.chunk_id[1:]) for h in searcher.search(q, k=5, mode="dense")}
                found.append(len(got & {int(b) for b in best}) / 5)
            recalls[kind] = statistics.fmean(found)
            if kind == "flat":  # the tutorial: HuggingFaceEmbeddings (torch) over LangChain's FAISS
                from langchain_community.vectorstores import FAISS
                from langchain_huggingface import HuggingFaceEmbeddings

                from lectern.ingest.embed_base import packaged_minilm_path

                tutorial = HuggingFaceEmbeddings(model_name=str(packaged_minilm_path()))
                store = FAISS.from_embeddings(list(zip(texts, vectors.tolist(), strict=True)), tutorial)
                results["tutorial FAISS dense, flat"] = timed(
                    lambda q, s=store: s.similarity_search(q, k=5), questions
                )
                del store
            col.close()
    print(f"\n{args.chunks} chunks ({args.vectors} vectors), {len(questions)} queries, k=5\n")
    print("| search | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|")
    for name, samples in results.items():
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"| {name} | {statistics.median(samples):.1f} | {p95:.1f} | {statistics.fmean(samples):.1f} |")
    print(
        "\ndense recall@5 against the exact top 5: " + ", ".join(f"{k} {v:.3f}" for k, v in recalls.items())
    )
    if "tutorial FAISS dense, flat" in results:
        base = statistics.median(results["tutorial FAISS dense, flat"])
        for kind in args.index.split(","):
            print(
                f"hybrid p50 ({kind}) / tutorial dense p50 = {statistics.median(results[f'lectern hybrid, {kind}']) / base:.2f}"
            )


if __name__ == "__main__":
    main()
