"""The FastAPI app of `lectern serve`: OpenAI's endpoints over the local model and lectern's RAG chains.

Every error leaves in OpenAI's shape `{"error": {message, type, param, code}}` with its status (400
for a body that fails validation, never FastAPI's 422). Generation goes through one Batcher; a
client that leaves sets its request's `cancelled` event, which stops its rows between tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from lectern.errors import (
    APIError,
    BodyTooLarge,
    CollectionNotFound,
    ContextTooLong,
    DocumentNotFound,
    InvalidName,
    LecternError,
    LLMServerError,
    LLMUnavailable,
    NothingToSummarize,
    Unauthorized,
    UnknownKey,
    UnknownModel,
)
from lectern.rag.llm import LocalChatModel
from lectern.rag.settings import Settings
from lectern.serve.batching import Batcher, Event, Finish, Job, QueuedChatModel, Sampling
from lectern.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerationRequest,
    Message,
    SummarizeRequest,
    error_body,
    model_card,
    new_id,
    now,
    usage,
)

log = logging.getLogger("lectern.serve")

T = TypeVar("T", bound=BaseModel)
RAG_PREFIX = "lectern-rag/"
EMBED_MODEL = "lectern-embed"
PUBLIC_PATHS = ("/health", "/v1/models")
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class ServeOptions:
    api_keys: Sequence[str] = ()
    collection: str | None = None  # the default collection of /v1/summarize
    max_batch: int = 8  # 1: batching off (one request at a time)
    max_queue: int = 32  # waiting requests past which the server answers 503
    max_body_bytes: int = MAX_BODY_BYTES
    retry_after_s: int = 1


@dataclass
class Server:
    """What the routes share: the settings, the loaded model, its batcher and the embedder."""

    settings: Settings
    llm: BaseChatModel
    options: ServeOptions
    batcher: Batcher
    created: int = field(default_factory=now)
    _embedder: Any = None
    _workspaces: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_id(self) -> str:
        name = getattr(self.llm, "model_name", None)  # the local model actually loaded, or the upstream's
        if name is None and self.llm._llm_type == "lectern-fake":
            name = "fake"
        return str(name or self.settings.llm.model)

    def is_local_model(self, name: str) -> bool:
        return name in (self.model_id, self.settings.llm.model)

    def collections(self) -> list[str]:
        from lectern.rag.workspace import Workspace

        return Workspace(settings=self.settings).collections()

    def workspace(self, name: str) -> Any:
        """The collection's Workspace, opened once and shared by the requests (its SQLite connection
        is opened with check_same_thread=False; FAISS searches are read-only)."""
        from lectern.rag.workspace import Workspace

        with self._lock:
            if name not in self._workspaces:
                ws = Workspace(collection=name, settings=self.settings)
                ws.collection()  # CollectionNotFound (404) for a name that is not one: nothing cached
                self._workspaces[name] = ws
            return self._workspaces[name]

    def embedder(self) -> Any:
        from lectern.rag.workspace import shared_embedder

        with self._lock:
            if self._embedder is None:
                self._embedder = shared_embedder(self.settings.ingest.embed, self.settings.models_dir)
            return self._embedder

    def queued(self, max_tokens: int | None, temperature: float | None) -> QueuedChatModel:
        """A per-request chat model for the chains whose generations join the batcher."""
        return QueuedChatModel(
            base=self.llm,
            batcher=self.batcher,
            context_window=int(getattr(self.llm, "context_window", 2048)),
            max_new_tokens=max_tokens or self.settings.llm.max_new_tokens,
            temperature=temperature if temperature is not None else self.settings.llm.temperature,
        )


# --------------------------------------------------------------------------- edges: size, keys, errors


class Gate:
    """Pure ASGI (streams and disconnects pass through untouched): refuse too large a body (413) and
    a missing or wrong key (401) before the request reaches a route."""

    def __init__(self, app: ASGIApp, options: ServeOptions) -> None:
        self.app = app
        self.limit = options.max_body_bytes
        self.keys = [k.encode() for k in options.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.keys and scope["path"] not in PUBLIC_PATHS and not self._authorized(headers):
            await _send_error(send, Unauthorized("missing or invalid API key", code="invalid_api_key"))
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_error(send, self._too_large())
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body over the limit of {self.limit} bytes", code="body_too_large")

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"authorization", b"")
        token = given[7:] if given[:7].lower() == b"bearer " else b""
        ok = False
        for key in self.keys:  # every key compared, each in constant time
            ok |= hmac.compare_digest(token, key)
        return ok


async def _send_error(send: Send, error: APIError) -> None:
    body = json.dumps(error_body(error.message, error.type, error.param, error.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


LIBRARY_ERRORS: dict[type[LecternError], tuple[int, str, str | None]] = {
    ContextTooLong: (400, "invalid_request_error", "context_length_exceeded"),
    CollectionNotFound: (404, "not_found_error", "collection_not_found"),
    DocumentNotFound: (404, "not_found_error", "document_not_found"),
    InvalidName: (400, "invalid_request_error", None),
    UnknownKey: (400, "invalid_request_error", None),
    NothingToSummarize: (400, "invalid_request_error", None),
    LLMUnavailable: (502, "upstream_error", None),
    LLMServerError: (502, "upstream_error", None),
}


def as_api_error(error: BaseException) -> APIError:
    """Any exception as the APIError the client sees (library errors keep their sentence)."""
    if isinstance(error, APIError):
        return error
    for kind, (status, type_, code) in LIBRARY_ERRORS.items():
        if isinstance(error, kind):
            return APIError(str(error), code=code, status=status, type=type_)
    log.exception("internal error", exc_info=error)
    return APIError(f"internal error: {type(error).__name__}", status=500, type="server_error")


def error_response(error: BaseException) -> JSONResponse:
    api = as_api_error(error)
    headers = {"Retry-After": str(getattr(api, "retry_after_s", 1))} if api.status == 503 else None
    return JSONResponse(error_body(api.message, api.type, api.param, api.code), api.status, headers)


def _http_error(error: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in OpenAI's shape."""
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return error_response(APIError(str(error.detail), status=error.status_code, type=kind))


