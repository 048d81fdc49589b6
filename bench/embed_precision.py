"""The `accurate` embedder's CPU precisions side by side: speed of the embedding stage, and retrieval.

    nice -n 10 .venv/bin/python -m bench.embed_precision speed [--chunks 256] [--rounds 2]
    nice -n 10 .venv/bin/python -m bench.embed_precision quality [--years S08] [--mixed]

speed: the same chunks of the R manuals (as the pipeline embeds them: context line and text, about
180 word pieces) embedded by each precision in one process, the precisions interleaved and their
order rotated each round, so that load from other jobs falls on all alike; the cosine of each row
to fp32 torch's. "vs fp32" is fp32 torch's seconds over the precision's, within the round.

quality: `lectern eval retrieval`'s metrics on a CMU year (S08 is the tuning set) with documents and
queries embedded at each precision; with --mixed also documents in fp32 and queries at each other
precision, and the reverse, which is what sharing one collection between machines would do.

`onnx-int8-rr` is ONNX Runtime int8 with 7-bit weights (reduce_range), what a CPU without VNNI
exports (ingest.onnx_embed.needs_reduced_range), measured here on any CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest_speed import R_MANUALS, corpus, machine
from lectern.ingest.embed_base import Embedder, packaged_minilm_path
from lectern.ingest.settings import EmbedSettings
from lectern.ingest.st_embed import SentenceTransformerEmbedder

PRECISIONS = ["fp32", "bf16", "onnx-fp32", "onnx-int8", "onnx-int8-rr"]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa"


def chunk_texts(docs: list[Path], count: int) -> list[str]:
    """`count` chunks of the corpus as the pipeline embeds them, drawn at random (seed 0)."""
    from lectern.ingest.chunk import embedding_text
    from lectern.ingest.parse import parse_file

    tokenizer = str(packaged_minilm_path() / "tokenizer.json")
    texts: list[str] = []
    for path in corpus(docs):
        parsed = parse_file(str(path), str(path), "-", 0, tokenizer, 200, 40)
        texts.extend(embedding_text(c.context, c.text) for c in parsed.chunks)
    random.Random(0).shuffle(texts)
    return texts[:count]


def cache_for(label: str, base: Path) -> Path:
    """The user cache a label runs with: its own for onnx-int8-rr, exported with 7-bit weights."""
    if label != "onnx-int8-rr":
        return base
    from lectern.ingest import onnx_embed
    from lectern.ingest.embed_base import model_name, say

    cache = base / "reduce-range"
    source = packaged_minilm_path()
    onnx_embed.exported(source, cache, model_name(source), 256, say, reduce_range=True)
    return cache


def embedder(label: str, base: Path) -> SentenceTransformerEmbedder:
    precision = "onnx-int8" if label == "onnx-int8-rr" else label
    settings = EmbedSettings(profile="accurate", precision=precision)  # type: ignore[arg-type]
    return SentenceTransformerEmbedder(packaged_minilm_path(), settings, cache_for(label, base))


def speed(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    texts = chunk_texts(args.docs, args.chunks)
    models = {label: embedder(label, base) for label in args.precisions}
    vectors: dict[str, np.ndarray] = {}
    for label, model in models.items():  # loads (and exports) before the clock; warms up
        model.embed(texts[:16])
        print(f"  {label}: runs {model.precision}", flush=True)
    rounds: list[dict[str, float]] = []
    labels = list(models)
    for r in range(args.rounds):
        seconds = {}
        load = os.getloadavg()[0]
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            t0 = time.perf_counter()
            vectors[label] = models[label].embed(texts)
            seconds[label] = time.perf_counter() - t0
            print(f"  round {r + 1} {label}: {seconds[label]:.1f} s", flush=True)
        seconds["load_start"] = load
        seconds["load_end"] = os.getloadavg()[0]
        rounds.append(seconds)
    ref = vectors["fp32"]
    cosine = {label: np.sum(v * ref, axis=1) for label, v in vectors.items()}
    print(f"\n{len(texts)} chunks; load average per round (start-end): "
          + ", ".join(f"{r['load_start']:.1f}-{r['load_end']:.1f}" for r in rounds))  # fmt: skip
    head = " | ".join(f"round {i + 1} s (vs fp32)" for i in range(len(rounds)))
    print(f"\n| precision | {head} | cosine to fp32 mean | min |")
    print("|---|" + "---|" * len(rounds) + "---|---|")
    for label in labels:
        cells = " | ".join(f"{r[label]:.1f} ({r['fp32'] / r[label]:.2f}x)" for r in rounds)
        c = cosine[label]
        print(f"| {label} | {cells} | {c.mean():.4f} | {c.min():.4f} |")
    return {
        "rounds": rounds,
        "cosine": {k: [float(c.mean()), float(c.min())] for k, c in cosine.items()},
    }


@contextlib.contextmanager
def collection_of(articles: list[Path], settings: Any, model: Embedder, tmp: Path) -> Iterator[Any]:
    """rag.evaluate.eval_searcher's temporary faiss collection, embedded by this embedder."""
    from lectern.ingest.pipeline import ingest
    from lectern.ingest.store_backends import open_backend
    from lectern.ingest.stores import Target

    with tempfile.TemporaryDirectory(prefix="lectern-eval-", dir=tmp) as folder:
        target = Target(open_backend(settings.store, Path(folder)), "eval")
        report = ingest(articles, target, model, settings.ingest)
        assert report.ok, report.failed[:1]
        collection = target.open()
        try:
            yield collection
        finally:
            collection.close()


