"""Retrieval quality of lectern's profiles against the LangChain tutorial pipeline, one run.

    .venv/bin/python -m bench.retrieval_quality [--years S08 S09] [--json OUT]

For each CMU year: the tutorial's dense retrieval, lectern `accurate` (hybrid, dense, bm25) and
lectern `fast` (hybrid), with the metrics of `lectern eval retrieval` and the differences to the
tutorial that the targets are stated in.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench import tutorial
from lectern.rag.evaluate import RankedChunk, articles_of, load_qa, retrieval_metrics, run_retrieval_eval
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", nargs="+", default=["S08", "S09"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
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
