"""A real `lectern serve` subprocess with the packaged SmolLM2 and MiniLM, on loopback, used by the
clients people use: the official `openai` package, LangChain's ChatOpenAI and OpenAIEmbeddings, and
lectern's own `openai` backend. Then a disconnect, and 32 concurrent streams past a full queue.

Nothing here asserts on time: where a test needs the model busy, it holds it with a long stream and
watches /health's counters until the server is in the state the test needs.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import SAMPLE_DOCS
from tests.fixtures.ui_server import LECTERN, child_env, lectern_serve
from tests.serve.conftest import health, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MODEL = "packaged:smollm2"
KEY = "e2e-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "Which engineer designed the Marrow Point tower?"  # SmolLM2 cites [1] for this wording
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`lectern serve` over a collection `sample` holding the lighthouse PDF: (its URL, its data dir)."""
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    data = tmp_path_factory.mktemp("serve-data")
    ws = Workspace(collection="sample", settings=Settings(data_dir=data))
    assert ws.ingest([SAMPLE_DOCS / "marrow_point_light.pdf"]).ok
    ws.close()
    env = child_env()
    # one torch thread: CI's two cores are shared with the test process and its clients
    env.update(LECTERN_DATA_DIR=str(data), LECTERN_LLM__THREADS="1", LECTERN_LLM__MAX_NEW_TOKENS="48",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    # transformers' static batcher: the queue test below counts requests waiting behind a running
    # batch (llama.cpp, the default backend, batches continuously: test_serve_continuous_e2e.py)
    args = [
        "--model",
        MODEL,
        "--backend",
        "local",
        "--api-key",
        KEY,
        "--max-batch",
        "8",
        "--max-queue",
        "32",
        "--log-level",
        "warning",
    ]
    with lectern_serve(args, env, data / "serve.log", timeout_s=300) as url:
        yield url, data


@pytest.fixture(scope="module")
def server(served: tuple[str, Path]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def test_models(client: Any) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, "lectern-embed", "lectern-rag/sample"]


def test_chat_stream_and_not_with_usage(client: Any) -> None:
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    reply = client.chat.completions.create(**ask, max_tokens=12)
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            **ask, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text  # greedy, alone
    assert chunks[-1].choices == [] and chunks[-1].usage == reply.usage


def test_parameters_are_honoured(client: Any) -> None:
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Count from 1 to 20."}]}
    capped = client.chat.completions.create(**ask, max_completion_tokens=3, extra_body={"ignore_eos": True})
    assert capped.usage.completion_tokens == 3 and capped.choices[0].finish_reason == "length"
    seeded = [
        client.chat.completions.create(**ask, max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]  # one seed, one answer
    stopped = client.chat.completions.create(**ask, max_tokens=40, stop=["5"])
    assert "5" not in stopped.choices[0].message.content


def test_text_completions(client: Any) -> None:
    reply = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=6)
    assert reply.object == "text_completion" and reply.choices[0].text
    assert reply.usage.prompt_tokens == 3 and 0 < reply.usage.completion_tokens <= 6


def test_embeddings_float_and_base64(client: Any) -> None:
    texts = ["The lighthouse was designed by Edith Varley.", "Cheese from Kestrel Valley."]
    packed = client.embeddings.create(model="lectern-embed", input=texts)  # the client asks for base64
    plain = client.embeddings.create(model="lectern-embed", input=texts, encoding_format="float")
    assert len(packed.data) == 2 and len(packed.data[0].embedding) == 384
    np.testing.assert_allclose(packed.data[0].embedding, plain.data[0].embedding, rtol=0, atol=0)
    assert packed.usage.prompt_tokens > 10


def test_rag_model_returns_sources(client: Any) -> None:
    reply = client.chat.completions.create(
        model="lectern-rag/sample", messages=[{"role": "user", "content": QUESTION}], extra_body={"k": 3}
    )
    sources = (reply.model_extra or {})["sources"]
    assert sources, reply.choices[0].message.content
    assert (
        sources[0]["source"].endswith("marrow_point_light.pdf") and sources[0]["page"] and sources[0]["quote"]
    )
    chunks = list(
        client.chat.completions.create(
            model="lectern-rag/sample", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (final[0].model_extra or {})["sources"] == sources
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    markers = re.findall(r"\[\d+\]", reply.choices[0].message.content)
    assert markers and re.findall(r"\[\d+\]", streamed) == markers  # the stream cites as the response does
    assert client.models.retrieve("lectern-rag/sample").id == "lectern-rag/sample"


def test_wrong_key_is_refused(server: str) -> None:
    import openai

    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="context window"):
        openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
        )


def test_bad_bodies_are_400s_on_a_connection_that_stays_usable_and_the_key_is_always_needed(
    server: str,
) -> None:
    """The real model's tokenizer never sees what the server must refuse (a lone surrogate once
    reached it as a TypeError, a 64-bit-overflowing seed as a ValueError failing its whole batch)."""
    from tests.serve.test_bad_requests import Connection

    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    rag = {**chat, "model": "lectern-rag/sample"}
    bad = [
        ("/v1/chat/completions", json.dumps({**chat, "seed": 2**64}), "seed"),
        ("/v1/completions", json.dumps({"model": MODEL, "prompt": ""}), "prompt"),
        ("/v1/chat/completions", '{"model": "x", "messages": ' + "[" * 10_000 + "]" * 10_000 + "}", None),
        ("/v1/chat/completions", json.dumps(chat).replace("Say hi.", "\\ud800"), "messages"),
        (
            "/v1/chat/completions",
            json.dumps({**chat, "stream": True}).replace("Say hi.", "\\ud800"),
            "messages",
        ),
        ("/v1/embeddings", '{"model": "lectern-embed", "input": ["\\udfff"]}', "input"),
        ("/v1/chat/completions", json.dumps(rag).replace("Say hi.", "\\ud800"), "messages"),
    ]
    conn = Connection(server, AUTH)
    try:
        for path, body, param in bad:
            status, response, error = conn.request(path, body.encode())
            assert status == 400 and error["error"]["param"] == param, (path, body[:80], error)
            assert not response.will_close
        status, _, reply = conn.request("/v1/chat/completions", json.dumps(chat).encode())
        assert status == 200 and reply["choices"][0]["message"]["content"]
    finally:
        conn.close()
    unknown = {**rag, "sources": ["not_ingested.pdf"]}  # a 404, not a silent abstention
    r = httpx.post(f"{server}/v1/chat/completions", json=unknown, headers=AUTH, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer "}):  # httpx refuses to send these
        conn = Connection(server, headers)
        status, _, error = conn.request("/v1/chat/completions", json.dumps(chat).encode())
        conn.close()
        assert status == 401 and error["error"]["code"] == "invalid_api_key", headers
    assert health(server)["failed"] == 0


def test_an_empty_key_is_refused_before_a_model_loads(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(LECTERN), "serve", "--host", "0.0.0.0", "--api-key", "", "--model", MODEL, "--port", "1"],
        env=child_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "--api-key" in result.stderr and "empty" in result.stderr, result.stderr


def test_tools_for_a_model_without_a_tools_template_are_a_400_naming_it(client: Any) -> None:
    import openai

    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[tool]
        )
    assert info.value.code == "tools_unsupported" and info.value.param == "tools"
    assert "'packaged:smollm2' cannot call tools" in str(info.value)


def test_langchain_chat_and_embeddings_run_a_chain(server: str) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    llm = ChatOpenAI(base_url=f"{server}/v1", api_key=KEY, model=MODEL, max_tokens=12, temperature=0)
    chain = (
        ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("user", "{q}")])
        | llm
        | StrOutputParser()
    )
    answer = chain.invoke({"q": "What colour is the sky?"})
    assert answer and answer == "".join(chain.stream({"q": "What colour is the sky?"}))
    message = llm.invoke("Say hi.")
    assert message.usage_metadata and message.usage_metadata["output_tokens"] > 0
    # check_embedding_ctx_length=False: send text, not tiktoken's ids (tiktoken needs a download)
    embeddings = OpenAIEmbeddings(
        base_url=f"{server}/v1", api_key=KEY, model="lectern-embed", check_embedding_ctx_length=False
    )
    vectors = embeddings.embed_documents(["lighthouse", "cheese"])
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert np.allclose(embeddings.embed_query("lighthouse"), vectors[0], atol=1e-6)


