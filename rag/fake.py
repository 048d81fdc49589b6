"""A deterministic chat model shipped in the package: unit tests and the model-free demo use it.

Rules, in order, on the last user message (and the system message for the instruction):
- "summar" in the instruction (system message or the user message's first line): the first two
  sentences of the text after that first line;
- a numbered source (`[1] text`, `[1]: text` or `Source 1: text`): the first sentence of the first
  one, followed by its citation, e.g. "Paris is the capital of France. [1]";
- otherwise "I don't know based on the documents."
Token counting is whitespace words (documented approximation, no tokenizer needed).

With tools bound (`bind_tools`), it plays a minimal agent: until a tool has answered it calls
`search` with the question; then it answers from the tool results by the source rule above.
`ScriptedChatModel` replies with given texts in turn (a batch's prompts in order), for tests of the
agent loop and of what a summary's steps pass on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from lectern.rag.llm.base import LecternChatModel
from lectern.rag.llm.tool_calls import format_tool_call, parse_tool_calls

DONT_KNOW = "I don't know based on the documents."
# a numbered source, its "(file p.2: title)" label skipped
_SOURCE = re.compile(
    r"^\s*(?:\[(\d+)\]:?|Source\s+(\d+):)\s*(?:\([^)\n]*\)\s*)?(\S.*)$", re.MULTILINE | re.IGNORECASE
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def first_sentences(text: str, n: int = 1) -> str:
    """The first `n` sentences of `text`, whitespace collapsed."""
    flat = " ".join(text.split())
    parts = [p for p in _SENTENCE.split(flat) if not re.fullmatch(r"[\d.()]+", p)]  # "2." numbers a heading
    return " ".join(parts[:n]).strip()


class _WordCountingModel(LecternChatModel):
    """What both fakes share: a token is a whitespace-separated word, bound tools travel as
    OpenAI-shaped dicts in the call's options, and a batch is sequential."""

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return sum(len(m.text.split()) for m in messages)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """One prompt after another, so that calls are recorded, and scripted replies given, in the
        batch's order."""
        return [cast(AIMessage, self.invoke(item, **kwargs)) for item in inputs]


class FakeChatModel(_WordCountingModel):
    """Answers by quoting and citing the first source, summarizes by leading sentences; records calls."""

    context_window: int = 2048
    summary_sentences: int = 2
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    batch_sizes: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "lectern-fake"

    def respond(self, messages: Sequence[BaseMessage]) -> str:
        """The deterministic reply to `messages` (see the module docstring for the rules)."""
        user = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        system = " ".join(m.text for m in messages if isinstance(m, SystemMessage))
        first_line, _, rest = user.strip().partition("\n")
        body = None
        if "summar" in system.lower():
            body = user
        elif "summar" in first_line.lower():
            body = rest if rest.strip() else first_line
        if body is not None:
            return first_sentences(body, self.summary_sentences) or DONT_KNOW
        match = _SOURCE.search(user)
        if match:
            number = match.group(1) or match.group(2)
            return f"{first_sentences(match.group(3))} [{number}]"
        return DONT_KNOW

    def respond_with_tools(self, messages: Sequence[BaseMessage]) -> str:
        """Call `search` with the question until a tool has answered, then answer from the results."""
        results = [m.text for m in messages if isinstance(m, ToolMessage)]
        if not results:
            question = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
            return format_tool_call("search", {"query": question})
        match = _SOURCE.search("\n".join(results))
        if match:
            return f"{first_sentences(match.group(3))} [{match.group(1) or match.group(2)}]"
        return DONT_KNOW

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        if kwargs.get("tools"):
            return _tool_reply(self.respond_with_tools(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.respond(messages)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Word by word (each chunk keeps its trailing space), so the chunks join to `invoke`'s text."""
        self.calls.append(list(messages))
        for word in re.findall(r"\S+\s*", self.respond(messages)):
            yield self._chunk(word, run_manager)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """As every fake's (in input order); `batch_sizes` records each batch."""
        self.batch_sizes.append(len(inputs))
        return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        return self.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)


class ScriptedChatModel(_WordCountingModel):
    """Replies with `replies` in turn (the last one again once they run out); with tools bound, each
    reply is parsed for `<tool_call>` blocks as the local model's is. Records messages and options."""

    replies: list[str]
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    options: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "lectern-scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
        self.options.append(dict(kwargs))
        text = self.replies[min(len(self.calls), len(self.replies)) - 1]
        if kwargs.get("tools"):
            return _tool_reply(text)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _tool_reply(text: str) -> ChatResult:
    content, calls, invalid = parse_tool_calls(text)
    message = AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid)
    return ChatResult(generations=[ChatGeneration(message=message)])
