"""What deleting one document costs in a large collection: time, rows read back, bytes written.

    .venv/bin/python -m bench.delete_cost [--chunks 100000] [--per-doc 100] [--kinds flat,hnsw]

The collection is bench.query_latency's synthetic one (CMU sentences shuffled into chunks, random
384-dimensional unit vectors, as MiniLM's), in documents of --per-doc chunks. Each delete runs as
`lectern delete` does: a fresh process state opens the collection, deletes one document and
persists. No model is loaded. The work counters (ingest.faiss_store.WORK) say what the delete did
besides its own rows; a search after the delete and one added document are timed for context.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.query_latency import build
from lectern.ingest import faiss_store
from lectern.ingest.faiss_store import Collection
from lectern.ingest.pipeline import delete
from lectern.ingest.stores import DocumentRow, NewChunk

DIM = 384
IDENTITY = {"kind": "fake", "name": f"bench-{DIM}", "normalize": True}


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_kind(kind: str, chunks: int, per_doc: int, root: Path, deletes: int) -> dict[str, float | int | str]:
    path = root / kind
    _, seconds = timed(lambda: build(path, chunks, IDENTITY, DIM, per_doc=per_doc, kind=kind))
    print(f"{kind}: built {chunks} chunks in {seconds:.0f} s", flush=True)
    work = getattr(faiss_store, "WORK", None)
    results: dict[str, float | int | str] = {"kind": kind}
    docs = chunks // per_doc
    picks = [f"synthetic-{d}.txt" for d in (docs // 100, docs // 2, docs * 9 // 10)]
    for n, source in enumerate(picks[:deletes]):
        if work is not None:
            work.clear()
        gc.collect()
        removed, seconds = timed(lambda s=source: delete(path, [s])[s])  # type: ignore[misc]
        assert removed == per_doc, removed
        results[f"delete {n + 1} s"] = round(seconds, 3)
        if work is not None and n == 0:
            results["rows read back"] = work["rows_read"]
            results["snapshot bytes written"] = work["snapshot_bytes_written"]
            results["full index writes"] = work["full_writes"]
    col = Collection.open(path)
    try:
        _, seconds = timed(col.snapshot)
        results["first search load s"] = round(seconds, 2)
        queries = np.random.default_rng(1).standard_normal((21, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        snap = col.snapshot()
        times = [timed(lambda q=q: snap.dense(q, 5))[1] for q in queries]  # type: ignore[misc]
        results["dense search ms (median of 21)"] = round(1000 * statistics.median(times), 1)
        chunk = [NewChunk(f"late-{i}", None, None, 0, 4, i, "late", "", ["late"]) for i in range(per_doc)]
        vectors = np.random.default_rng(2).standard_normal((per_doc, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

        def add() -> None:
            with col.writer() as w:
                w.replace_document(
                    DocumentRow("late.txt", "x", None, "text", 1, 0, 0, [], 0.0), chunk, vectors
                )

        _, seconds = timed(add)
        results["add one document s"] = round(seconds, 2)
    finally:
        col.close()
    print(f"{kind}: {results}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--per-doc", type=int, default=100)
    parser.add_argument("--kinds", default="flat,hnsw")
    parser.add_argument("--deletes", type=int, default=3, help="documents deleted one after the other (1-3)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lectern-delete-") as tmp:
        for kind in args.kinds.split(","):
            rows.append(one_kind(kind, args.chunks, args.per_doc, Path(tmp), args.deletes))
    print(f"\n{args.chunks} chunks, documents of {args.per_doc} chunks\n")
    keys = [k for k in rows[0] if k != "kind"]
    print("| index | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['kind']} | " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