def test_lectern_is_a_client_of_its_own_server(served: tuple[str, Path], tmp_path: Path) -> None:
    """The `openai` backend (what every chain, the CLI and the UI use) against lectern's server: a
    Workspace over the same collection answers and summarizes through it."""
    from lectern.rag.llm import OpenAIChatModel
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    url, data = served
    llm = {"backend": "openai", "base_url": url, "api_key": KEY, "model": MODEL, "max_new_tokens": 24}
    ws = Workspace(collection="sample", settings=Settings(data_dir=data, llm=llm))
    assert isinstance(ws.llm, OpenAIChatModel)
    text = ws.llm.invoke("What is the capital of France?").text
    assert text and text == "".join(c.text for c in ws.llm.stream("What is the capital of France?"))
    answer = ws.ask(QUESTION)
    assert answer.raw and answer.citations, answer
    assert ws.summarize(query="lighthouse", method="stuff").summary
    ws.close()


CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid",
            "England": "London", "Russia": "Moscow"}  # fmt: skip
"""Prompts SmolLM2 completes with the capital, alone or in any batch: a stream holding another
request's tokens would name another capital first."""


def _capital_prompt(i: int) -> tuple[str, str]:
    country = list(CAPITALS)[i % len(CAPITALS)]
    return f"The capital of {country} is", CAPITALS[country]