# --------------------------------------------------------------------------- the app


def build_app(settings: Settings, llm: BaseChatModel, options: ServeOptions | None = None) -> FastAPI:
    """The server over an already loaded chat model (the CLI loads it; tests pass the fake)."""
    options = options or ServeOptions()
    batcher = Batcher(llm, max_batch=options.max_batch, max_queue=options.max_queue)
    server = Server(settings, llm, options, batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="lectern", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    app.add_middleware(Gate, options=options)
    app.add_exception_handler(HTTPException, lambda r, e: _http_error(e))  # type: ignore[arg-type]
    for kind in (APIError, LecternError, Exception):  # Exception: a 500, still in OpenAI's shape
        app.add_exception_handler(kind, lambda r, e: error_response(e))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": server.model_id, "generation": batcher.snapshot()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        ids = [server.model_id, EMBED_MODEL, *(RAG_PREFIX + c for c in server.collections())]
        return {"object": "list", "data": [model_card(i, server.created) for i in ids]}

    @app.get("/v1/collections")
    async def collections() -> dict[str, Any]:
        data = []
        for name in server.collections():
            stats = server.workspace(name).collection().stats()
            data.append({"id": name, "object": "collection", "model": RAG_PREFIX + name, **stats})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        body = await parse(request, ChatRequest)
        if body.model.startswith(RAG_PREFIX):
            return await rag_chat(server, body, request)
        check_model(server, body.model)
        messages = to_messages(body.messages)
        job = make_job(server, body, messages)
        return await generate(server, job, body, request, chat=True)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body = await parse(request, CompletionRequest)
        check_model(server, body.model)
        job = make_job(server, body, [HumanMessage(content=body.text())], raw=body.text())
        return await generate(server, job, body, request, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await parse(request, EmbeddingRequest)
        if body.model != EMBED_MODEL:
            raise UnknownModel(f"unknown embedding model {body.model!r}; use {EMBED_MODEL!r}", param="model",
                               code="model_not_found")  # fmt: skip
        return await asyncio.to_thread(embed, server, body)

    @app.post("/v1/summarize")
    async def summarize(request: Request) -> dict[str, Any]:
        body = await parse(request, SummarizeRequest)
        return await summarize_request(server, body, request)

    return app


async def parse(request: Request, model: type[T]) -> T:
    """The body as `model`, whatever the Content-Type (curl's -d sends form-encoded): not JSON or
    not valid is a 400 naming the first bad field."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except ValueError:
        raise APIError("the body is not valid JSON", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        loc = [str(p) for p in problem.get("loc", ())]
        where = ".".join(loc)
        message = f"{where}: {problem['msg']}" if where else str(problem["msg"])
        raise APIError(message, param=loc[0] if loc else None, code="invalid_request") from None


def check_model(server: Server, name: str) -> None:
    if not server.is_local_model(name):
        known = [server.model_id, *(RAG_PREFIX + c for c in server.collections())]
        raise UnknownModel(
            f"model {name!r} not found; this server has {', '.join(known)}",
            param="model",
            code="model_not_found",
        )


def to_messages(messages: list[Message]) -> list[BaseMessage]:
    kinds: dict[str, Callable[..., BaseMessage]] = {
        "system": SystemMessage,
        "developer": SystemMessage,
        "user": HumanMessage,
        "assistant": AIMessage,
    }
    return [kinds[m.role](content=m.text()) for m in messages]


def make_job(
    server: Server, body: GenerationRequest, messages: list[BaseMessage], raw: str | None = None
) -> Job:
    """The job for a request, its prompt counted with the model's tokenizer and checked against the
    window: an explicit max_tokens that does not fit is a 400 naming the limit."""
    llm = server.llm
    ids: list[int] | None = None
    if isinstance(llm, LocalChatModel):
        ids = llm.get_token_ids(raw) if raw is not None else llm._prompt_ids(messages)
        prompt_tokens = len(ids)
    else:
        prompt_tokens = (
            llm.get_num_tokens(raw) if raw is not None else llm.get_num_tokens_from_messages(messages)
        )
    window = int(getattr(llm, "context_window", 0) or 0)
    wanted = body.limit()
    field_name = "prompt" if raw is not None else "messages"
    if window:
        room = window - prompt_tokens
        if wanted is not None and wanted > room:
            raise ContextTooLong(prompt_tokens + wanted, window, f"{field_name} plus max_tokens")
        if room < 1:
            raise ContextTooLong(prompt_tokens + 1, window, field_name)
    max_tokens = wanted or min(
        server.settings.llm.max_new_tokens, window - prompt_tokens if window else 10**9
    )
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=body.temperature if body.temperature is not None else server.settings.llm.temperature,
        top_p=body.top_p if body.top_p is not None else 1.0,
        seed=body.seed,
        stop=body.stops(),
        ignore_eos=body.ignore_eos,
    )
    return Job(
        messages, sampling, sink=lambda e: None, prompt_ids=ids, raw_prompt=raw, prompt_tokens=prompt_tokens
    )


def _async_sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> Callable[[Event], None]:
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


async def _watching(request: Request, cancelled: threading.Event, work: Any) -> Any:
    """Await `work`, cancelling the generation if the client disconnects first."""
    watcher = asyncio.ensure_future(_until_disconnect(request, cancelled))
    try:
        return await work
    finally:
        watcher.cancel()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@dataclass
class Ending:
    """How a generation ended, as the response says it: finish reason, usage, extra fields (a RAG
    model's `sources`) and, when the chain cleaned it, the final text of a non-streamed answer."""

    reason: str
    usage: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


async def respond(
    request: Request,
    shape: Shape,
    events: asyncio.Queue[Event],
    cancelled: threading.Event,
    stream: bool,
    ending: Callable[[Any], Ending],
) -> Any:
    """The one answer loop: ("text", str) events, then ("done", x) (`ending(x)` says how it ended)
    or ("error", exception), as one response or as an event stream. However it ends (done, client
    gone, handler cancelled), `cancelled` is set, which stops the generation at its next token."""
    if not stream:

        async def collect() -> tuple[str, Ending]:
            parts: list[str] = []
            while True:
                kind, value = await events.get()
                if kind == "text":
                    parts.append(value)
                elif kind == "error":
                    raise value
                else:
                    return "".join(parts), ending(value)

        try:
            text, end = await _watching(request, cancelled, collect())
        finally:
            cancelled.set()  # no-op when done; stops the rows when the handler was cancelled
        return shape.whole(end.text if end.text is not None else text, end.reason, end.usage, **end.extra)

    async def frames() -> AsyncIterator[str]:
        try:
            if shape.chat:
                yield sse(shape.chunk({"role": "assistant", "content": ""}))
            while True:
                kind, value = await events.get()
                if kind == "text":
                    yield sse(shape.chunk({"content": value} if shape.chat else value))
                elif kind == "error":
                    api = as_api_error(value)
                    yield sse(error_body(api.message, api.type, api.param, api.code))
                    break
                else:
                    end = ending(value)
                    yield sse(shape.chunk({} if shape.chat else "", end.reason, **end.extra))
                    if shape.include_usage:
                        yield sse(shape.usage_chunk(end.usage))
                    break
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()  # the client left mid-stream: the row stops at its next token

    return event_stream(frames())


async def generate(server: Server, job: Job, body: GenerationRequest, request: Request, *, chat: bool) -> Any:
    """A chat or text completion of the local model through the batcher."""
    events: asyncio.Queue[Event] = asyncio.Queue()
    job.sink = _async_sink(asyncio.get_running_loop(), events)
    server.batcher.submit(job)  # ServerBusy (503) past the queue bound
    shape = Shape(new_id("chatcmpl" if chat else "cmpl"), now(), body.model, chat, body.include_usage())

    def ending(finish: Finish) -> Ending:
        return Ending(finish.reason, usage(job.prompt_tokens, finish.completion_tokens))

    return await respond(request, shape, events, job.cancelled, body.stream, ending)


def event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@dataclass
class Shape:
    """The response and chunk dicts of one chat or text completion."""

    id: str
    created: int
    model: str
    chat: bool
    include_usage: bool

    def _base(self, stream: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (
            ".chunk" if stream and self.chat else ""
        )
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, text: str, reason: str, used: dict[str, int], **extra: Any) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = reason
        return {**self._base(False), "choices": [choice], "usage": used, **extra}

    def chunk(self, delta: Any, reason: str | None = None, **extra: Any) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None}
        choice["finish_reason"] = reason
        out = {**self._base(True), "choices": [choice], **extra}
        if self.include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, used: dict[str, int]) -> dict[str, Any]:
        return {**self._base(True), "choices": [], "usage": used}


# --------------------------------------------------------------------------- RAG models


def sources_of(answer: Any) -> list[dict[str, Any]]:
    """The answer's citations as the `sources` field: number, source, page, chunk id, quote."""
    return [
        {"number": c.number, "source": c.source, "page": c.page, "chunk_id": c.chunk_id, "quote": c.quote}
        for c in answer.citations
    ]


def _rag_chain(server: Server, body: ChatRequest, llm: QueuedChatModel) -> Any:
    from lectern.rag.qa import build_qa_chain
    from lectern.rag.retrieval import Filters
    from lectern.rag.workspace import qa_options

    ws = server.workspace(body.model[len(RAG_PREFIX) :])
    searcher = ws.searcher()
    retrieval: dict[str, Any] = {}
    if body.k is not None:
        retrieval["k"] = body.k
    if body.mode is not None:
        retrieval["mode"] = body.mode
    if body.sources:
        retrieval["filters"] = Filters(tuple(ws._source(s) for s in body.sources))
    retriever = ws.retriever(searcher, **retrieval)
    options = {
        **qa_options(ws.settings),
        "term_weights": searcher.term_weights,
        "max_new_tokens": llm.max_new_tokens,
    }
    if body.k is not None:
        options["k"] = body.k
    return build_qa_chain(llm, retriever, **options)


async def rag_chat(server: Server, body: ChatRequest, request: Request) -> Any:
    """The collection's QA chain on the last user message; citations come back as `sources`."""
    from lectern.rag.types import Answer

    question = next((m.text() for m in reversed(body.messages) if m.role == "user"), "").strip()
    if not question:
        raise APIError("a RAG model needs a user message with the question", param="messages")
    name = body.model[len(RAG_PREFIX) :]
    if name not in server.collections():
        raise UnknownModel(f"model {body.model!r} not found: no collection {name!r}", param="model",
                           code="model_not_found")  # fmt: skip
    server.batcher.check_capacity()
    llm = server.queued(body.limit(), body.temperature)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()
    sink = _async_sink(loop, events)

    def work() -> None:  # retrieval (the embedder's first load too) off the event loop
        try:
            chain = _rag_chain(server, body, llm)
            for part in chain.stream_answer(question):
                sink(("done", part) if isinstance(part, Answer) else ("text", part))
        except Exception as error:
            sink(("error", error))

    threading.Thread(target=work, name="lectern-rag", daemon=True).start()

    def used() -> dict[str, int]:
        return usage(sum(p for p, _ in llm.usage), sum(c for _, c in llm.usage))

    shape = Shape(new_id("chatcmpl"), now(), body.model, True, body.include_usage())

    def ending(answer: Answer) -> Ending:
        return Ending("stop", used(), {"sources": sources_of(answer)}, text=answer.answer)

    return await respond(request, shape, events, llm.cancelled, body.stream, ending)


# --------------------------------------------------------------------------- embeddings and summaries


def embed(server: Server, body: EmbeddingRequest) -> dict[str, Any]:
    """The ingestion embedder over strings or token ids (the embedder's own tokenizer's ids)."""
    embedder = server.embedder()
    raw = body.input
    items: list[Any] = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    texts = [item if isinstance(item, str) else _decode(embedder, item) for item in items]
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise APIError(f"this embedder has {embedder.dimension} dimensions, not {body.dimensions}",
                       param="dimensions")  # fmt: skip
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32) if texts else np.zeros((0, 0), np.float32)
    tokens = sum(len(o) for o in embedder.offsets(texts))
    data = []
    for i, vector in enumerate(vectors):
        value: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else [float(x) for x in vector]
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _decode(embedder: Any, ids: list[int]) -> str:
    file = embedder.tokenizer_file
    if not file:
        return " ".join(str(i) for i in ids)  # the fake embedder has no tokenizer: ids as words
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(file)
    if any(i < 0 or i >= tokenizer.get_vocab_size() for i in ids):
        raise APIError(f"token ids must be below the embedder's vocabulary size {tokenizer.get_vocab_size()}",
                       param="input")  # fmt: skip
    return str(tokenizer.decode(ids))


async def summarize_request(server: Server, body: SummarizeRequest, request: Request) -> dict[str, Any]:
    from lectern.rag.summarize import summarize

    if body.source is not None and body.query is not None:
        raise APIError("give a source or a query, not both", param="source")
    server.batcher.check_capacity()
    ws = server.workspace(body.collection or server.options.collection or server.settings.collection)
    llm = server.queued(body.max_tokens, None)

    def work() -> Any:
        docs, scope = ws.scope_documents(source=body.source, query=body.query)
        return summarize(llm, docs, method=body.method, max_new_tokens=llm.max_new_tokens,
                         batch_size=server.options.max_batch, scope=scope)  # fmt: skip

    try:
        result = await _watching(request, llm.cancelled, asyncio.to_thread(work))
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
