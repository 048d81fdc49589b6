"""A deterministic chat model shipped in the package: unit tests and the model-free demo use it.

Rules, in order, on the last user message (and the system message for the instruction):
- "summar" in the instruction (system message or the user message's first line): the first two
  sentences of the text after that first line;
- a numbered source (`[1] text`, `[1]: text` or `Source 1: text`): the first sentence of the first
  one, followed by its citation, e.g. "Paris is the capital of France. [1]";
- otherwise "I don't know based on the documents."
Token counting is whitespace words (documented approximation, no tokenizer needed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import Field

from lectern.rag.llm import LecternChatModel

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


class FakeChatModel(LecternChatModel):
    """Answers by quoting and citing the first source, summarizes by leading sentences; records calls."""

    context_window: int = 2048
    summary_sentences: int = 2
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    batch_sizes: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "lectern-fake"

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return sum(len(m.text.split()) for m in messages)

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

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.calls.append(list(messages))
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
        """Sequential, so `calls` is recorded in input order; `batch_sizes` records each batch."""
        self.batch_sizes.append(len(inputs))
        out = []
        for item in inputs:
            messages = self._convert_input(item).to_messages()
            self.calls.append(messages)
            out.append(AIMessage(content=self.respond(messages)))
        return out

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        return self.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