def _first_capital(text: str) -> str | None:
    found = [(text.find(c), c) for c in CAPITALS.values() if c in text]
    return min(found)[1] if found else None


async def _stream(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks = []
    async with http.stream("POST", f"{url}/v1/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200, await r.aread()
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    for line in lines[:-1]:
        chunk = json.loads(line[len("data: ") :])
        assert "error" not in chunk, chunk
        chunks.append(chunk)
    return chunks


async def _hold(http: httpx.AsyncClient, url: str, holding: asyncio.Event, release: asyncio.Event) -> None:
    """A stream that keeps the model busy (ignore_eos) until `release`, then disconnects."""
    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    async with http.stream("POST", f"{url}/v1/completions", json=body, headers=AUTH) as r:
        async for line in r.aiter_lines():
            if '"text"' in line:
                holding.set()
                await release.wait()
                return


def test_disconnect_and_32_concurrent_streams_past_a_full_queue(server: str) -> None:
    before = health(server)

    async def scenario() -> tuple[list[list[dict[str, Any]]], httpx.Response]:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as http:
            holding, release = asyncio.Event(), asyncio.Event()
            holder = asyncio.create_task(_hold(http, server, holding, release))
            await holding.wait()
            bodies = [
                {"model": MODEL, "prompt": _capital_prompt(i)[0], "max_tokens": 4 + i % 5, "ignore_eos": True,
                 "stream": True, "stream_options": {"include_usage": True}, "temperature": 0}
                for i in range(32)
            ]  # fmt: skip
            streams = [asyncio.create_task(_stream(http, server, b)) for b in bodies]
            await asyncio.to_thread(wait_for, server, "32 waiting", lambda s: s["waiting"] == 32)
            refused = await http.post(
                f"{server}/v1/completions", json={"model": MODEL, "prompt": "x"}, headers=AUTH
            )
            release.set()  # the holder disconnects: its row stops, the queue drains in full batches
            await holder
            return await asyncio.gather(*streams), refused

    results, refused = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert refused.json()["error"]["code"] == "server_busy"
    for i, chunks in enumerate(results):
        assert len({c["id"] for c in chunks}) == 1
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert _first_capital(text) == _capital_prompt(i)[1], (i, text)  # its own prompt's continuation
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 4 + i % 5
    after = wait_for(server, "drained", lambda s: s["running"] == 0 and s["waiting"] == 0)
    assert after["cancelled"] - before["cancelled"] == 1  # the holder, stopped between tokens
    assert after["completed"] - before["completed"] == 32
    assert after["largest_batch"] == 8 and after["rejected"] - before["rejected"] == 1
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        headers=AUTH,
        timeout=60,
    )
    assert reply.status_code == 200  # served after all that


# -- docs/SERVE.md's usage, run against this server ---------------------------------------------------
def _doc_serve_blocks() -> tuple[list[str], str]:
    """The curl lines of the bash block after `<!-- doc-test: serve`, and the python block after it."""
    from tests.test_readme import FENCE

    doc = (ROOT / "docs" / "SERVE.md").read_text(encoding="utf-8")
    start = doc.index("<!-- doc-test: serve")
    curl = FENCE.search(doc, start)
    assert curl is not None and curl.group(1) == "bash"
    python = FENCE.search(doc, curl.end())
    assert python is not None and python.group(1) == "python"
    return [line for line in curl.group(2).splitlines() if line.startswith("curl ")], python.group(2)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_doc_curl_examples(server: str) -> None:
    lines, _ = _doc_serve_blocks()
    assert len(lines) >= 8
    for line in lines:
        argv = [a.replace("http://127.0.0.1:8000", server) for a in shlex.split(line)]
        argv[1:1] = ["-H", f"Authorization: Bearer {KEY}"]  # this server has a key; the doc's has none
        result = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, (line, result.stderr)
        if '"stream": true' in line:
            events = [e for e in result.stdout.split("\n\n") if e.strip()]
            assert events[-1] == "data: [DONE]", result.stdout
            chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
            assert chunks[-1]["usage"]["completion_tokens"] > 0
            continue
        body = json.loads(result.stdout)
        assert "error" not in body, (line, body)
        if "lectern-rag/" in line:
            assert body["sources"], body
        if "/v1/summarize" in line:
            assert body["summary"], body


def test_doc_python_snippet(server: str) -> None:
    _, code = _doc_serve_blocks()
    code = code.replace("http://127.0.0.1:8000", server)
    code = re.sub(r'api_key="[^"]*"', f'api_key="{KEY}"', code)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert "marrow_point_light.pdf" in result.stdout  # the RAG reply's sources, printed
