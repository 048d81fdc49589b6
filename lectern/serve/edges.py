"""The HTTP edges: the API key and the body limit, checked before any route; every error turned into
OpenAI's error body `{"error": {message, type, param, code}}` with its status; and a bug in a route
answered with one 500 (`Connection: close`), one log line and a trace file, never a dropped socket."""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lectern.errors import (
    APIError,
    BodyTooLarge,
    CollectionNotFound,
    ContextTooLong,
    DocumentNotFound,
    InvalidInput,
    InvalidName,
    LecternError,
    LLMServerError,
    LLMUnavailable,
    NothingToSummarize,
    Unauthorized,
    UnknownKey,
    report_bug,
)
from lectern.serve.protocol import (
    error_body,
)

if TYPE_CHECKING:
    from lectern.serve.server import ServeOptions

log = logging.getLogger("lectern.serve")


PUBLIC_PATHS = ("/health", "/v1/models", "/openapi.json")
PUBLIC_PREFIXES = ("/v1/models/",)


class Gate:
    """Pure ASGI (streams and disconnects pass through untouched): refuse too large a body (413) and
    a missing, empty or wrong key (401) before the request reaches a route; answer whatever a route
    raised that no handler took as one 500 that closes the connection; count the failed requests."""

    def __init__(self, app: ASGIApp, options: ServeOptions, failures: Counter[str]) -> None:
        self.app = app
        self.limit = options.max_body_bytes
        self.keys = [k.encode() for k in options.api_keys]
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        path = scope["path"]
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if self.keys and not public and not self._authorized(headers):
            await _send_error(send, Unauthorized("missing or invalid API key", code="invalid_api_key"))
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_error(send, self._too_large())
            return
        received = 0
        started = False

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large()
            return message

        async def counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 500 and message["status"] != 503:  # 503: busy, counted as rejected
                    self.failures["failed"] += 1
            await send(message)

        try:
            await self.app(scope, limited, counted)
        except ClientDisconnect:  # gone while its body was read: nobody to answer
            return
        except Exception as error:
            api = as_api_error(error, f"{scope.get('method')} {path}")
            if not started:  # else the response is half sent: nothing more can be said on it
                await _send_error(counted, api, close=True)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body over the limit of {self.limit} bytes", code="body_too_large")

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"authorization", b"")
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        if not token:  # a missing or empty header never matches, whatever the keys
            return False
        ok = False
        for key in self.keys:  # every key compared, each in constant time
            ok |= hmac.compare_digest(token, key)
        return ok


def _headers(error: APIError) -> dict[str, str]:
    """The headers an error carries: how long to wait (503), how to authenticate (401)."""
    if error.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if error.status == 503:  # whole seconds (HTTP's), and milliseconds, which the openai client reads first
        wait = float(getattr(error, "retry_after_s", 1.0))
        return {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(round(wait * 1000))}
    return {}


async def _send_error(send: Send, error: APIError, close: bool = False) -> None:
    body = json.dumps(error_body(error.message, error.type, error.param, error.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in _headers(error).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


LIBRARY_ERRORS: dict[type[LecternError], tuple[int, str, str | None]] = {
    ContextTooLong: (400, "invalid_request_error", "context_length_exceeded"),
    CollectionNotFound: (404, "not_found_error", "collection_not_found"),
    DocumentNotFound: (404, "not_found_error", "document_not_found"),
    InvalidName: (400, "invalid_request_error", None),
    InvalidInput: (400, "invalid_request_error", None),
    UnknownKey: (400, "invalid_request_error", None),
    NothingToSummarize: (400, "invalid_request_error", None),
    LLMUnavailable: (502, "upstream_error", None),
    LLMServerError: (502, "upstream_error", None),
}


def as_api_error(error: BaseException, context: str = "lectern serve") -> APIError:
    """Any exception as the APIError the client sees (library errors keep their sentence). A bug is
    logged here, once: one line naming its trace file (`context`: the request)."""
    if isinstance(error, APIError):
        return error
    for kind, (status, type_, code) in LIBRARY_ERRORS.items():
        if isinstance(error, kind):
            return APIError(str(error), code=code, status=status, type=type_)
    log.error("internal error in %s: %s", context, report_bug(error, f"lectern serve: {context}"))
    return APIError(f"internal error: {type(error).__name__}", status=500, type="server_error")


def error_response(error: BaseException, headers: dict[str, str] | None = None) -> JSONResponse:
    api = as_api_error(error)
    body = error_body(api.message, api.type, api.param, api.code)
    return JSONResponse(body, api.status, {**_headers(api), **(headers or {})})


def http_error(error: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method: with its `Allow`) in OpenAI's shape."""
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    api = APIError(str(error.detail), status=error.status_code, type=kind)
    return error_response(api, dict(error.headers or {}))
