"""The RAG models (`lectern-rag/<collection>`: lectern's QA chain, citations as `sources`) and
/v1/summarize, their generations joining the server's batches through a QueuedChatModel."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any

from fastapi import Request

from lectern.errors import (
    APIError,
    InvalidInput,
    UnknownModel,
)
from lectern.serve.answers import Ending, async_sink, respond, watching
from lectern.serve.completions import unconstrained
from lectern.serve.jobs import Event
from lectern.serve.protocol import (
    RAG_PREFIX,
    ChatRequest,
    Shape,
    SummarizeRequest,
    new_id,
    now,
    usage,
)
from lectern.serve.queued_model import QueuedChatModel

if TYPE_CHECKING:
    from lectern.serve.server import Server


def sources_of(answer: Any) -> list[dict[str, Any]]:
    """The answer's citations as the `sources` field: number, source, page, location (slide, sheet
    rows, heading path), whether it was read by OCR, chunk id, quote."""
    return [
        {
            "number": c.number,
            "source": c.source,
            "page": c.page,
            "location": c.location,
            "ocr": c.ocr,
            "chunk_id": c.chunk_id,
            "quote": c.quote,
        }
        for c in answer.citations
    ]


def known_sources(server: Server, body: ChatRequest) -> tuple[str, ...]:
    """The collection's keys for the request's `sources`: each a document of the collection (an
    absolute path, or the end of one ingested path: Workspace.known_source), else a 404 before any
    answer starts, streamed or not."""
    ws = server.workspace(body.model[len(RAG_PREFIX) :])
    return tuple(ws.known_source(s, from_cwd=False) for s in body.sources or ())


def answer_format(server: Server, body: ChatRequest) -> dict[str, Any] | None:
    """The schema a RAG answer is decoded under for `response_format` (None: free text), through the
    machinery of answer.json_schema: `json_object` is lectern's structured answer ({"answer",
    "citations"}); a `json_schema` needs a required string property "answer" (what the chain cites
    and checks). A 400 naming response_format for one that cannot be, or a model that cannot
    constrain its decoding."""
    from lectern.rag.llm import TemplatedChatModel
    from lectern.rag.llm.structured import ANY_OBJECT
    from lectern.rag.workspace import answer_schema

    schema = body.response_schema()
    if schema is None:
        return None
    try:
        schema = answer_schema(
            None if schema is ANY_OBJECT else schema, "response_format", "json_schema.schema"
        )
    except InvalidInput as error:
        raise APIError(str(error), param="response_format", code="invalid_request") from None
    if not isinstance(server.llm, TemplatedChatModel):
        raise unconstrained(server.llm)
    return schema


def structured_text(answer: Any) -> str:
    """A structured RAG answer's content: the JSON object the model wrote, or the chain's own answer
    as {"answer": ...} when it abstained before asking the model."""
    from lectern.rag.qa import structured_value

    value = structured_value(answer)
    return json.dumps(value if value is not None else {"answer": answer.answer}, ensure_ascii=False)


def _rag_chain(
    server: Server, body: ChatRequest, llm: QueuedChatModel, sources: tuple[str, ...], structured: bool
) -> Any:
    """The collection's QA chain as the settings configure it (Workspace.qa_chain), answering with
    the request's model, length, k, mode and sources; `structured` for a response_format (the
    queued model carries its schema)."""
    from lectern.rag.retrieval import Filters

    ws = server.workspace(body.model[len(RAG_PREFIX) :])
    changes: dict[str, Any] = {"max_new_tokens": llm.max_new_tokens}
    if body.k is not None:
        changes["k"] = body.k
    if structured:
        changes["structured"] = True
    filters = Filters(sources) if sources else None
    return ws.qa_chain(llm=llm, mode=body.mode, filters=filters, **changes)


async def rag_chat(server: Server, body: ChatRequest, request: Request) -> Any:
    """The collection's QA chain on the last user message; citations come back as `sources`."""
    from lectern.rag.types import Answer
    from lectern.rag.verify import why_changed

    question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "").strip()
    if not question:
        raise APIError("a RAG model needs a user message with the question", param="messages")
    name = body.model[len(RAG_PREFIX) :]
    if name not in server.collections():
        raise UnknownModel(f"model {body.model!r} not found: no collection {name!r}", param="model",
                           code="model_not_found")  # fmt: skip
    schema = answer_format(server, body)
    sources = await asyncio.to_thread(known_sources, server, body)
    server.batcher.check_capacity()
    llm = server.queued(body.limit(), body.temperature)
    llm.response_schema = schema
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()
    sink = async_sink(loop, events)

    def work() -> None:  # retrieval (the embedder's first load too) off the event loop
        try:
            chain = _rag_chain(server, body, llm, sources, schema is not None)
            for part in chain.stream_answer(question):
                sink(("done", part) if isinstance(part, Answer) else ("text", part))
        except Exception as error:
            sink(("error", error))

    threading.Thread(target=work, name="lectern-rag", daemon=True).start()

    def used() -> dict[str, int]:
        return usage(sum(p for p, _ in llm.usage), sum(c for _, c in llm.usage))

    shape = Shape(new_id("chatcmpl"), now(), body.model, True, body.include_usage())

    def ending(answer: Answer) -> Ending:
        text = structured_text(answer) if schema is not None else answer.answer
        # an answer the model wrote ends as its last generation did: "length" when max_tokens cut it
        # (a JSON answer cut so is not whole); the chain's own abstention is a "stop"
        cut = not answer.abstained and llm.finishes[-1:] == ["length"]
        # why lectern's abstain sentence is the answer (None: answered), and the check the model's
        # first answer failed when it was asked again (None: it passed)
        extra = {
            "sources": sources_of(answer),
            "abstained_by": answer.abstained_by,
            "retried": answer.retried,
        }
        # the streamed words were replaced or withdrawn: the stream says why and ends with the answer
        # the whole response gives (a JSON answer is left whole: its fields say it)
        why = why_changed(answer) if schema is None else None
        correction = f"\n\n(That answer {why}:) {text}" if why else None
        return Ending("length" if cut else "stop", used(), extra, text=text, correction=correction)

    return await respond(request, shape, events, llm.cancelled, body.stream, ending)


async def summarize_request(server: Server, body: SummarizeRequest, request: Request) -> dict[str, Any]:
    from lectern.rag.summarize import summarize

    if body.source is not None and body.query is not None:
        raise APIError("give a source or a query, not both", param="source")
    server.batcher.check_capacity()
    ws = server.workspace(body.collection or server.options.collection or server.settings.collection)
    llm = server.queued(body.max_tokens, None)

    def work() -> Any:
        source = None if body.source is None else ws.known_source(body.source, from_cwd=False)
        docs, scope = ws.scope_documents(source=source, query=body.query)
        return summarize(llm, docs, method=body.method, max_new_tokens=llm.max_new_tokens,
                         batch_size=server.batcher.max_batch, scope=scope,
                         support=ws.settings.summary.support,
                         unsupported=ws.settings.summary.unsupported)  # fmt: skip

    try:
        result = await watching(request, llm.cancelled, asyncio.to_thread(work))
    finally:
        llm.cancelled.set()
    return {
        "id": new_id("sum"),
        "object": "summary",
        "created": now(),
        "model": server.model_id,
        **result.model_dump(),
        "usage": usage(sum(p for p, _ in llm.usage), sum(c for _, c in llm.usage)),
    }
