"""Continuous batching through a real `lectern serve --backend llamacpp` subprocess on loopback with
the packaged SmolLM2: requests join a stream that is already generating, each with its own stop
strings and limits; a request alone is word for word what a server running one request at a time
(`--max-batch 1`) writes at temperature 0, and a seeded one the same again; a client that leaves frees its row while
the others go on. And a RAG model's `response_format` through the openai client's `parse()`: the answer decoded
under the schema, its sources checked by the chain. Nothing here asserts on time: the tests read
/health's counters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field

from tests.conftest import SAMPLE_DOCS
from tests.fixtures.ui_server import child_env, lectern_serve
from tests.serve.conftest import health, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not __import__("importlib").util.find_spec("llama_cpp"), reason="llama-cpp-python not installed"
    ),
]
MODEL = "packaged:smollm2"
QUESTIONS = [
    ("Name three colours.", {}),
    ("Write one sentence about a lighthouse.", {"stop": ["."]}),
    ("What is two plus two?", {"max_tokens": 5}),
]


class Cited(BaseModel):
    answer: str = Field(max_length=120)
    confident: bool


def _serve(tmp: Path, max_batch: int) -> Any:
    env = child_env()
    env.update(LECTERN_DATA_DIR=str(tmp), LECTERN_LLM__THREADS="1", LECTERN_LLM__MAX_NEW_TOKENS="24",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    args = [
        "--model",
        MODEL,
        "--backend",
        "llamacpp",
        "--max-batch",
        str(max_batch),
        "--log-level",
        "warning",
    ]
    return lectern_serve(args, env, tmp / "serve.log", timeout_s=600)


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The continuous server, shared by the tests of rows joining and leaving."""
    with _serve(tmp_path_factory.mktemp("continuous"), 4) as url:
        yield url


@pytest.fixture
def rag_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A continuous server with nothing cached yet, over a collection `sample` holding the canal
    notes: its answer does not depend on what other tests asked before (a prompt fed from another
    request's cached prefix may round its logits differently, and SmolLM2 then writes another
    answer)."""
    from lectern.rag.settings import Settings
    from lectern.rag.workspace import Workspace

    data = tmp_path_factory.mktemp("rag")
    ws = Workspace(collection="sample", settings=Settings(data_dir=data))
    assert ws.ingest([SAMPLE_DOCS / "brennock_canal.txt"]).ok
    ws.close()
    with _serve(data, 4) as url:
        yield url


@pytest.fixture
def fresh_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A continuous server and a one-at-a-time server, both with nothing cached yet."""
    with (
        _serve(tmp_path_factory.mktemp("fresh"), 4) as batched,
        _serve(tmp_path_factory.mktemp("one-at-a-time"), 1) as single,
    ):
        yield batched, single


def _body(question: str, **options: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0, **options}


async def _ask(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], first: asyncio.Event | None = None
) -> tuple[str, str, int]:
    """(text, finish_reason, completion_tokens) of a streamed chat completion; `first` is set when
    its first text arrives."""
    text, reason, used = "", "", 0
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            elif chunk["choices"]:
                text += chunk["choices"][0]["delta"].get("content") or ""
                if text and first is not None:
                    first.set()
                reason = chunk["choices"][0]["finish_reason"] or reason
    return text, reason, used


def _one(url: str, body: dict[str, Any]) -> tuple[str, str, int]:
    async def run() -> tuple[str, str, int]:
        async with httpx.AsyncClient(timeout=600) as http:
            return await _ask(http, url, body)

    return asyncio.run(run())


def test_requests_join_a_running_stream_each_with_its_own_limits(batched: str) -> None:
    before = health(batched)

    async def run() -> tuple[list[tuple[str, str, int]], tuple[str, str, int]]:
        async with httpx.AsyncClient(timeout=600) as http:
            generating = asyncio.Event()
            story = _body("Tell a long story.", max_tokens=200, ignore_eos=True)
            long = asyncio.ensure_future(_ask(http, batched, story, generating))
            await generating.wait()  # the others join a row that is generating
            replies = await asyncio.gather(*(_ask(http, batched, _body(q, **o)) for q, o in QUESTIONS))
            return list(replies), await long

    replies, long = asyncio.run(run())
    assert long[1:] == ("length", 200)  # ignore_eos honoured: exactly max_tokens
    stats = health(batched)
    assert stats["joined"] - before["joined"] >= 1 and stats["largest_batch"] >= 2
    assert stats["failed"] == before["failed"] and stats["running"] == 0
    for (_, options), (text, reason, used) in zip(QUESTIONS, replies, strict=True):
        assert text and reason in ("stop", "length") and 0 < used <= options.get("max_tokens", 24)
        for stop in options.get("stop", []):
            assert stop not in text


def test_a_request_alone_replies_as_one_at_a_time(fresh_pair: tuple[str, str]) -> None:
    """Word for word at temperature 0: the engine samples a row as create_completion does. Both
    servers are sent the same requests in the same order, so each feeds a prompt from the same
    cached prefix (the engine keeps ended rows' cells, llama-cpp-python its last prompt and reply):
    a prompt fed in other pieces, or beside other rows, may round its logits differently
    (docs/SERVE.md)."""
    batched, single = fresh_pair
    for question, options in QUESTIONS:
        assert _one(batched, _body(question, **options)) == _one(single, _body(question, **options))
    assert health(single)["joined"] == 0
    assert health(batched)["prompt_tokens_cached"] > 0  # the later prompts started from the first's


def test_a_seeded_reply_is_the_same_again(batched: str) -> None:
    seeded = _body("Invent a name for a boat.", temperature=0.9, seed=1234, max_tokens=16)
    assert _one(batched, seeded) == _one(batched, seeded)


def test_a_client_that_leaves_frees_its_row_and_the_others_finish(batched: str) -> None:
    before = health(batched)

    async def run() -> tuple[str, str, int]:
        async with httpx.AsyncClient(timeout=600) as http:
            body = {**_body("Count to a thousand.", max_tokens=300, ignore_eos=True), "stream": True}
            async with http.stream("POST", f"{batched}/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        break  # the row is generating: leave
            return await _ask(http, batched, _body(QUESTIONS[0][0]))

    text, reason, used = asyncio.run(run())
    assert text and reason in ("stop", "length") and used > 0
    stats = wait_for(batched, "the row cancelled", lambda s: s["cancelled"] > before["cancelled"], 300)
    assert stats["running"] == 0 or stats["completed"] > before["completed"]
    assert stats["failed"] == before["failed"]


def test_a_rag_answer_follows_response_format(rag_server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{rag_server}/v1", api_key="none", max_retries=0, timeout=600)
    question = [{"role": "user", "content": "How many locks does the Brennock Canal climb through?"}]
    reply = client.chat.completions.parse(
        model="lectern-rag/sample", messages=question, response_format=Cited, max_tokens=200
    )
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Cited) and parsed.answer, reply
    assert reply.model_extra and reply.model_extra["sources"], reply  # the chain's citations
    schema = {"type": "json_schema", "json_schema": {"name": "cited", "schema": Cited.model_json_schema()}}
    streamed = client.chat.completions.create(
        model="lectern-rag/sample", messages=question, response_format=schema,
        max_tokens=200, stream=True,
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert Cited.model_validate_json(text).answer  # the streamed JSON is whole
