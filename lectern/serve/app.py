"""The FastAPI app of `lectern serve`: the routes over what they share (server.py: the loaded model,
its worker and the collections).

Every error leaves in OpenAI's shape (edges.py); chat and text completions go through the batcher
(completions.py), RAG models and summaries through lectern's chains (rag_models.py), embeddings through the
ingestion embedder (embeddings.py); answers.py is the one loop that turns a generation into a
response or an event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI, Request
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from lectern.errors import (
    APIError,
    LecternError,
    UnknownModel,
)
from lectern.rag.settings import Settings
from lectern.serve.completions import generate, make_job, to_messages
from lectern.serve.edges import Gate, error_response, http_error
from lectern.serve.embeddings import embed
from lectern.serve.protocol import (
    EMBED_MODEL,
    RAG_PREFIX,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    SummarizeRequest,
    model_card,
    parse_body,
)
from lectern.serve.rag_models import rag_chat, summarize_request
from lectern.serve.server import ServeOptions, Server, make_batcher

if TYPE_CHECKING:
    import uvicorn


BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/v1/summarize": SummarizeRequest,
}
"""Each POST route's body, for the OpenAPI document (the routes parse their bodies themselves)."""


T = TypeVar("T", bound=BaseModel)


def build_app(settings: Settings, llm: BaseChatModel, options: ServeOptions | None = None) -> FastAPI:
    """The server over an already loaded chat model (the CLI loads it; tests pass the fake)."""
    options = options or ServeOptions()
    batcher = make_batcher(llm, max_batch=options.max_batch, max_queue=options.max_queue)
    server = Server(settings, llm, options, batcher)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="lectern", version=lectern_version(), docs_url=None, redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    app.state.server = server
    app.add_middleware(Gate, options=options, failures=server.failures)  # a bug's 500: there
    app.add_exception_handler(HTTPException, lambda r, e: http_error(e))  # type: ignore[arg-type]
    for kind in (APIError, LecternError):
        app.add_exception_handler(kind, lambda r, e: error_response(e))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": server.model_id, "generation": batcher.snapshot(),
                "requests": {"failed": server.failures["failed"]}}  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(i, server.created) for i in server.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in server.model_ids():
            raise UnknownModel(f"model {model_id!r} not found; this server has {', '.join(server.model_ids())}",
                               param="model", code="model_not_found")  # fmt: skip
        return model_card(model_id, server.created)

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
            if body.tools:
                raise APIError(f"{body.model} answers from its collection and takes no tools; send tools to "
                               f"{server.model_id}", param="tools", code="invalid_request")  # fmt: skip
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

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with each POST route's body schema (the routes read their bodies
        themselves, so FastAPI cannot see them) and the bearer key."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = doc.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for path, body in BODIES.items():
                schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[body.__name__] = schema
                ref = {"$ref": f"#/components/schemas/{body.__name__}"}
                doc["paths"][path]["post"]["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref}},
                }
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            doc["security"] = [{"bearer": []}] if options.api_keys else []
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def lectern_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lectern")
    except PackageNotFoundError:
        return "0"


def uvicorn_server(app: FastAPI, **config: Any) -> uvicorn.Server:
    """uvicorn serving `app`; on SIGTERM or Ctrl-C the open streams end with an error frame and
    `[DONE]` (Server.shut_down) before uvicorn's graceful shutdown waits for their connections."""
    import uvicorn

    class Serving(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.server.shut_down()
            super().handle_exit(sig, frame)

    return Serving(uvicorn.Config(app, timeout_graceful_shutdown=5, **config))


async def parse(request: Request, model: type[T]) -> T:
    """The body as `model`, whatever the Content-Type (curl's -d sends form-encoded); what is wrong
    with it is a 400 naming the field (protocol.parse_body)."""
    return parse_body(await request.body(), model)


def check_model(server: Server, name: str) -> None:
    if not server.is_local_model(name):
        known = [server.model_id, *(RAG_PREFIX + c for c in server.collections())]
        raise UnknownModel(
            f"model {name!r} not found; this server has {', '.join(known)}",
            param="model",
            code="model_not_found",
        )
