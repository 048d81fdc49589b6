"""The OpenAI wire format: request bodies (validated; a failure is a 400 in OpenAI's error shape) and
the response and stream-chunk dicts. lectern's own extras are documented fields: `k`, `mode` and
`sources` for a RAG model, `ignore_eos` (as vLLM) for benchmarks. Chat requests may carry OpenAI's
`tools` and `tool_choice`, and conversations with assistant `tool_calls` and `tool` results.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from lectern.errors import APIError, InvalidInput

MAX_STOPS = 4  # as OpenAI
RAG_PREFIX = "lectern-rag/"  # a RAG model per collection: lectern-rag/<collection>
EMBED_MODEL = "lectern-embed"
MAX_DEPTH = 64
"""How deeply a body's arrays and objects may nest (a tool's JSON schema needs a handful): checked
on the raw bytes before parsing, so 10,000 brackets are a 400, not a RecursionError."""
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # a signed 64-bit seed, as OpenAI's and torch's
Name = Annotated[str, Field(max_length=256)]  # a model, a stop string
DocPath = Annotated[str, Field(min_length=1, max_length=4096)]  # a document's path (PATH_MAX)

T = TypeVar("T", bound=BaseModel)


# --------------------------------------------------------------------------- reading a body


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def nesting(raw: bytes) -> int:
    """How deeply the JSON text `raw` nests, counted without parsing it (strings skipped)."""
    brackets = np.frombuffer(_NOT_BRACKET.sub(b"", _STRING.sub(b"", raw)), dtype=np.uint8)
    if not len(brackets):
        return 0
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1)).max())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _lone_surrogate(data: Any) -> list[str | int] | None:
    """Where in parsed JSON a string (or key) holds a lone UTF-16 surrogate ("\\ud800"), which no
    tokenizer can encode; None when none does."""
    stack: list[tuple[list[str | int], Any]] = [([], data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return [*path, key.encode("utf-8", "backslashreplace").decode()]
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, i], item) for i, item in enumerate(value))
    return None


def parse_body(raw: bytes, model: type[T]) -> T:
    """A request body as `model`, or the 400 that names what is wrong: not JSON (NaN and Infinity
    included), nested deeper than MAX_DEPTH, a string with a lone surrogate, or the first field that
    fails validation. Everything here runs before any model work."""
    if nesting(raw) > MAX_DEPTH:
        raise APIError(f"the body nests deeper than {MAX_DEPTH} levels", code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise APIError("the body is not valid JSON", code="invalid_json") from None
    where = _lone_surrogate(data)
    if where is not None:
        field = ".".join(map(str, where)) or "body"
        raise APIError(f"{field}: a string holds a lone UTF-16 surrogate (not a character)",
                       param=str(where[0]) if where else None, code="invalid_string")  # fmt: skip
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        loc = [str(p) for p in problem.get("loc", ())]
        at = ".".join(loc)
        message = f"{at}: {problem['msg']}" if at else str(problem["msg"])
        raise APIError(message, param=loc[0] if loc else None, code="invalid_request") from None


class StreamOptions(BaseModel):
    include_usage: bool = False


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    arguments: str  # JSON text, as OpenAI sends it

    def args(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(f"arguments of {self.name!r} are not a JSON object")
        return value


class ToolCallIn(BaseModel):
    """A tool call an earlier assistant turn made, sent back with the conversation."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict[str, Any] | None = None

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "object") != "object":
            raise ValueError("parameters must be a JSON Schema of type 'object'")
        return value


class ToolSpec(BaseModel):
    """One of a request's `tools`: `{"type": "function", "function": {"name", "description"?, "parameters"?}}`."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionSpec


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: dict[str, str]

    @field_validator("function")
    @classmethod
    def _has_name(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("name"):
            raise ValueError("a named tool_choice needs function.name")
        return value


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool result: the call it answers

    @model_validator(mode="after")
    def _tool_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        for call in self.tool_calls or []:
            call.function.args()  # arguments that are not a JSON object: a 400 now, not a bad prompt
        return self

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
    answer (n > 1, logprobs) are refused."""

    model_config = ConfigDict(extra="ignore")

    model: Name
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: Name | list[Name] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
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
    sources: list[DocPath] | None = Field(None, max_length=1000)  # a document's path, see rag_models.py
    # the local model's tool calling
    tools: list[ToolSpec] | None = Field(None, min_length=1)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; the model may write several calls either way
    # text, json_object or json_schema: JSON by constrained decoding (rag.llm.structured)
    response_format: dict[str, Any] | None = None

    def response_schema(self) -> dict[str, Any] | None:
        """The JSON schema `response_format` asks for (None: free text); a 400 naming it when it is
        not one both local backends can decode under."""
        from lectern.rag.llm.structured import response_schema

        try:
            return response_schema(self.response_format)
        except InvalidInput as error:
            raise APIError(str(error), param="response_format", code="invalid_request") from None

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """The tools in the OpenAI form chat templates render."""
        if not self.tools:
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]

    def choice(self) -> str:
        """tool_choice as "auto", "none", "required" or a tool's name; an APIError (param
        tool_choice) when it names no given tool or comes without tools."""
        choice = self.tool_choice
        if choice is None:
            return "auto"
        if not self.tools:
            raise APIError("tool_choice is only allowed when tools are given", param="tool_choice",
                           code="invalid_request")  # fmt: skip
        if isinstance(choice, str):
            return choice
        name = choice.function["name"]
        names = [t.function.name for t in self.tools]
        if name not in names:
            raise APIError(f"tool_choice names {name!r}, which is not one of the tools ({', '.join(names)})",
                           param="tool_choice", code="invalid_request")  # fmt: skip
        return name


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    echo: bool = False
    tools: list[Any] | None = None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None) -> list[Any] | None:
        if tools:
            raise ValueError("tools are for /v1/chat/completions")
        return tools

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("one prompt per request (a list of exactly one string)")
        if not (prompt if isinstance(prompt, str) else prompt[0]):
            raise ValueError("the prompt is empty: give the text to continue")
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

    model: Name
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

    collection: Name | None = None
    source: DocPath | None = None  # a document's path, see rag_models.py
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

    def whole(
        self,
        text: str,
        reason: str,
        used: dict[str, int],
        tool_calls: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:  # as OpenAI: content null when the reply is only calls
                message.update(content=text or None, tool_calls=tool_calls)
            choice: dict[str, Any] = {"index": 0, "message": message}
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
