"""Summary faithfulness per method: the share of summary sentences that the summarized passages
support (rag.faithful), with model calls and seconds, for stuff, refine and map_reduce.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.summary_faithfulness \
        [--qa-dir ../shared/data/cmu-wikiqa/S09 --articles 10 --fit stuff --model packaged:qwen2.5-0.5b \
         --token-max 1024 --methods stuff refine map_reduce --json /tmp/summary-faithfulness.json]

The first N article files of a CMU-layout folder (sorted by path) are ingested into a temporary
collection and each is summarized by each method, through `Workspace.summarize` as a user's would be:
- stuff where the article fits the model's window in one call (else it is skipped, and counted);
- refine and map_reduce with `token_max` (the most tokens of text one call takes), so that an
  article longer than that takes their real multi-call path; one no longer is stuffed, and the
  table counts it under `ran as`.
With `--fit stuff` the N articles are instead the first (by path) that fit the model's window in one
stuff call and are longer than `token_max` tokens: all three methods then run, as named, on the same
articles (on S09, whose articles are mostly longer than the 0.5B's window, these are the shorter
ones; the config in the output lists them and counts the articles passed over and why). A file's own
text is counted first, so that only articles that may fit are ingested; the exact test is on their
chunks, as `summarize` makes it. `--methods` runs fewer methods (the same articles are chosen).
Faithfulness is pooled (supported sentences over all the claims of the method's summaries) and also
given per article; `problems` counts why sentences failed, and `withheld` the sentences that
refine's and map_reduce's partial summaries wrote and their passages did not support (left out
before the next step). `--model fake` runs the shipped fake model and fake embedder: a check that the
bench runs, not a measure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from lectern.rag.evaluate import articles_of, load_qa
from lectern.rag.settings import load_settings
from lectern.rag.summarize import fits_stuff
from lectern.rag.types import SummaryResult
from lectern.rag.workspace import Workspace

METHODS = ("stuff", "refine", "map_reduce")
DEFAULT_QA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-wikiqa" / "S09"


def record(article: Path, method: str, result: SummaryResult, seconds: float) -> dict[str, Any]:
    claims = [s for s in result.sentences if s.claim]
    return {
        "article": str(article),
        "method": method,
        "ran_as": result.method,
        "reason": result.reason,
        "calls": result.steps,
        "seconds": round(seconds, 2),
        "chunks": result.chunks,
        "sentences": len(claims),
        "supported": sum(s.supported for s in claims),
        "faithfulness": result.faithfulness,
        "problems": dict(Counter(s.problem for s in claims if s.problem)),
        "unsupported": result.unsupported,
        "withheld": [w.model_dump() for w in result.withheld],
        "summary": result.marked(),
    }


def totals(records: list[dict[str, Any]], skipped: int) -> dict[str, Any]:
    """One method's row: pooled and per-article faithfulness, calls, seconds."""
    ran = [r for r in records if "ran_as" in r]
    sentences = sum(r["sentences"] for r in ran)
    supported = sum(r["supported"] for r in ran)
    per_article = [r["faithfulness"] for r in ran if r["faithfulness"] is not None]
    problems: Counter[str] = Counter()
    for r in ran:
        problems.update(r["problems"])
    return {
        "articles": len(ran),
        "skipped": skipped,
        "ran_as": dict(Counter(r["ran_as"] for r in ran)),
        "sentences": sentences,
        "supported": supported,
        "faithfulness": round(supported / sentences, 4) if sentences else None,
        "mean_article_faithfulness": round(statistics.fmean(per_article), 4) if per_article else None,
        "min_article_faithfulness": min(per_article, default=None),
        "calls": sum(r["calls"] for r in ran),
        "seconds": round(sum(r["seconds"] for r in ran), 1),
        "problems": dict(problems),
        "withheld": sum(len(r["withheld"]) for r in ran),
    }


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The rows as aligned plain text."""
    head = ["method", "articles", "ran as", "sentences", "supported", "faithfulness",
            "per article (mean/min)", "withheld", "calls", "seconds"]  # fmt: skip
    lines = [head]
    for method, t in rows.items():
        ran_as = [f"{k} {v}" for k, v in t["ran_as"].items()] + (
            [f"skipped {t['skipped']}"] if t["skipped"] else []
        )
        fmt = _share
        lines.append([
            method, str(t["articles"]), ", ".join(ran_as) or "-", str(t["sentences"]), str(t["supported"]),
            fmt(t["faithfulness"]), f"{fmt(t['mean_article_faithfulness'])}/{fmt(t['min_article_faithfulness'])}",
            str(t["withheld"]), str(t["calls"]), f"{t['seconds']:.1f}",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines)


def fitting(
    ws: Workspace, candidates: list[Path], n: int, *, max_new_tokens: int, token_max: int
) -> tuple[list[Path], Counter[str]]:
    """The first `n` of `candidates` that fit one stuff call and are longer than `token_max` tokens,
    ingested into `ws`; and how many were passed over, by reason."""
    model = ws.llm
    maybe = [  # the chunks overlap, so a file too long for one call has chunks too long for it too
        a
        for a in candidates
        if fits_stuff(
            model, [Document(page_content=a.read_text(errors="replace"))], max_new_tokens=max_new_tokens
        )
    ]
    ingest(ws, maybe)
    passed: Counter[str] = Counter()
    chosen: list[Path] = []
    for article in candidates:
        if len(chosen) == n:
            break
        docs = ws.scope_documents(source=article)[0] if article in maybe else []
        if not docs or not fits_stuff(model, docs, max_new_tokens=max_new_tokens):
            passed["too long for one stuff call"] += 1
        elif fits_stuff(model, docs, max_new_tokens=max_new_tokens, token_max=token_max):
            passed[f"at most token_max {token_max}: one call for every method"] += 1
        else:
            chosen.append(article)
    return chosen, passed


def ingest(ws: Workspace, articles: list[Path]) -> None:
    report = ws.ingest(articles)
    if not report.ok:
        raise SystemExit(f"could not ingest: {report.failed[0].path}: {report.failed[0].reason}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qa-dir", type=Path, default=DEFAULT_QA_DIR)
    ap.add_argument("--articles", type=int, default=10, help="the first N article files, sorted by path")
    ap.add_argument(
        "--fit",
        choices=["stuff"],
        default=None,
        help="the first N articles that fit one stuff call and are longer than --token-max",
    )
    ap.add_argument(
        "--model", default="packaged:qwen2.5-0.5b", help="a model as llm.model takes it, or `fake`"
    )
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument(
        "--token-max", type=int, default=1024, help="refine and map_reduce: tokens of text per call"
    )
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the model")
    ap.add_argument("--json", type=Path, default=None, help="also write the table and every summary here")
    args = ap.parse_args()

    candidates = articles_of(load_qa(args.qa_dir))
    fake = args.model == "fake"
    llm: dict[str, Any] = {"backend": "fake"} if fake else {"model": args.model, "threads": args.threads}
    llm.update(max_new_tokens=args.max_new_tokens, temperature=0.0)
    ingest_settings: dict[str, Any] = {"parse_workers": 0, **({"embed": {"model": "fake"}} if fake else {})}
    records: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    skipped: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="lectern-bench-summary-") as tmp:
        settings = load_settings(data_dir=Path(tmp), ingest=ingest_settings, llm=llm)
        ws = Workspace(collection="bench", settings=settings)
        try:
            t0 = time.perf_counter()
            model = ws.llm
            print(f"model {args.model} built in {time.perf_counter() - t0:.1f} s", flush=True)
            if args.fit == "stuff":
                articles, passed = fitting(
                    ws,
                    candidates,
                    args.articles,
                    max_new_tokens=args.max_new_tokens,
                    token_max=args.token_max,
                )
            else:
                articles = candidates[: args.articles]
                ingest(ws, articles)
            print(f"{len(articles)} articles from {args.qa_dir}"
                  + (f" that fit one stuff call; passed over: {dict(passed)}" if args.fit else ""),
                  flush=True)  # fmt: skip
            for i, article in enumerate(articles, 1):
                docs, _ = ws.scope_documents(source=article)
                for method in args.methods:
                    if method == "stuff" and not fits_stuff(model, docs, max_new_tokens=args.max_new_tokens):
                        skipped[method] += 1
                        records[method].append(
                            {"article": str(article), "method": method, "skipped": "does not fit"}
                        )
                        continue
                    token_max = None if method == "stuff" else args.token_max
                    t0 = time.perf_counter()
                    result = ws.summarize(source=article, method=method, token_max=token_max)
                    records[method].append(record(article, method, result, time.perf_counter() - t0))
                    r = records[method][-1]
                    print(f"{i}/{len(articles)} {article.parent.name}/{article.name} {method}: ran as "
                          f"{r['ran_as']}, {r['calls']} calls, {r['seconds']} s, {r['supported']}/"
                          f"{r['sentences']} supported, {len(r['withheld'])} withheld", flush=True)  # fmt: skip
        finally:
            ws.close()
    rows = {m: totals(records[m], skipped[m]) for m in args.methods}
    print()
    print(table(rows))
    config = {
        "qa_dir": str(args.qa_dir), "articles": [str(a) for a in articles], "fit": args.fit,
        "passed_over": dict(passed), "model": args.model, "token_max": args.token_max,
        "max_new_tokens": args.max_new_tokens, "support": settings.summary.support,
    }  # fmt: skip
    print(json.dumps({"config": config, "methods": rows}, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps({"config": config, "methods": rows, "records": records}, indent=1))


if __name__ == "__main__":
    main()
