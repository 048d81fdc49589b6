"""The OpenAI wire format: request bodies (validated; a failure is a 400 in OpenAI's error shape) and
the response and stream-chunk dicts. lectern's own extras are documented fields: `k`, `mode` and
`sources` for a RAG model, `ignore_eos` (as vLLM) for benchmarks.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from lectern.errors import APIError

MAX_STOPS = 4  # as OpenAI
RAG_PREFIX = "lectern-rag/"  # a RAG model per collection: lectern-rag/<collection>
EMBED_MODEL = "lectern-embed"


class StreamOptions(BaseModel):
    include_usage: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(
                    f"content part of type {part.get('type')!r} is not supported: text only",
                    param="messages",
                    code="unsupported_content",
                )
            parts.append(part["text"])
        return "".join(parts)


class GenerationRequest(BaseModel):
    """What chat and text completions share. Unknown OpenAI fields are accepted and ignored, as a
    server that does not log probabilities ignores `logprobs: false`; ones that would change the
    answer (n > 1, tools, logprobs) are refused."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
    tools: list[Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        if isinstance(stop, list) and any(not s for s in stop):
            raise ValueError("stop sequences must not be empty")
        return stop

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("tools are not supported")
        return tools

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1)
    # RAG models only: how many chunks, which retrieval mode, which sources to search
    k: int | None = Field(None, ge=1, le=50)
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    sources: list[str] | None = None


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("one prompt per request (a list of exactly one string)")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("echo is not supported")
        return echo

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(isinstance(v, list) and not v for v in value)):
            raise ValueError("input must not be empty")
        return value


class SummarizeRequest(BaseModel):
    """lectern's own: summarize one document, the chunks a query finds, or the whole collection."""

    model_config = ConfigDict(extra="forbid")

    collection: str | None = None
    source: str | None = None
    query: str | None = None
    method: Literal["auto", "stuff", "refine", "map_reduce"] = "auto"
    max_tokens: int | None = Field(None, ge=1)


# --------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_card(model_id: str, created: int, owned_by: str = "lectern") -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


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
