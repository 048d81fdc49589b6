"""Answer quality and speed of several QA configurations side by side, in one run, on one index.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.answer_quality --qa-dir ../shared/data/cmu-wikiqa/S09 \
        --limit 60 --config baseline --config lectern [--model packaged:qwen2.5-0.5b] [--out DIR]

Each sampled question is asked by every configuration in turn before the next question (with its
article, then with it hidden), so a change in the machine's load hits all of them alike and the
seconds per answer compare. Configurations (CONFIGS) are settings overrides:
- `baseline`: what lectern did before docs/ANSWERS.md's fourth run (zero-shot prompt, the five
  whole chunks, 256 new tokens, only the model decides to abstain);
- `lectern`: the current defaults (concise prompt, best sentences, evidence-based abstention);
- `chunks`, `no-evidence`, `no-verify`, `no-spelling`: the defaults less one lever each, to see what each is worth;
- `example` (one worked exchange before the question), `wide` (two neighbours either side of each
  chosen sentence), `four` (four best sentences: the default before docs/ANSWERS.md's sixth run), `rank-order` (the
  excerpts in their chunks' retrieval rank: the default before the eighth run, which puts the one
  with the best-matching sentence first), `together` (an answer whose new words no one passage
  holds together is asked again): candidate levers;
- `adapter` (with `--adapter FOLDER`): the defaults with that LoRA adapter on the model.
Prints one JSON line per configuration (rag.evaluate_answers.KEYS) and writes per-question JSONL.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from lectern.rag.evaluate import load_qa
from lectern.rag.evaluate_answers import (
    AnswerEval,
    QuestionRecord,
    QuestionSource,
    answer_eval,
    sample_answerable,
    summarise,
)
from lectern.rag.settings import Settings, load_settings

CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {
        "answer": {"prompt": "zero_shot", "context": "chunks", "evidence": False},
        "llm": {"max_new_tokens": 256},
    },
    "lectern": {},
    "chunks": {"answer": {"context": "chunks"}},
    "no-evidence": {"answer": {"evidence": False}},
    "no-verify": {"answer": {"verify": False}},
    "no-spelling": {"retrieval": {"spelling": False}},
    "example": {"answer": {"prompt": "concise_example"}},
    "wide": {"answer": {"neighbours": 2}},
    "four": {"answer": {"sentences": 4}},
    "rank-order": {"answer": {"order": "rank"}},
    "together": {"answer": {"together": True}},
    "before": {"answer": {"gate": "coverage", "subject": False}},  # the defaults before the tenth run
    "words-gate": {"answer": {"gate": "words", "subject": False}},
    "no-subject": {"answer": {"subject": False}},  # the meaning gate alone (the defaults of the tenth run)
    "subject": {"answer": {"subject": True}},  # with the subject check (the default since the fourteenth run)
    "before-subject": {"answer": {"gate": "coverage", "subject": True}},  # the subject check alone
    # MEANING at the threshold that keeps 95% of S08's answerable questions, with the subject check
    "low-gate": {"answer": {"evidence_threshold": 0.22, "subject": True}},
    "meaning": {
        "answer": {"meaning": 1.0}
    },  # sentences chosen by words and meaning (docs/ANSWERS.md, 11th run)
    "facts": {"answer": {"facts": True}},  # a wrong date or number asked again (rag.verify.wrong_fact)
    "meaning-facts": {"answer": {"meaning": 1.0, "facts": True}},
    "by-meaning": {"answer": {"by_meaning": 1}},  # the words' 6 sentences and the one closest in meaning
    # the best sentences alone, no neighbours: about half the prompt (a larger model in the same time)
    "narrow": {"answer": {"neighbours": 0}},
    "no-penalty": {"llm": {"repetition_penalty": 1.0}},  # digits repeat in numbers and dates: is 1.1 a cost?
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qa-dir", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS))
    ap.add_argument("--model", default="packaged:qwen2.5-0.5b")
    ap.add_argument("--adapter", default=None, help="adds the config `adapter`: the defaults with this LoRA")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the model")
    ap.add_argument(
        "--questions", type=Path, action="append", help="JSONL questions files over the articles (one ingest)"
    )
    ap.add_argument(
        "--own", action="store_true", help="with --questions: the folder's own questions too, after them"
    )
    ap.add_argument(
        "--no-cache",
        action="store_true",
        help="ask the model again for a prompt it has answered (default: greedy decoding gives the same "
        "text, so configurations sharing a prompt and generation parameters share the call; seconds then "
        "compare only without the cache)",
    )
    ap.add_argument("--wording", default="question", help="with --questions: question | original")
    ap.add_argument("--data-dir", type=Path, default=Path(".lectern-data/bench"))
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    args = ap.parse_args()
    names = args.config or ["baseline", "lectern"]
    if args.adapter:
        CONFIGS["adapter"] = {"llm": {"adapter": args.adapter}}
        names = [*names, "adapter"] if "adapter" not in names else names
    common = {"llm": {"model": args.model, "threads": args.threads}}
    settings: dict[str, Settings] = {
        name: load_settings(
            data_dir=args.data_dir, ingest={"parse_workers": 0}, **_merge(common, CONFIGS[name])
        )
        for name in names
    }
    first = settings[names[0]]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_cache:
        from langchain_core.caches import InMemoryCache
        from langchain_core.globals import set_llm_cache

        set_llm_cache(InMemoryCache())
    tag = f"{args.qa_dir.name}-{args.model.replace(':', '_').replace('/', '_')}"
    sources = [(f"{p.stem}-{args.wording}", QuestionSource(p, args.wording)) for p in args.questions or []]
    sources += [(args.qa_dir.name, QuestionSource())] if not args.questions or args.own else []
    results: list[tuple[str, dict[str, list[QuestionRecord]]]] = []
    t0 = time.perf_counter()
    with answer_eval(args.qa_dir, first, args.limit, args.seed, questions=sources[0][1]) as opened:
        for set_name, source in sources:
            items = sample_answerable(source.items(args.qa_dir), args.limit, args.seed)
            session = AnswerEval(items, opened.articles, opened.searcher)
            records = ask_all(session, names, settings, args.out, f"{tag}-{set_name}")
            results.append((set_name, records))
    print()
    cpu = _cpu()
    for set_name, records in results:
        for name in names:
            metrics = summarise(records[name])
            print(json.dumps({"config": name, "set": set_name, "model": args.model, "cpu": cpu, **metrics}))
    print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "questions": len(load_qa(args.qa_dir))}))


def ask_all(
    session: AnswerEval, names: list[str], settings: dict[str, Settings], out: Path, tag: str
) -> dict[str, list[QuestionRecord]]:
    """Every question by every configuration in turn; per-question JSONL in `out`."""
    runs = {name: session.asker(settings[name]) for name in names}
    records: dict[str, list[QuestionRecord]] = {name: [] for name in names}
    files = {name: (out / f"answers-{tag}-{name}.jsonl").open("w") for name in names}
    try:
        for i, item in enumerate(session.items, 1):
            for name in names:
                record = runs[name](item)
                records[name].append(record)
                files[name].write(json.dumps(record.__dict__) + "\n")
                files[name].flush()
            print(f"{tag} {i}/{len(session.items)}", flush=True, end="\r")
    finally:
        for fh in files.values():
            fh.close()
    return records


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?"
    )
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    marks = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    described = f"{model}, {os.cpu_count()} cores, {' '.join(marks)}"
    # ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 make torch run as on an AVX2-only CPU (no bf16):
    # say so, since /proc/cpuinfo still lists the flags.
    import torch

    used = torch.backends.cpu.get_cpu_capability()
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return described + (
        f"; torch kernels limited to {used}, oneDNN to {limit}" if limit else f"; torch uses {used}"
    )


if __name__ == "__main__":
    main()
