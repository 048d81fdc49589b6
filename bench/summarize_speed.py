"""Map-reduce summarization speed: lectern's `map_reduce` (batched map) against LangChain classic's
`load_summarize_chain(llm, chain_type="map_reduce")`, same model object, same chunks, one run.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.summarize_speed [--pdf R-intro.pdf --first-page 7
        --pages 6 --chunk-tokens 600 --token-max 1000 --max-new-tokens 64 --repeats 1]

Both get greedy decoding and the same max_new_tokens (the model's default, which lectern also passes
per call). Chunks are cut once with the model's own tokenizer; `token_max` (given to both) is chosen
so lectern's packer keeps one chunk per map prompt, as classic does, and the summaries need no
collapse round in either chain. Every `generate` call is recorded (prompts per call, new tokens), so
the report shows whether classic's calls reach lectern's batched path.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from lectern.rag.llm import LocalChatModel, build_llm
from lectern.rag.settings import LLMSettings
from lectern.rag.summarize import map_reduce
from lectern.rag.window import count_tokens, split_to_tokens

R_INTRO = Path("/usr/share/R/doc/manual/R-intro.pdf")
CALLS: list[tuple[int, int]] = []  # (prompts in one generate call, new tokens of all of them)


def _record_generate_calls() -> None:
    """Wrap LocalChatModel._generate_texts (the only place `generate` runs) to log every call."""
    original = LocalChatModel._generate_texts

    def wrapped(self: LocalChatModel, prompts: list[str], **overrides: Any) -> list[str]:
        texts = original(self, prompts, **overrides)
        CALLS.append((len(prompts), sum(len(self.get_token_ids(t)) for t in texts)))
        return texts

    LocalChatModel._generate_texts = wrapped  # type: ignore[method-assign]


def load_chunks(llm: LocalChatModel, pdf: Path, first: int, pages: int, chunk_tokens: int) -> list[Document]:
    """Pages [first, first + pages) of `pdf` cut into pieces of at most `chunk_tokens` model tokens."""
    from lectern.ingest.loaders import load

    units = [u for u in load(pdf).units if u.page is not None and first <= u.page < first + pages]
    text = "\n\n".join(u.text for u in units)
    return [
        Document(page_content=t, metadata={"source": str(pdf), "part": i})
        for i, t in enumerate(split_to_tokens(llm, text, chunk_tokens))
    ]


def default_token_counting() -> str:
    """What LangChain's own get_num_tokens (GPT-2 tokenizer) does here, on a model that keeps it."""
    from langchain_core.language_models import FakeListChatModel

    try:
        n = FakeListChatModel(responses=["x"]).get_num_tokens("The quick brown fox jumps over the lazy dog.")
    except Exception as error:  # recorded, not hidden: this is the finding
        return f"raises {type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return f"returns {n}"


def run_lectern(
    llm: LocalChatModel, docs: list[Document], token_max: int, max_new_tokens: int
) -> dict[str, Any]:
    CALLS.clear()
    t0 = time.perf_counter()
    result = map_reduce(
        llm, docs, token_max=token_max, max_new_tokens=max_new_tokens, batch_size=llm.batch_size
    )
    seconds = time.perf_counter() - t0
    return _report(seconds, result.summary)


def run_classic(llm: LocalChatModel, docs: list[Document], token_max: int) -> dict[str, Any]:
    from langchain_classic.chains.summarize import load_summarize_chain

    chain = load_summarize_chain(llm, chain_type="map_reduce", token_max=token_max)
    CALLS.clear()
    t0 = time.perf_counter()
    out = chain.invoke({"input_documents": docs})
    seconds = time.perf_counter() - t0
    return _report(seconds, str(out["output_text"]))


def _report(seconds: float, summary: str) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "generate_calls": len(CALLS),
        "prompts_per_call": [n for n, _ in CALLS],
        "new_tokens": sum(t for _, t in CALLS),
        "summary": " ".join(summary.split())[:300],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="packaged:smollm2")
    parser.add_argument("--pdf", type=Path, default=R_INTRO)
    parser.add_argument("--first-page", type=int, default=7, help="1-based; R-intro's body starts at 7")
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--chunk-tokens", type=int, default=600)
    parser.add_argument("--token-max", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "lectern-bench-models"
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    _record_generate_calls()
    settings = LLMSettings(
        backend="local",  # the batched map step it measures is transformers'
        model=args.model,
        temperature=0.0,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    t0 = time.perf_counter()
    llm = build_llm(settings, args.models_dir)
    assert isinstance(llm, LocalChatModel)
    print(
        f"model {args.model} built in {time.perf_counter() - t0:.1f} s; threads {os.cpu_count()}", flush=True
    )
    docs = load_chunks(llm, args.pdf, args.first_page, args.pages, args.chunk_tokens)
    sizes = [count_tokens(llm, d.page_content) for d in docs]
    print(f"{len(docs)} chunks of {sizes} tokens from {args.pdf.name} pages "
          f"{args.first_page}-{args.first_page + args.pages - 1}", flush=True)  # fmt: skip
    llm.invoke("Say hello.", max_new_tokens=4)  # warm-up, outside both timings

    results: dict[str, Any] = {
        "model": args.model,
        "chunks": len(docs),
        "chunk_tokens": sizes,
        "token_max": args.token_max,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "token_counting": {
            "classic_on_lectern_model": f"get_num_tokens -> {llm.get_num_tokens('The quick brown fox.')} "
            "(LocalChatModel.get_token_ids: the model's own tokenizer)",
            "langchain_default_offline": default_token_counting(),
        },
        "runs": [],
    }
    for i in range(args.repeats):
        order = ("lectern", "classic") if i % 2 == 0 else ("classic", "lectern")
        for name in order:
            if name == "lectern":
                r = run_lectern(llm, docs, args.token_max, args.max_new_tokens)
            else:
                r = run_classic(llm, docs, args.token_max)
            r["impl"] = name
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    mean = {
        name: sum(r["seconds"] for r in results["runs"] if r["impl"] == name) / args.repeats
        for name in ("lectern", "classic")
    }
    results["mean_seconds"] = {k: round(v, 2) for k, v in mean.items()}
    results["ratio_classic_over_lectern"] = round(mean["classic"] / mean["lectern"], 2)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
