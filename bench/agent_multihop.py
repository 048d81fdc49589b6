"""The agent against the single-pass QA chain on multi-hop questions (bench/data/multihop_s08.jsonl:
questions over the CMU S08 articles that need two articles, two parts of one, or a bridge from a
description to a name to a fact; multihop_s09.jsonl the same over S09), with one or more local models.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m bench.agent_multihop \
        --qa-dir ../shared/data/cmu-wikiqa/S08 --model packaged:qwen2.5-0.5b --threads 1 \
        [--questions bench/data/multihop_s08.jsonl] [--every K] [--limit N] [--max-steps 6] \
        [--token-budget 12000] [--modes chain,agent]

The library is every article of --qa-dir (one collection per folder, named after it, ingested once
under --data-dir), so retrieval has to find the right ones among 40. Each question is asked by the
chain and then by the agent, model by model, before the next question, so machine load hits both
alike. An answer is correct ("fully right") when it holds every part of the gold answer (each part:
any of its spellings, compared as `eval answers`' answer_lenient compares); `partial` when it holds
at least one (the fully right included), `partly_right` when some but not all; `wrong` when it
answered and holds none. Steps are the agent's tool calls (its first search included) and model
calls. Prints one JSON line per model and mode, and a line of counts; writes one JSONL line per
question and mode under --out. `--backend fake --embed-model fake` runs it without a model (a
check of the bench itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.answer_quality import _cpu
from lectern.rag.answer_metrics import lenient_contains
from lectern.rag.settings import load_settings
from lectern.rag.workspace import Workspace

SET = Path(__file__).parent / "data" / "multihop_s08.jsonl"


def score(answer: str, parts: list[list[str]]) -> tuple[bool, bool]:
    """(every part found, at least one found)."""
    found = [lenient_contains(answer, spellings) for spellings in parts]
    return all(found), any(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--qa-dir", type=Path, required=True, help="the S08 or S09 folder (its data/set*/a*.txt.clean)"
    )
    ap.add_argument("--questions", "--set", dest="questions", type=Path, default=SET, help="a JSONL set")
    ap.add_argument("--model", action="append", help="repeatable; default packaged:qwen2.5-0.5b")
    ap.add_argument("--backend", default="auto", help="the LLM backend (fake: check the bench, no model)")
    ap.add_argument("--embed-model", default=None, help="the embedder (default: the settings' own)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--every", type=int, default=1, help="every K-th question (a spread over the kinds)")
    ap.add_argument("--ids", default="", help="only these question ids, comma-separated")
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--token-budget", type=int, default=12000)
    ap.add_argument("--modes", default="chain,agent")
    ap.add_argument(
        "--plan",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the agent as users get it, planning its searches first (Agent.plan); --no-plan: the tool loop",
    )
    ap.add_argument("--data-dir", type=Path, default=Path(".lectern-data/bench-agent"))
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    models = args.model or ["packaged:qwen2.5-0.5b"]
    modes = args.modes.split(",")
    items = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    if args.ids:
        items = [i for i in items if str(i["id"]) in args.ids.split(",")]
    items = items[:: max(1, args.every)][: args.limit]
    articles = sorted(args.qa_dir.glob("data/set*/a*.txt.clean"))
    ingest: dict[str, Any] = {"parse_workers": 0}
    if args.embed_model:
        ingest["embed"] = {"model": args.embed_model}
    collection = args.qa_dir.resolve().name.lower()  # s08, s09: one library per folder
    spaces = {}
    for model in models:
        llm = {"model": model, "threads": args.threads, "backend": args.backend}
        settings = load_settings(data_dir=args.data_dir, ingest=ingest, llm=llm)
        spaces[model] = Workspace(collection=collection, settings=settings)
    report = spaces[models[0]].ingest(articles)  # unchanged articles are skipped on a rerun
    print(f"library: {len(articles)} articles, {report.summary()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {(m, k): [] for m in models for k in modes}
    tag = "-".join(m.split(":")[-1] for m in models)
    picked = f"-ids{args.ids.replace(',', '_')}" if args.ids else ""
    picked += "-plan" if args.plan else "-loop"
    stem = args.questions.stem.replace("multihop_", "multihop-")
    out = (args.out / f"agent-{stem}-{tag}-{'-'.join(modes)}{picked}.jsonl").open("w")
    t0 = time.perf_counter()
    for n, item in enumerate(items, 1):
        for model in models:
            ws = spaces[model]
            for mode in modes:
                row = ask(ws, mode, item, args)
                row.update(model=model, id=item["id"], kind=item["kind"])
                rows[(model, mode)].append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                print(f"{n}/{len(items)} {model} {mode}: {row['correct']} {row['seconds']:.0f}s "
                      f"{row['answer'][:80]!r}", flush=True)  # fmt: skip
    out.close()
    cpu = _cpu()
    for (model, mode), got in rows.items():
        summary = {
            "model": model,
            "mode": mode,
            "n": len(got),
            "correct": sum(r["correct"] for r in got),
            "partial": sum(r["partial"] for r in got),
            "partly_right": sum(r["partial"] and not r["correct"] for r in got),
            "abstained": sum(r["abstained"] for r in got),
            "wrong": sum(not r["partial"] and not r["abstained"] for r in got),
            "abstained_by": dict(Counter(str(r["abstained_by"]) for r in got if r["abstained"])),
            "mean_tool_calls": round(statistics.mean(r["tool_calls"] for r in got), 2),
            "mean_model_calls": round(statistics.mean(r["model_calls"] for r in got), 2),
            "mean_s": round(statistics.mean(r["seconds"] for r in got), 1),
            "median_s": round(statistics.median(r["seconds"] for r in got), 1),
            "by_kind": {
                kind: f"{sum(r['correct'] for r in got if r['kind'] == kind)}/{sum(r['kind'] == kind for r in got)}"
                for kind in sorted({r["kind"] for r in got})
            },
            "stopped_by": {
                s: sum(r.get("stopped_by") == s for r in got) for s in ("answer", "steps", "budget")
            }
            if mode == "agent"
            else None,
            "cpu": cpu,
        }
        print(json.dumps(summary))
        print(
            f"{model} {mode}: {summary['correct']} fully right, {summary['partly_right']} partly right, "
            f"{summary['abstained']} abstained, {summary['wrong']} wrong, of {len(got)}",
            flush=True,
        )
    print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "questions": len(items)}))


def ask(ws: Workspace, mode: str, item: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    row: dict[str, Any] = {"mode": mode}
    if mode == "chain":
        answer = ws.ask(item["question"])
        row.update(tool_calls=0, model_calls=1 + int(bool(answer.retried)))
    else:
        result = ws.agent(max_steps=args.max_steps, token_budget=args.token_budget, plan=args.plan).invoke(
            item["question"]
        )
        answer = result.answer
        row.update(
            tool_calls=len(result.tool_calls),
            model_calls=sum(s.kind == "model" for s in result.steps),
            stopped_by=result.stopped_by,
            tokens=result.tokens,
            subjects=result.subjects,
            missing=result.missing,
            steps=[f"{s.tool}({json.dumps(s.arguments)[:60]})" for s in result.steps if s.kind == "tool"],
        )
    row["seconds"] = round(time.perf_counter() - started, 2)
    correct, partial = score(answer.answer, item["answers"])
    cited = sorted({c.source.split("/")[-2] + "/" + c.source.split("/")[-1] for c in answer.citations})
    row.update(
        answer=answer.answer,
        correct=correct,
        partial=partial,
        abstained=answer.abstained,
        abstained_by=answer.abstained_by,
        cited=cited,
    )
    return row


if __name__ == "__main__":
    main()
