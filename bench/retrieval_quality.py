"""Retrieval quality of lectern's profiles against the LangChain tutorial pipeline, one run.

    .venv/bin/python -m bench.retrieval_quality [--years S08 S09] [--json OUT]
    .venv/bin/python -m bench.retrieval_quality --backends faiss milvus [--years S08 S09]

For each CMU year: the tutorial's dense retrieval, lectern `accurate` (hybrid, dense, bm25) and
lectern `fast` (hybrid), with the metrics of `lectern eval retrieval` and the differences to the
tutorial that the targets are stated in.

With --backends: the `accurate` profile on each store backend instead, the articles ingested once per
backend and year: faiss (lectern's own fusion) in each mode, milvus-lite in each mode and its hybrid
with both of Milvus' rankers (RRF, and weighted with lectern's weights).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench import tutorial
from lectern.rag.evaluate import (
    RankedChunk,
    articles_of,
    eval_searcher,
    load_qa,
    retrieval_metrics,
    run_retrieval_eval,
)
from lectern.rag.settings import load_settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa"


def tutorial_metrics(qa_dir: Path) -> dict[str, float]:
    items = load_qa(qa_dir)
    t0 = time.perf_counter()
    store, chunks = tutorial.build(articles_of(items))
    print(f"  tutorial ingest: {chunks} chunks in {time.perf_counter() - t0:.1f} s", flush=True)

    def run(question: str, n: int) -> list[RankedChunk]:
        return [
            RankedChunk(d.metadata["source"], d.page_content) for d in store.similarity_search(question, k=n)
        ]

    return retrieval_metrics(items, run)


def backend_rows(
    qa_dir: Path, backend: str, tmp: Path, modes: tuple[str, ...] = ("hybrid", "dense", "bm25")
) -> dict[str, dict[str, float]]:
    """The accurate profile on one store backend: each mode (and each Milvus ranker) over one ingest."""
    settings = load_settings(data_dir=tmp)
    settings.ingest.embed.profile = "accurate"
    settings.store.backend = backend  # type: ignore[assignment]
    items = load_qa(qa_dir)
    rows: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    with eval_searcher(articles_of(items), settings, tmp) as searcher:
        print(f"  {backend} ingest: {time.perf_counter() - t0:.1f} s", flush=True)
        runs: list[tuple[str, str, str | None]] = [(m, m, None) for m in modes]
        if backend == "milvus" and "hybrid" in modes:
            rankers = [("hybrid rrf", "hybrid", "rrf"), ("hybrid weighted", "hybrid", "weighted")]
            runs = [*rankers, *(r for r in runs if r[1] != "hybrid")]
        for label, mode, ranker in runs:
            if ranker is not None:  # the ranker is the backend's (store.ranker): set it for this run
                searcher.collection.backend.ranker = ranker  # type: ignore[attr-defined]

            def run(question: str, n: int, mode: str = mode) -> list[RankedChunk]:
                return [
                    RankedChunk(h.chunk.source, h.chunk.text)
                    for h in searcher.search(question, k=n, mode=mode)
                ]

            rows[f"{backend} {label}"] = metrics = retrieval_metrics(items, run)
            print(f"  {backend} {label}: {json.dumps(metrics)}", flush=True)
    return rows


def print_table(year: str, rows: dict[str, dict[str, float]]) -> None:
    names = list(next(iter(rows.values())))
    print(f"\n### {year}\n")
    print("| pipeline | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, m in rows.items():
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", nargs="+", default=["S08", "S09"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--backends", nargs="+", choices=["faiss", "milvus"], default=None)
    parser.add_argument(
        "--modes", nargs="+", choices=["hybrid", "dense", "bm25"], default=["hybrid", "dense", "bm25"]
    )
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    if args.backends:
        with tempfile.TemporaryDirectory(prefix="lectern-bench-") as tmp:
            for year in args.years:
                print(f"{year}:", flush=True)
                results[year] = {}
                for backend in args.backends:
                    rows = backend_rows(args.data / year, backend, Path(tmp), tuple(args.modes))
                    results[year].update(rows)
        for year, rows in results.items():
            print_table(year, rows)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="lectern-bench-") as tmp:
        for year in args.years:
            qa_dir = args.data / year
            print(f"{year}:", flush=True)
            rows = {"tutorial dense": tutorial_metrics(qa_dir)}
            for profile, modes in (("accurate", ("hybrid", "dense", "bm25")), ("fast", ("hybrid",))):
                settings = load_settings(data_dir=Path(tmp))
                settings.ingest.embed.profile = profile  # type: ignore[assignment]
                for mode in modes:
                    metrics, _ = run_retrieval_eval(qa_dir, settings, mode)
                    rows[f"lectern {profile} {mode}"] = metrics
                    print(f"  {profile} {mode}: {json.dumps(metrics)}", flush=True)
            results[year] = rows
    for year, rows in results.items():
        base = rows["tutorial dense"]
        print(f"\n### {year}\n")
        names = list(base)
        print("| pipeline | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for name, m in rows.items():
            print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in names) + " |")
        for name in ("lectern accurate hybrid", "lectern fast hybrid"):
            m = rows[name]
            print(
                f"\n{name} - tutorial: article_hit@1 {m['article_hit@1'] - base['article_hit@1']:+.3f}, "
                f"article_hit@5 {m['article_hit@5'] - base['article_hit@5']:+.3f}, "
                f"answer_hit@5 {m['answer_hit@5'] - base['answer_hit@5']:+.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
