"""The `openai` backend: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, lectern serve...)
over plain httpx, with the server's errors turned into LLMUnavailable / LLMServerError."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from lectern.errors import LLMServerError, LLMUnavailable, ModelNotFound
from lectern.rag.llm.base import LecternChatModel
from lectern.rag.llm.tool_calls import from_openai_tool_calls, openai_chat_dicts
from lectern.rag.settings import LLMSettings

DEFAULT_OPENAI_WINDOW = 4096


def estimate_tokens(text: str) -> int:
    """A conservative (over-)estimate when no tokenizer is at hand: one token per 3 UTF-8 bytes,
    at least one per word. BPE tokenizers average ~4 bytes per token on English prose."""
    return max(math.ceil(len(text.encode("utf-8")) / 3), len(text.split()))


class OpenAIChatModel(LecternChatModel):
    """Any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, LM Studio...) over plain httpx."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str
    model_name: str
    api_key: str | None = None
    temperature: float = 0.0
    timeout_s: float = 120.0
    tokenizer: Any = Field(default=None, exclude=True, repr=False)

    @property
    def _llm_type(self) -> str:
        return "lectern-openai"

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")

    def get_num_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        return estimate_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Content tokens plus 4 per message and 3 for the reply's priming (OpenAI's own rule)."""
        return sum(self.get_num_tokens(m.text) + 4 for m in messages) + 3

    def _payload(
        self, messages: list[BaseMessage], stop: list[str] | None, stream: bool, **kw: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": openai_chat_dicts(messages),
            "temperature": float(kw.get("temperature", self.temperature)),
            "max_tokens": int(kw.get("max_new_tokens", self.max_new_tokens)),
            "stream": stream,
        }
        if stop:
            payload["stop"] = stop
        for key in ("tools", "tool_choice"):  # passed through as given (bind_tools)
            if kw.get(key):
                payload[key] = kw[key]
        return payload

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | dict[str, Any] | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with `tools` (and `tool_choice`: auto, none, required or a tool's name) sent
        to the server; its `tool_calls` come back as AIMessage.tool_calls."""
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        options = {"tool_choice": tool_choice} if tool_choice else {}
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **options, **kwargs)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        message = response.text.strip()
        try:
            body = response.json()
            error = body.get("error", body) if isinstance(body, dict) else body
            message = str(error.get("message", error) if isinstance(error, dict) else error)
        except ValueError:
            pass  # not JSON: keep the raw text as the server's message
        raise LLMServerError(self.url, response.status_code, message or response.reason_phrase)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                response = client.post(
                    self.url, json=self._payload(messages, stop, False, **kwargs), headers=self._headers()
                )
                self._raise_for(response)
                body = response.json()
        except httpx.TransportError as error:
            raise LLMUnavailable(self.url, f"{type(error).__name__}: {error}") from error
        reply = body["choices"][0]["message"]
        calls, invalid = from_openai_tool_calls(reply.get("tool_calls"))
        message = AIMessage(content=reply.get("content") or "", tool_calls=calls, invalid_tool_calls=invalid)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Server-sent events: `data: {json}` lines until `data: [DONE]`; with tools bound, the whole
        reply as one chunk (tool calls parsed from the complete response)."""
        if kwargs.get("tools"):
            yield self._whole_reply(messages, stop, run_manager, **kwargs)
            return
        try:
            with (
                httpx.Client(timeout=self.timeout_s) as client,
                client.stream(
                    "POST",
                    self.url,
                    json=self._payload(messages, stop, True, **kwargs),
                    headers=self._headers(),
                ) as response,
            ):
                self._raise_for(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    choices = event.get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content") or ""
                    if piece:
                        chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                        if run_manager:
                            run_manager.on_llm_new_token(piece, chunk=chunk)
                        yield chunk
        except httpx.TransportError as error:
            raise LLMUnavailable(self.url, f"{type(error).__name__}: {error}") from error


def build_openai(settings: LLMSettings, models_dir: Path) -> OpenAIChatModel:
    tokenizer = None
    if settings.tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer, local_files_only=True)
        except OSError as error:
            raise ModelNotFound(settings.tokenizer, f"tokenizer not found locally ({error})") from error
    return OpenAIChatModel(
        base_url=settings.base_url or "http://127.0.0.1:8000",
        model_name=settings.model,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window or DEFAULT_OPENAI_WINDOW,
        timeout_s=settings.timeout_s,
        tokenizer=tokenizer,
    )
