"""Local generation speed: lectern's LocalChatModel vs a plain transformers pipeline on the same
weights, and one batched generate of N prompts vs N sequential calls; plus a small grounded-QA
check used to pick the default model. --ask: the backends side by side on real `ask` questions.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.llm_speed --ask --qa-dir ../shared/data/cmu-wikiqa/S09 --limit 20

--ask times `ask` (the QA chain with lectern's defaults, rag.evaluate_answers) on --limit sampled S09
questions with each --run BACKEND:MODEL (default: llamacpp and local on the 0.5B, and llamacpp on
the 1.5B when `make model-1.5b` installed it), every question asked by each run in turn so that the
machine's load hits them alike. Then, for each run, the first answer of a new user: `lectern ask`
in a fresh process whose model cache holds no language model (the packaged parts not joined, nothing
converted), its wall time and peak memory (--no-first skips it). The CPU and its flags are named.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.llm_speed --model packaged:smollm2 [--qa]
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.llm_speed --ask --qa-dir ../shared/data/cmu-wikiqa/S09 --limit 20
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
        llm = build_llm(
            LLMSettings(backend="local", model=model, temperature=0, dtype=name, device="cpu"), models_dir
        )
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
llm = build_llm(LLMSettings(backend="local", model=sys.argv[1], dtype="bfloat16", device="cpu", max_new_tokens=32), Path(sys.argv[2]))
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


QUESTION = "Who designed the tower of the Marrow Point Light?"
SAMPLE = Path(__file__).resolve().parents[1] / "sample_docs"


def default_runs() -> list[str]:
    from lectern.rag.models import BIG, DEFAULT, installed

    runs = [f"llamacpp:{DEFAULT}", f"local:{DEFAULT}"]
    return [*runs, f"llamacpp:{BIG}"] if BIG in installed() else runs


def cpu_named() -> str:
    """The CPU's model name, usable cores and the SIMD flags llama.cpp and torch pick kernels by."""
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?"
    )
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    marks = (
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "amx_tile",
        "amx_bf16",
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores, flags: {' '.join(f for f in marks if f in flags)}"


def bench_ask(qa_dir: Path, runs: list[str], limit: int, threads: int | None) -> list[dict[str, Any]]:
    """Seconds per answer and answer_contains of each run, on the same sampled questions and index."""
    import statistics

    from lectern.rag.evaluate_answers import answer_eval, summarise
    from lectern.rag.settings import load_settings

    def settings(run: str) -> Any:
        backend, model = run.split(":", 1)
        data = Path(tempfile.gettempdir()) / "lectern-bench-llm-speed"
        llm = {"backend": backend, "model": model, "threads": threads, "device": "cpu"}
        return load_settings(data_dir=data, ingest={"parse_workers": 0}, llm=llm)

    chosen = {run: settings(run) for run in runs}
    with answer_eval(qa_dir, chosen[runs[0]], limit) as session:
        askers = {run: session.asker(s) for run, s in chosen.items()}  # each holds its own model
        records: dict[str, list[Any]] = {run: [] for run in runs}
        for i, item in enumerate(session.items, 1):
            for run in runs:
                records[run].append(askers[run](item))
            print(f"{i}/{len(session.items)}", end="\r", flush=True)
    print()
    out = []
    for run in runs:
        metrics = summarise(records[run])
        seconds = [r.seconds for r in records[run]]
        same = sum(a.answer == b.answer for a, b in zip(records[run], records[runs[0]], strict=True))
        out.append({
            "run": run, "s_per_answer": metrics["mean_seconds"], "median_s": round(statistics.median(seconds), 3),
            "answer_contains": metrics["answer_contains"], f"same_as_{runs[0]}": same, "n": metrics["n"],
        })  # fmt: skip
    base = next((o for o in out if o["run"].startswith("local:")), None)
    for o in out:
        if base is not None:
            o["time_vs_local"] = round(o["s_per_answer"] / base["s_per_answer"], 2)
    return out


def _lectern(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, output) of `lectern ARGS` in a new process (reaped with wait4,
    whose rusage is that child's alone)."""
    import subprocess
    import sys

    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "lectern.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by subprocess
        log.seek(0)
        text = log.read()
    if child.returncode != 0:
        raise RuntimeError(f"lectern {' '.join(args)} failed ({child.returncode}): {text[-2000:]}")
    return wall, usage.ru_maxrss / 1e6, text


def bench_first(runs: list[str]) -> list[dict[str, Any]]:
    """The first answer of a new user per run: `lectern ask` in a fresh process, its model cache empty
    of language models (the collection and the embedder's cache made beforehand), wall time and peak
    memory. The bench process itself is still small here (nothing loaded), so the children's peak
    RSS is theirs (Linux carries the parent's over fork)."""
    import shutil

    root = Path(tempfile.mkdtemp(prefix="lectern-first-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env |= {
        "LECTERN_DATA_DIR": str(root / "data"),
        "LECTERN_CACHE_DIR": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    out = []
    try:
        ingest = [
            "ingest",
            str(SAMPLE),
            "--collection",
            "sample",
            "--exclude",
            "README.md",
            "--exclude",
            "make_pdf.py",
        ]
        wall, _, _ = _lectern(ingest, env)
        print(f"  (ingest of sample_docs into a new data dir and cache: {wall:.1f} s)")
        models = root / "cache" / "models"
        kept = set(models.iterdir()) if models.is_dir() else set()
        for run in runs:
            for made in set(models.iterdir()) - kept:  # the language model of the previous run
                shutil.rmtree(made) if made.is_dir() else made.unlink()
            backend, model = run.split(":", 1)
            args = ["ask", QUESTION, "--collection", "sample", "--backend", backend, "--model", model]
            wall, peak, text = _lectern(args, env)
            warm, warm_peak, _ = _lectern(args, env)
            out.append({
                "run": run, "first_answer_s": round(wall, 1), "cached_answer_s": round(warm, 1),
                "peak_rss_gb": round(peak, 2), "cached_peak_rss_gb": round(warm_peak, 2),
                "answered": "Varley" in text,
            })  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


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
    parser.add_argument("--ask", action="store_true", help="the backends side by side on `ask` questions")
    parser.add_argument("--qa-dir", type=Path, default=Path("../shared/data/cmu-wikiqa/S09"))
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--run", action="append", help="BACKEND:MODEL (repeat); default: default_runs()")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-first", action="store_true", help="--ask without the first-answer runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.ask:
        import json

        runs = args.run or default_runs()
        print(f"cpu: {cpu_named()}")
        if not args.no_first:  # first, while this process is small: its children's peak RSS is theirs
            for row in bench_first(runs):
                print(json.dumps(row))
        for row in bench_ask(args.qa_dir, runs, args.limit, args.threads):
            print(json.dumps(row))
        return
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
    llm = build_llm(
        LLMSettings(backend="local", model=args.model, temperature=0, max_new_tokens=args.tokens),
        args.models_dir,
    )
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
