"""What constrained decoding costs (rag.llm.structured): seconds and tokens per second of the same
prompts answered free and under a JSON schema, on each backend that runs a model here, greedy, after
one warm-up call per mode (the transformers mask is built once per tokenizer; that one-off time is
printed apart). CPU and load average are printed with the table.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.structured_speed --model packaged:smollm2 --n 6
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from langchain_core.messages import HumanMessage

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 160},
        "confidence": {"type": "number"},
        "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    },
    "required": ["answer", "confidence", "keywords"],
    "additionalProperties": False,
}
QUESTIONS = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "Name three primary colors.",
    "How many legs does a spider have?",
    "What do bees make?",
    "Who wrote Hamlet?",
    "What is water made of?",
    "Which planet is the largest?",
]


def main() -> None:
    from lectern.ingest.cpu_precision import cpu_info
    from lectern.rag.llm import build_llm
    from lectern.rag.llm.structured import validate
    from lectern.rag.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="packaged:smollm2")
    parser.add_argument("--backends", nargs="+", default=["llamacpp", "local"])
    parser.add_argument("--n", type=int, default=6, help="questions per mode (at most 8)")
    parser.add_argument("--tokens", type=int, default=64, help="max_new_tokens")
    args = parser.parse_args()
    cpu, flags = cpu_info()
    print(
        f"CPU: {cpu}, {os.cpu_count()} CPUs, flags: {' '.join(sorted(f for f in flags if f.startswith('avx')))}"
    )
    print(f"load average before: {os.getloadavg()}")
    settings = Settings()
    print("| backend | mode | s/answer | tokens/s | valid JSON |\n|---|---|---:|---:|---:|")
    for backend in args.backends:
        llm_settings = settings.llm.model_copy(update={"backend": backend, "model": args.model, "temperature": 0.0,
                                                       "max_new_tokens": args.tokens, "device": "cpu"})  # fmt: skip
        llm = build_llm(llm_settings, Path(settings.models_dir))
        start = time.perf_counter()
        llm.invoke([HumanMessage("Hi")], response_schema=SCHEMA, max_new_tokens=2)  # the mask, once
        first = time.perf_counter() - start
        for mode, options in (("free", {}), ("json_schema", {"response_schema": SCHEMA})):
            llm.invoke([HumanMessage("Hi")], max_new_tokens=2, **options)  # warm-up
            seconds, tokens, valid = 0.0, 0, 0
            for question in QUESTIONS[: args.n]:
                start = time.perf_counter()
                reply = llm.invoke([HumanMessage(question + " Reply in JSON.")], **options)
                seconds += time.perf_counter() - start
                tokens += int((reply.usage_metadata or {}).get("output_tokens", 0))
                try:
                    validate(json.loads(str(reply.content)), SCHEMA)
                    valid += 1
                except Exception:  # free text, or JSON cut by max_new_tokens
                    pass
            print(
                f"| {backend} | {mode} | {seconds / args.n:.2f} | {tokens / seconds:.1f} | {valid}/{args.n} |"
            )
        print(f"({backend}: the first constrained call, building the constraint, took {first:.2f} s)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
