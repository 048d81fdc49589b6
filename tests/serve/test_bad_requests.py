"""Hostile and broken requests against `lectern serve` (fake model, real loopback server): every body
that is not a valid request is a 400 in OpenAI's shape naming the field, on a keep-alive connection
that stays usable; a bug is one 500 that closes the connection, one log line and a trace file; one
poisoned row never fails the other rows of its batch."""

from __future__ import annotations

import http.client
import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from lectern.errors import InvalidInput
from lectern.rag.fake import DONT_KNOW, FakeChatModel
from lectern.serve.jobs import Event, Finish, Job, Sampling
from lectern.serve.request_queue import Batcher
from lectern.serve.server import ServeOptions
from tests.serve.conftest import health, serving, wait_for

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Hello there"}]}
SURROGATE = '"a \\ud800 b"'  # JSON text of a string holding a lone surrogate


def _chat_with(content: str, **more: Any) -> bytes:
    extra = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in more.items())
    return f'{{"model": "fake", "messages": [{{"role": "user", "content": {content}}}]{extra}}}'.encode()


BAD: list[tuple[str, str, bytes, str | None]] = [
    # (name, path, raw body, the param the 400 names)
    ("seed over 64 bits", "/v1/chat/completions", json.dumps({**CHAT, "seed": 2**64}).encode(), "seed"),
    ("seed under 64 bits", "/v1/completions",
     json.dumps({"model": "fake", "prompt": "x", "seed": -(2**63) - 1}).encode(), "seed"),
    ("empty prompt", "/v1/completions", b'{"model": "fake", "prompt": ""}', "prompt"),
    ("empty prompt in a list", "/v1/completions", b'{"model": "fake", "prompt": [""]}', "prompt"),
    ("10,000 deep", "/v1/chat/completions", b'{"model": "fake", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", None),
    ("deep in a tool schema", "/v1/chat/completions",
     json.dumps({**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {
         "type": "object", "properties": {"a": json.loads('{"x":' * 80 + "1" + "}" * 80)}}}}]}).encode(), None),
    ("NaN", "/v1/chat/completions", _chat_with('"hi"')[:-1] + b', "temperature": NaN}', None),
    ("lone surrogate in chat", "/v1/chat/completions", _chat_with(SURROGATE), "messages"),
    ("lone surrogate in a stream", "/v1/chat/completions", _chat_with(SURROGATE, stream=True), "messages"),
    ("lone surrogate in a stop", "/v1/chat/completions", _chat_with('"hi"')[:-1] + b', "stop": [' + SURROGATE.encode() + b"]}", "stop"),
    ("lone surrogate in a completion", "/v1/completions", b'{"model": "fake", "prompt": ' + SURROGATE.encode() + b"}", "prompt"),
    ("lone surrogate in embeddings", "/v1/embeddings", b'{"model": "lectern-embed", "input": [' + SURROGATE.encode() + b"]}", "input"),
    ("lone surrogate in a RAG question", "/v1/chat/completions",
     _chat_with(SURROGATE).replace(b'"fake"', b'"lectern-rag/test"'), "messages"),
    ("lone surrogate in RAG sources", "/v1/chat/completions",
     _chat_with('"hi"').replace(b'"fake"', b'"lectern-rag/test"')[:-1] + b', "sources": [' + SURROGATE.encode() + b"]}", "sources"),
    ("lone surrogate in a summary query", "/v1/summarize", b'{"query": ' + SURROGATE.encode() + b"}", "query"),
    ("a model name of a megabyte", "/v1/chat/completions", json.dumps({**CHAT, "model": "m" * 2**20}).encode(), "model"),
    ("not UTF-8", "/v1/chat/completions", b'{"model": "fake\xff"}', None),
]  # fmt: skip


class Connection:
    """One keep-alive HTTP/1.1 connection: `request` fails if the server closed it in between."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.http = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sock: Any = None

    def request(self, path: str, body: bytes, method: str = "POST") -> tuple[int, Any, Any]:
        self.http.request(method, path, body=body, headers=self.headers)
        if self.sock is None:
            self.sock = self.http.sock
        assert self.http.sock is self.sock, "a new connection: the server closed the last one"
        response = self.http.getresponse()
        data = response.read()
        if response.will_close:
            self.http.close()
        return response.status, response, json.loads(data) if data else None

    def close(self) -> None:
        self.http.close()


def _openai_error(status: int, body: Any, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "path", "raw", "param"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_body_is_a_400_naming_the_field_and_the_connection_stays_usable(
    fake_url: str, name: str, path: str, raw: bytes, param: str | None
) -> None:
    conn = Connection(fake_url)
    try:
        status, response, body = conn.request(path, raw)
        error = _openai_error(status, body, 400)
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
        assert not response.will_close
        status, _, body = conn.request("/v1/chat/completions", json.dumps(CHAT).encode())
        assert status == 200 and body["choices"][0]["message"]["content"] == DONT_KNOW
    finally:
        conn.close()
    assert health(fake_url)["submitted"] == 1  # none of the bad ones reached the model


def test_seeds_at_the_64_bit_bounds_are_accepted(fake_url: str) -> None:
    for seed in (2**63 - 1, -(2**63), 0):
        assert httpx.post(f"{fake_url}/v1/chat/completions", json={**CHAT, "seed": seed}).status_code == 200


def test_a_blank_api_key_is_refused_at_start_and_an_empty_header_is_401(settings: Any) -> None:
    for keys in ([""], [" "], ["ok", "\t"]):
        with pytest.raises(InvalidInput, match="--api-key"):
            ServeOptions(api_keys=keys)
    with serving(settings, FakeChatModel(), api_keys=("k1",)) as url:
        for headers in (
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer  "},
        ):
            conn = Connection(url, headers)
            status, _, body = conn.request("/v1/chat/completions", json.dumps(CHAT).encode())
            conn.close()
            assert _openai_error(status, body, 401)["code"] == "invalid_api_key", headers


class Crashing(FakeChatModel):
    """A model with a bug: its stream raises before any text."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        raise RuntimeError("a bug in the model")
        yield  # a generator