def quality(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    from lectern.rag.evaluate import RankedChunk, articles_of, load_qa, retrieval_metrics
    from lectern.rag.retrieval import Searcher
    from lectern.rag.settings import load_settings

    results: dict[str, Any] = {}
    models: dict[str, Embedder] = {label: embedder(label, base) for label in args.precisions}
    for year in args.years:
        items = load_qa(args.data / year)
        rows: dict[str, dict[str, float]] = {}
        for docs in args.precisions:
            queries = [docs]
            if args.mixed:
                queries += [q for q in args.precisions if q != docs and "fp32" in (q, docs)]
            settings = load_settings(data_dir=base / "data")
            t0 = time.perf_counter()
            with collection_of(articles_of(items), settings, models[docs], base) as collection:
                print(f"  {year} documents in {docs}: {time.perf_counter() - t0:.0f} s", flush=True)
                for q in queries:
                    s = Searcher(collection, models[q], settings.retrieval)
                    for mode in args.modes:

                        def run(
                            question: str, n: int, s: Searcher = s, mode: str = mode
                        ) -> list[RankedChunk]:
                            return [RankedChunk(h.chunk.source, h.chunk.text) for h in s.search(question, k=n, mode=mode)]  # fmt: skip

                        m = retrieval_metrics(items, run)
                        rows[f"{docs}|{q}|{mode}"] = m
                        print(f"    queries {q} {mode}: {json.dumps(m)}", flush=True)
        results[year] = rows
        print(f"\n### {year}\n\n| documents | queries | mode | article_hit@1 | answer_hit@5 | MRR@10 | "
              "article_hit@1 - fp32 | answer_hit@5 - fp32 |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
        for key, m in rows.items():
            docs, q, mode = key.split("|")
            ref = rows.get(f"fp32|fp32|{mode}", m)
            print(f"| {docs} | {q} | {mode} | {m['article_hit@1']:.3f} | {m['answer_hit@5']:.3f} | "
                  f"{m['MRR@10']:.3f} | {m['article_hit@1'] - ref['article_hit@1']:+.3f} | "
                  f"{m['answer_hit@5'] - ref['answer_hit@5']:+.3f} |")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["speed", "quality"])
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=PRECISIONS)
    parser.add_argument("--docs", type=Path, nargs="+", default=[R_MANUALS])
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--years", nargs="+", default=["S08"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--modes", nargs="+", default=["hybrid", "dense"])
    parser.add_argument("--mixed", action="store_true")
    parser.add_argument(
        "--cache", type=Path, default=None, help="user cache to export into (default: temporary)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if "fp32" not in args.precisions:
        args.precisions.insert(0, "fp32")
    info = machine()
    print("machine: " + json.dumps(info), flush=True)
    with tempfile.TemporaryDirectory(prefix="lectern-bench-") as tmp:
        base = args.cache or Path(tmp)
        out = speed(args, base) if args.what == "speed" else quality(args, base)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "argv": sys.argv[1:], args.what: out}, indent=2))


if __name__ == "__main__":
    main()
