"""What the two backends that run a model here share (local: transformers; llamacpp: llama.cpp):
the prompt is the model's own chat template rendered over the messages (and the tools), counted
with the model's own tokenizer; tools are bound with that template and `tool_choice` enforced by
the start the reply is forced to and the call's schema (rag.llm.structured); a reply with
`<tool_call>` blocks comes back as tool calls. `response_schema=SCHEMA` on a call makes the reply
JSON that validates against it, on both backends.

A backend gives `_chat_template`, `_prompt_text`, `get_token_ids` and `_complete` (one prompt's
reply text); `_generate`, `bind_tools`, `tool_prompt` and token counting are here, once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool

from lectern.errors import ToolsUnsupported
from lectern.rag.llm.base import LecternChatModel, cut_at_stop
from lectern.rag.llm.structured import tool_call_schema
from lectern.rag.llm.tool_calls import (
    forced_start,
    normalize_tool_choice,
    parse_tool_calls,
    supports_tools,
)


class TemplatedChatModel(LecternChatModel):
    """A model run in this process, prompted through its own chat template."""

    model_name: str = "local"
    chosen_because: str = ""  # packaged:auto: why this model was picked for this machine
    backend_because: str = ""  # llm.backend = "auto": which backend runs it, and why
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    response_schema: dict[str, Any] | None = None  # a copy's replies are JSON under it (a call's wins)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """What changes a reply to the same prompt: LangChain's cache keys on it (bench.answer_quality
        shares calls between configurations through it), so every generation parameter is here."""
        return {
            "model_name": self.model_name,
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_new_tokens,
            "response_schema": self.response_schema,
        }

    # what a backend gives
    def _chat_template(self) -> str | None:
        raise NotImplementedError

    def _prompt_text(self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None) -> str:
        raise NotImplementedError

    def _complete(self, prompt: str, stop: list[str] | None, **overrides: Any) -> tuple[str, UsageMetadata]:
        """The reply to a rendered prompt (cut at a stop string), and its token usage."""
        raise NotImplementedError

    def stream_text(self, prompt: str, stop: list[str] | None = None, **overrides: Any) -> Iterator[str]:
        """The reply to `prompt` as written (a rendered chat prompt, or a raw one: `lectern serve`'s
        /v1/completions), piece by piece, cut at a stop string."""
        raise NotImplementedError

    # shared
    def _prompt_ids(
        self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        return self.get_token_ids(self._prompt_text(messages, tools))

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return len(self._prompt_ids(messages, openai_tools(tools)))

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with `tools` rendered by its own chat template; replies with `<tool_call>` blocks
        come back as AIMessage.tool_calls (rag.llm.tool_calls). ToolsUnsupported, naming the model,
        when the template has no tools section. `tool_choice` ("auto", "none", "required", a tool's
        name, OpenAI's dict) is enforced by the start the reply is given (tool_calls.forced_start) and
        the call decoded under its schema (structured.tool_call_schema)."""
        if not supports_tools(self._chat_template()):
            raise ToolsUnsupported(self.model_name)
        specs = openai_tools(tools) or []
        choice = normalize_tool_choice(tool_choice, [t["function"]["name"] for t in specs])
        options = {"tool_choice": choice} if choice != "auto" else {}
        return self.bind(tools=specs, **options, **kwargs)

    def tool_prompt(
        self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None, tool_choice: Any = None
    ) -> tuple[str, str]:
        """(the prompt, the start the reply is forced to) for `messages` with `tools` under
        `tool_choice`: "none" renders no tools; "required" or a name opens the reply's tool call.
        The prompt ends with the forced start; the reply's text is that start plus what follows."""
        if not tools:
            return self._prompt_text(messages), ""
        choice = normalize_tool_choice(tool_choice, [t["function"]["name"] for t in tools])
        if choice == "none":
            return self._prompt_text(messages), ""
        if not supports_tools(self._chat_template()):
            raise ToolsUnsupported(self.model_name)
        start = forced_start(choice)
        return self._prompt_text(messages, tools) + start, start

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = kwargs.pop("tools", None)
        choice = kwargs.pop("tool_choice", None)
        if tools:
            choice = normalize_tool_choice(choice, [t["function"]["name"] for t in tools])
        prompt, start = self.tool_prompt(messages, tools, choice)
        call = tool_call_schema(tools, choice) if tools else None
        if call is not None:  # a forced call: its name and arguments decoded under its schema
            kwargs["response_schema"] = call
        reply, used = self._complete(prompt, stop, **kwargs)
        text = start + cut_at_stop(reply, stop)
        if not tools or choice == "none":
            message = AIMessage(content=text, usage_metadata=used)
        else:
            content, calls, invalid = parse_tool_calls(text)
            message = AIMessage(
                content=content, tool_calls=calls, invalid_tool_calls=invalid, usage_metadata=used
            )
        return ChatResult(generations=[ChatGeneration(message=message)])


def usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
    """A reply's token counts as LangChain carries them (AIMessage.usage_metadata)."""
    return UsageMetadata(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def openai_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Tools (langchain tools, functions, pydantic models or OpenAI dicts) in the OpenAI form that chat
    templates render."""
    if not tools:
        return None
    return [convert_to_openai_tool(t) for t in tools]


def render_chat_template(template: str, messages: list[dict[str, Any]], **variables: Any) -> str:
    """`template` rendered as transformers' apply_chat_template renders it (the same jinja2 sandbox,
    `tojson` without HTML escaping, `raise_exception`, `strftime_now`), without importing
    transformers (and torch with it): the llamacpp backend reads the template from the GGUF."""
    return str(_compiled(template).render(messages=messages, **variables))


@lru_cache(maxsize=4)
def _compiled(template: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