def test_a_bug_is_one_500_that_closes_the_connection_one_log_line_and_a_trace_file(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)  # uvicorn's loggers do not reach the root's
    try:
        with serving(settings, Crashing()) as url, caplog.at_level(logging.INFO):
            conn = Connection(url)
            status, response, body = conn.request("/v1/chat/completions", json.dumps(CHAT).encode())
            conn.close()
            stats = httpx.get(f"{url}/health").json()
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    error = _openai_error(status, body, 500)
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]
    assert response.getheader("connection") == "close"
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and problems[0].name == "lectern.serve", [r.getMessage() for r in problems]
    assert "Traceback" not in problems[0].getMessage()
    (trace,) = tmp_path.glob("lectern-error-*.txt")
    assert str(trace) in problems[0].getMessage()
    assert "a bug in the model" in trace.read_text() and "POST /v1/chat/completions" in trace.read_text()
    assert stats["generation"]["failed"] == 1 and stats["requests"]["failed"] == 1


class Poisonable(FakeChatModel):
    """Holds the model while a message says "hold" (until cancelled), raises on "poison"."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text = messages[-1].text
        if "poison" in text:
            raise ValueError("this row cannot be generated")
        if "hold" in text:
            while True:
                threading.Event().wait(0.005)  # pacing only
                yield self._chunk("tick ", run_manager)
        yield from super()._stream(messages, stop, run_manager, **kwargs)


def _ask(url: str, content: str) -> httpx.Response:
    body = {"model": "fake", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def test_a_poisoned_row_fails_alone_in_its_batch(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the poisoned row's trace file
    with serving(settings, Poisonable(), max_batch=4) as url:
        hold = {"model": "fake", "messages": [{"role": "user", "content": "hold"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=hold, timeout=30) as held:
            lines = held.iter_lines()  # kept: a dropped line iterator closes the stream
            next(line for line in lines if "tick" in line)
            results: dict[str, httpx.Response] = {}
            threads = [
                threading.Thread(target=lambda c=c: results.__setitem__(c, _ask(url, c)))
                for c in ("one", "poison", "two")
            ]
            for t in threads:
                t.start()
            wait_for(url, "three waiting", lambda s: s["waiting"] == 3)
        for t in threads:  # the holder is gone: the three run as one batch
            t.join(30)
        stats = wait_for(url, "drained", lambda s: s["running"] == 0 and s["waiting"] == 0)
    assert stats["batches"] == 2 and stats["largest_batch"] == 3
    assert results["poison"].status_code == 500
    assert results["one"].status_code == 200 and results["two"].status_code == 200
    assert stats["failed"] == 1 and stats["completed"] == 2
    assert len(list(tmp_path.glob("lectern-error-*.txt"))) == 1


def test_a_batch_that_raises_runs_its_rows_again_alone_so_only_the_bad_one_fails() -> None:
    """The local model's path: one `generate` over the batch; when it raises, the rows run alone."""
    batcher = Batcher(FakeChatModel(), max_batch=4)
    try:
        events: dict[str, list[Event]] = {name: [] for name in ("a", "bad", "b", "sent")}
        jobs = {name: Job([], Sampling(), sink=events[name].append) for name in events}
        jobs["sent"].emit(("text", "half a reply"))  # it already streamed: it cannot run again
        runs: list[list[Job]] = []

        def run(batch: list[Job]) -> None:
            runs.append(batch)
            if jobs["bad"] in batch:
                raise ValueError("a bad row")
            for job in batch:
                job.emit(("done", Finish("stop", 1)))

        batcher._isolated(list(jobs.values()), run)
    finally:
        batcher.close()
    assert [len(r) for r in runs] == [4, 1, 1, 1]  # together, then a, bad, b alone
    assert events["a"][-1][0] == "done" and events["b"][-1][0] == "done"
    assert events["bad"][-1][0] == "error" and events["sent"][-1][0] == "error"
    assert batcher.stats["failed"] == 2
