"""The one answer loop: a generation's events (text pieces, then how it ended, or an error) as one
OpenAI response or as an event stream, with the generation cancelled however the request ends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from lectern.serve.edges import as_api_error
from lectern.serve.jobs import Event
from lectern.serve.protocol import (
    Shape,
    error_body,
    sse,
)
from lectern.serve.tool_replies import ToolReply, finish_reason, stream_deltas


def async_sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> Callable[[Event], None]:
    def sink(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutting down): nobody to tell
            loop.call_soon_threadsafe(queue.put_nowait, event)

    return sink


async def _until_disconnect(request: Request, cancelled: threading.Event) -> None:
    """Set `cancelled` when the client of a non-streaming request goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancelled.set()
            return


async def watching(request: Request, cancelled: threading.Event, work: Any) -> Any:
    """Await `work`, cancelling the generation if the client disconnects first."""
    watcher = asyncio.ensure_future(_until_disconnect(request, cancelled))
    try:
        return await work
    finally:
        watcher.cancel()


@dataclass
class Ending:
    """How a generation ended, as the response says it: finish reason, usage, extra fields (a RAG
    model's `sources`), when the chain cleaned it, the final text of a non-streamed answer, and
    what a stream adds when that final text replaced the streamed words (`correction`)."""

    reason: str
    usage: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    correction: str | None = None


async def respond(
    request: Request,
    shape: Shape,
    events: asyncio.Queue[Event],
    cancelled: threading.Event,
    stream: bool,
    ending: Callable[[Any], Ending],
    tools: ToolReply | None = None,
) -> Any:
    """The one answer loop: ("text", str) events, then ("done", x) (`ending(x)` says how it ended)
    or ("error", exception), as one response or as an event stream. However it ends (done, client
    gone, handler cancelled), `cancelled` is set, which stops the generation at its next token. An
    open stream is also ended by Server.shut_down (SIGTERM). With `tools` (a tool-bound chat), the
    reply's tool calls become OpenAI's `tool_calls`."""
    if not stream:

        async def collect() -> tuple[str, Ending]:
            parts: list[str] = []
            while True:
                kind, value = await events.get()
                if kind == "text":
                    parts.append(value)
                elif kind == "calls" and tools is not None:
                    tools.parsed.extend(value)
                elif kind == "error":
                    raise value
                elif kind == "done":
                    return "".join(parts), ending(value)

        try:
            text, end = await watching(request, cancelled, collect())
        finally:
            cancelled.set()  # no-op when done; stops the rows when the handler was cancelled
        if tools is not None:
            tools.feed(text)
            content, calls = tools.finish()
            return shape.whole(content, finish_reason(end.reason, calls), end.usage, calls, **end.extra)
        return shape.whole(end.text if end.text is not None else text, end.reason, end.usage, **end.extra)

    streams = request.app.state.server.streams
    shutdown = async_sink(asyncio.get_running_loop(), events)  # Server.shut_down ends the stream

    async def frames() -> AsyncIterator[str]:
        sent: list[str] = []
        streams.add(shutdown)
        try:
            if shape.chat:
                yield sse(shape.chunk({"role": "assistant", "content": ""}))
            while True:
                kind, value = await events.get()
                if kind == "text" and tools is not None:
                    piece = tools.feed(value)
                    if piece:
                        yield sse(shape.chunk({"content": piece}))
                elif kind == "text":
                    sent.append(value)
                    yield sse(shape.chunk({"content": value} if shape.chat else value))
                elif kind == "calls" and tools is not None:
                    tools.parsed.extend(value)
                elif kind == "error":
                    api = as_api_error(value)
                    yield sse(error_body(api.message, api.type, api.param, api.code))
                    break
                elif kind == "done":
                    end = ending(value)
                    reason = end.reason
                    added = appended(sent, end.text) or end.correction
                    if added:
                        yield sse(shape.chunk({"content": added} if shape.chat else added))
                    if tools is not None:
                        content, calls = tools.finish()
                        rest = tools.rest(content)
                        if rest:
                            yield sse(shape.chunk({"content": rest}))
                        for delta in stream_deltas(calls):
                            yield sse(shape.chunk(delta))
                        reason = finish_reason(reason, calls)
                    yield sse(shape.chunk({} if shape.chat else "", reason, **end.extra))
                    if shape.include_usage:
                        yield sse(shape.usage_chunk(end.usage))
                    break
            yield "data: [DONE]\n\n"
        finally:
            streams.discard(shutdown)
            cancelled.set()  # the client left mid-stream: the row stops at its next token

    return event_stream(frames())


def appended(sent: list[str], final: str | None) -> str:
    """What a chain's final text adds at the end of the streamed one (the citation markers a RAG
    answer gains when the model wrote none), so the stream carries what the whole response does;
    nothing when the final text is not the streamed one continued."""
    streamed = "".join(sent).strip()
    if final is None or not final.startswith(streamed):
        return ""
    return final[len(streamed) :]


def event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
