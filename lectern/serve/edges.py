"""The HTTP edges: the API key and the body limit, checked before any route, and every error turned
into OpenAI's error body `{"error": {message, type, param, code}}` with its status."""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse
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
)
from lectern.serve.protocol import (
    error_body,
)

if TYPE_CHECKING:
    from lectern.serve.app import ServeOptions

log = logging.getLogger("lectern.serve")


PUBLIC_PATHS = ("/health", "/v1/models")


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


def http_error(error: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in OpenAI's shape."""
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return error_response(APIError(str(error.detail), status=error.status_code, type=kind))
