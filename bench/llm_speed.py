"""Local generation speed: lectern's LocalChatModel vs a plain transformers pipeline on the same
weights, and one batched generate of N prompts vs N sequential calls; plus a small grounded-QA
check used to pick the default model.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.llm_speed --model packaged:smollm2 [--qa]
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.llm_speed --model packaged:qwen2.5-0.5b --dtypes --skip-speed

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.llm_speed --model packaged:qwen2.5-0.5b --cache --skip-speed

--cache loads the model for bf16 compute from an fp32 cache (what lectern stored before) and from a
bf16 cache (what it stores now on a bf16 machine), each in a fresh process, and reports load time,
peak RSS, size on disk and whether the answers are the same.

--dtypes times grounded answers at a real prompt size (the six QA passages among filler sources, about
1,000 prompt tokens, like k=5 chunks of 200) with fp32 weights and with the dtype `auto` picks on this
machine (bf16 where the CPU has bf16 instructions), in one run, and reports the ratio and how many
answers are the same.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from lectern.rag.llm import LocalChatModel, build_llm, to_chat_dicts
from lectern.rag.settings import LLMSettings

PROMPT = "Write a short paragraph about the history of the printing press."
BATCH_PROMPTS = [f"Write one sentence about the number {i}." for i in range(8)]
QA = [  # (passage, question, expected substring)
    (
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
        "When was the Eiffel Tower completed?",
        "1889",
    ),
    ("Marie Curie was born in Warsaw and won two Nobel Prizes.", "Where was Marie Curie born?", "Warsaw"),
    (
        "The Nile is about 6,650 km long and flows into the Mediterranean Sea.",
        "Into which sea does the Nile flow?",
        "Mediterranean",
    ),
    (
        "Lectern stores its index in SQLite and FAISS files under the data directory.",
        "Which database does Lectern use?",
        "SQLite",
    ),
    (
        "Python 3.11 was released in October 2022 and is faster than 3.10.",
        "In which month was Python 3.11 released?",
        "October",
    ),
    (
        "The recipe needs 200 grams of flour, two eggs and a pinch of salt.",
        "How many eggs does the recipe need?",
        "two",
    ),
]


def _new_tokens(llm: LocalChatModel, text: str) -> int:
    return len(llm.tokenizer.encode(text, add_special_tokens=False))


def bench_single(llm: LocalChatModel, tokens: int) -> dict[str, float]:
    """Tokens/s of lectern vs `pipeline("text-generation")` with the same model object, greedy."""
    from transformers import pipeline

    msgs = [HumanMessage(PROMPT)]
    llm.invoke(msgs, max_new_tokens=4)  # warm-up
    start = time.perf_counter()
    text = llm._generate_texts([llm._prompt_text(msgs)], max_new_tokens=tokens)[0]
    ours = time.perf_counter() - start
    pipe = pipeline("text-generation", model=llm.hf_model, tokenizer=llm.tokenizer)
    pipe(to_chat_dicts(msgs), max_new_tokens=4, do_sample=False)
    start = time.perf_counter()
    out = pipe(to_chat_dicts(msgs), max_new_tokens=tokens, do_sample=False)
    theirs = time.perf_counter() - start
    their_text = out[0]["generated_text"][-1]["content"]
    ours_tps = _new_tokens(llm, text) / ours
    theirs_tps = _new_tokens(llm, their_text) / theirs
    return {"lectern_tok_s": ours_tps, "pipeline_tok_s": theirs_tps, "ratio": ours_tps / theirs_tps}


def bench_batch(llm: LocalChatModel, tokens: int) -> dict[str, float]:
    prompts = [llm._prompt_text([HumanMessage(p)]) for p in BATCH_PROMPTS]
    start = time.perf_counter()
    batched = llm.generate_many(prompts, max_new_tokens=tokens)
    t_batch = time.perf_counter() - start
    start = time.perf_counter()
    for p in prompts:
        llm._generate_texts([p], max_new_tokens=tokens)
    t_seq = time.perf_counter() - start
    made = sum(_new_tokens(llm, t) for t in batched)
    return {
        "batch_s": t_batch,
        "sequential_s": t_seq,
        "speedup": t_seq / t_batch,
        "batch_tok_s": made / t_batch,
    }


def bench_qa(llm: LocalChatModel) -> dict[str, Any]:
    correct, latencies, answers = 0, [], []
    for passage, question, expected in QA:
        prompt = (
            f"Answer using only this passage.\n\nPassage: {passage}\n\nQuestion: {question}\nAnswer briefly."
        )
        start = time.perf_counter()
        answer = str(llm.invoke(prompt, max_new_tokens=32).content)
        latencies.append(time.perf_counter() - start)
        correct += expected.lower() in answer.lower()
        answers.append(answer.replace("\n", " ")[:80])
    return {"correct": f"{correct}/{len(QA)}", "mean_latency_s": sum(latencies) / len(QA), "answers": answers}


FILLER = (
    "The committee met on Tuesday to review the annual budget, the schedule of public works and the "
    "results of the survey of residents, and agreed to publish its minutes within two weeks. "
)


def qa_messages(passage: str, question: str) -> list[BaseMessage]:
    """A QA prompt the size lectern sends with k=5: the passage among four filler sources."""
    sources = [FILLER * 6] * 4
    sources.insert(2, passage)
    numbered = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(sources, 1))
    return [HumanMessage(f"Sources:\n\n{numbered}\n\nQuestion: {question}\nAnswer briefly, citing [n].")]


def bench_dtypes(model: str, models_dir: Path, tokens: int = 32) -> dict[str, Any]:
    """Grounded answers with fp32 weights against the `auto` dtype, same prompts, one run."""
    import torch

    results: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    for name in ("float32", "auto"):
        llm = build_llm(LLMSettings(model=model, temperature=0, dtype=name, device="cpu"), models_dir)
        assert isinstance(llm, LocalChatModel)
        llm.invoke(qa_messages(*QA[0][:2]), max_new_tokens=2)  # warm-up
        start = time.perf_counter()
        texts = [str(llm.invoke(qa_messages(p, q), max_new_tokens=tokens).content) for p, q, _ in QA]
        results[f"{name}_s_per_answer"] = (time.perf_counter() - start) / len(QA)
        results[f"{name}_correct"] = sum(
            e.lower() in t.lower() for t, (_, _, e) in zip(texts, QA, strict=True)
        )
        results[f"{name}_dtype"] = str(llm.hf_model.dtype).removeprefix("torch.")
        results["prompt_tokens"] = llm.get_num_tokens_from_messages(qa_messages(*QA[0][:2]))
        answers[name] = texts
        del llm
    results["speedup"] = results["float32_s_per_answer"] / results["auto_s_per_answer"]
    results["same_answers"] = sum(a == b for a, b in zip(answers["float32"], answers["auto"], strict=True))
    results["threads"] = torch.get_num_threads()
    return results


_LOAD_CHILD = """
import json, sys, time
from pathlib import Path
from bench.llm_speed import QA, qa_messages
from lectern.rag.llm import build_llm
from lectern.rag.settings import LLMSettings
start = time.perf_counter()
llm = build_llm(LLMSettings(model=sys.argv[1], dtype="bfloat16", device="cpu", max_new_tokens=32), Path(sys.argv[2]))
load = time.perf_counter() - start
texts = [str(llm.invoke(qa_messages(p, q)).content) for p, q, _ in QA]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (which converted)
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1e6
print(json.dumps({"load_s": load, "peak_rss_gb": rss, "texts": texts}))
"""


def bench_cache(model: str, models_dir: Path) -> dict[str, Any]:
    """bf16 compute loaded from an fp32 cache against a bf16 cache, a fresh process each."""
    import json
    import subprocess
    import sys

    import torch

    from lectern.rag.llm.convert import resolve_local

    results: dict[str, Any] = {}
    texts: dict[str, list[str]] = {}
    for name, stored in (("fp32_cache", torch.float32), ("bf16_cache", torch.bfloat16)):
        folder, _ = resolve_local(model, models_dir, stored)  # converts once per dtype
        out = subprocess.run(
            [sys.executable, "-c", _LOAD_CHILD, str(folder), str(models_dir)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        data = json.loads(out.stdout.strip().splitlines()[-1])
        results[f"{name}_load_s"] = data["load_s"]
        results[f"{name}_peak_rss_gb"] = data["peak_rss_gb"]
        results[f"{name}_disk_gb"] = (
            sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e9
        )
        texts[name] = data["texts"]
    results["rss_ratio"] = results["fp32_cache_peak_rss_gb"] / results["bf16_cache_peak_rss_gb"]
    results["load_ratio"] = results["fp32_cache_load_s"] / results["bf16_cache_load_s"]
    results["same_answers"] = f"{sum(a == b for a, b in zip(*texts.values(), strict=True))}/{len(QA)}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="packaged:smollm2")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument(
        "--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "lectern-bench-models"
    )
    parser.add_argument("--qa", action="store_true", help="also run the grounded-QA comparison")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--cache", action="store_true", help="fp32 against bf16 converted-model cache")
    parser.add_argument("--dtypes", action="store_true", help="fp32 against the auto dtype, QA-sized prompts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dtypes or args.cache:
        found = {
            **(bench_dtypes(args.model, args.models_dir) if args.dtypes else {}),
            **(bench_cache(args.model, args.models_dir) if args.cache else {}),
        }
        for key, value in found.items():
            print(f"  {key:22s} {value:.2f}" if isinstance(value, float) else f"  {key:22s} {value}")
        if args.skip_speed and not args.qa:
            return
    start = time.perf_counter()
    llm = build_llm(LLMSettings(model=args.model, temperature=0, max_new_tokens=args.tokens), args.models_dir)
    assert isinstance(llm, LocalChatModel)
    print(f"model {args.model}: loaded in {time.perf_counter() - start:.1f} s")
    if not args.skip_speed:
        for key, value in {**bench_single(llm, args.tokens), **bench_batch(llm, args.tokens)}.items():
            print(f"  {key:16s} {value:8.2f}")
    if args.qa:
        result = bench_qa(llm)
        print(f"  grounded QA      {result['correct']} correct, mean {result['mean_latency_s']:.2f} s")
        for answer in result["answers"]:
            print(f"    - {answer}")


if __name__ == "__main__":
    main()
