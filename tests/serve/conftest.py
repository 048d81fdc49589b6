"""A real uvicorn on loopback, in this process, over the fake model: the protocol tests run in seconds."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from lectern.rag.fake import FakeChatModel
from tests.fixtures.ui_server import free_port


class EndlessFake(FakeChatModel):
    """Streams "tick " until cancelled or max_new_tokens words: a generation that holds the model."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        while True:
            time.sleep(0.005)  # pacing only: nothing asserts on time
            yield self._chunk("tick ", run_manager)


class FailingFake(FakeChatModel):
    """Streams one word, then fails: an error after the stream has started."""

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield self._chunk("partial ", run_manager)
        raise RuntimeError("the model fell over")


@contextmanager
def serving_uvicorn(settings: Any, llm: Any, **options: Any) -> Iterator[tuple[str, Any]]:
    """`build_app` under the uvicorn server `lectern serve` runs, on a free loopback port; yields the
    base URL and that server (its handle_exit is what a SIGTERM calls)."""
    from lectern.serve.app import build_app, uvicorn_server
    from lectern.serve.server import ServeOptions

    app = build_app(settings, llm, ServeOptions(**options))
    port = free_port()
    server = uvicorn_server(app, host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serving(settings: Any, llm: Any, **options: Any) -> Iterator[str]:
    """`build_app` under uvicorn on a free loopback port; yields the base URL."""
    with serving_uvicorn(settings, llm, **options) as (url, _):
        yield url


def health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health").json()["generation"]  # type: ignore[no-any-return]


def wait_for(url: str, what: str, predicate: Any, bound_s: float = 20.0) -> dict[str, Any]:
    """Poll /health until `predicate(stats)`; the bound only turns a hang into a failure."""
    deadline = time.monotonic() + bound_s
    while True:
        stats = health(url)
        if predicate(stats):
            return stats
        assert time.monotonic() < deadline, f"never {what}: {stats}"
        time.sleep(0.02)


def sse_events(lines: Sequence[str]) -> list[str]:
    """The `data:` payloads of an event stream, in order; fails on any other non-empty line."""
    out = []
    for line in lines:
        if not line:
            continue
        assert re.match(r"^data: ", line), f"not a data line: {line!r}"
        out.append(line[len("data: ") :])
    return out


@pytest.fixture
def fake_url(settings: Any) -> Iterator[str]:
    with serving(settings, FakeChatModel(), max_batch=4, max_queue=8) as url:
        yield url
