"""`lectern serve` under concurrent clients: completion tokens/s, request latency (p50/p95) and first
token (p50) at 1, 8 and 32 clients, per model and server mode (--modes BACKEND:MAX_BATCH), in one run.
The default modes: transformers with static batching (local:8), llama.cpp one request at a time
(llamacpp:1), and llama.cpp with continuous batching, 8 and 32 rows (llamacpp:8, llamacpp:32).

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.serve --models packaged:qwen2.5-0.5b
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.serve --models packaged:smollm2 --clients 1 8 --modes local:8 llamacpp:8

Each request is a streamed chat completion of exactly --tokens tokens (`ignore_eos`; honoured by
transformers and by llama.cpp's continuous batching; llama.cpp one at a time does not honour it, so a
reply there may end sooner: tokens/s counts what was generated); each client sends its requests one
after another. Each request's message starts with its number, so prompts share only what every
request to a server shares (the chat template and system prompt): a server that reuses a cached
prefix gains no more here than on real traffic. The server is a real
`lectern serve` subprocess on loopback. The machine's CPU, cores and load average before and after
are printed with the table: on a shared machine a busy neighbour lowers every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

QUESTIONS = [
    "Write a short paragraph about the history of the printing press.",
    "Explain how a lighthouse lens works.",
    "Describe a walk along a canal in autumn.",
    "What makes a good cheese cave?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    """CPU model, cores and the flags that decide CPU inference speed."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(f for f in wanted if f in flags) or 'none of note'}"


def start(
    model: str, backend: str, max_batch: int, data_dir: Path, max_queue: int, threads: int | None
) -> tuple[subprocess.Popen[bytes], str, float]:
    """The server, its URL, and the seconds from launch to a 200 from /health."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_")}
    env.update(LECTERN_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if threads:
        env["LECTERN_LLM__THREADS"] = str(threads)
    lectern = Path(sys.executable).with_name("lectern")
    cmd = [str(lectern), "serve", "--model", model, "--backend", backend, "--port", str(port), "--max-batch", str(max_batch),
           "--max-queue", str(max_queue), "--log-level", "warning"]  # fmt: skip
    launched = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = launched + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url, time.monotonic() - launched
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"lectern serve --model {model} did not start")


async def one(http: httpx.AsyncClient, url: str, model: str, tokens: int, i: int) -> tuple[float, float, int]:
    """(latency s, time to first token s, completion tokens) of one streamed request."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {i}. {QUESTIONS[i % len(QUESTIONS)]}"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = None
    used = 0
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - t0
    return time.perf_counter() - t0, first or 0.0, used


async def level(url: str, model: str, clients: int, requests: int, tokens: int) -> dict[str, Any]:
    """`clients` concurrent clients sending `requests` requests in all."""
    queue = list(range(requests))
    results: list[tuple[float, float, int]] = []

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            results.append(await one(http, url, model, tokens, queue.pop()))

    async with httpx.AsyncClient(timeout=1200, limits=httpx.Limits(max_connections=clients + 4)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies = sorted(r[0] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": sum(r[2] for r in results),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(r[2] for r in results) / wall, 2),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
        "ttft_p50_s": round(statistics.median(sorted(r[1] for r in results)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["packaged:qwen2.5-0.5b"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client at each level")
    parser.add_argument("--data-dir", type=Path, default=None, help="where converted models are cached")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--modes", nargs="+", default=["local:8", "llamacpp:1", "llamacpp:8", "llamacpp:32"],
        help="BACKEND:MAX_BATCH per server (llamacpp with MAX_BATCH > 1 batches continuously)",
    )  # fmt: skip
    args = parser.parse_args()
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    print(f"machine: {machine()}; torch threads: {args.threads or 'all cores'}", flush=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for model in args.models:
        for mode in args.modes:
            backend, max_batch = mode.split(":")
            proc, url, started = start(
                model, backend, int(max_batch), data, max(args.clients) + 8, args.threads
            )
            print(f"{model} {mode}: healthy {started:.2f} s after launch", flush=True)
            try:
                served = httpx.get(f"{url}/health").json()["model"]
                for clients in args.clients:
                    requests = clients * (args.rounds if clients < 32 else 1)
                    row = {
                        "model": served,
                        "mode": mode,
                        **asyncio.run(level(url, model, clients, requests, args.tokens)),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    print(f"load average after: {os.getloadavg()}")
    print("\n| model | mode | clients | requests | tokens/s | p50 s | p95 s | first token p50 s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['mode']} | {r['clients']} | {r['requests']} | {r['tokens_per_s']} | "
              f"{r['p50_s']} | {r['p95_s']} | {r['ttft_p50_s']} |")  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {(r["mode"], r["clients"]): r["tokens_per_s"] for r in rows if r["model"] == model}
        base = args.modes[0]
        for mode in args.modes[1:]:
            for clients in args.clients:
                if (base, clients) in by and (mode, clients) in by:
                    print(
                        f"{model}: {clients} clients, {mode} / {base} = {by[(mode, clients)] / by[(base, clients)]:.2f}x"
                    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
