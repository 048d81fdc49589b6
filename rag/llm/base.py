"""What every lectern chat model is: a langchain-core BaseChatModel that knows its context window and
counts with its own tokenizer, and the helpers the backends share (messages as role/content dicts,
cutting at a stop string)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from lectern.errors import Stopped
from lectern.rag.window import ensure_fits


class LecternChatModel(BaseChatModel):
    """A chat model that knows its context window and can say whether a prompt fits."""

    context_window: int = 2048
    max_new_tokens: int = 256

    def fit_check(
        self, messages: LanguageModelInput, reserve: int | None = None, field: str = "prompt"
    ) -> int:
        """Count the prompt's tokens; raise ContextTooLong naming `field` if it plus `reserve` overflow."""
        return fit_check(self, messages, reserve=reserve, field=field)

    def _whole_reply(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        **kwargs: Any,
    ) -> ChatGenerationChunk:
        """A streamed reply as one chunk, for when tools are bound: a tool call is only known once the
        whole reply is in. Both backends' `_stream` use it."""
        reply = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        return ChatGenerationChunk(message=as_chunk(cast(AIMessage, reply)))

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        """One streamed piece, reported to the callbacks as a new token."""
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk


def fit_check(
    llm: BaseChatModel, messages: LanguageModelInput, reserve: int | None = None, field: str = "prompt"
) -> int:
    """Tokens of `messages`; raises ContextTooLong when they plus `reserve` (default: the answer's
    max_new_tokens) do not fit the model's context window."""
    if reserve is None:
        reserve = int(getattr(llm, "max_new_tokens", 0) or 0)
    if isinstance(messages, BaseMessage):
        messages = [messages]
    tokens = llm.get_num_tokens_from_messages(llm._convert_input(messages).to_messages())
    ensure_fits(llm, tokens, reserve, field)  # the one overflow check (rag.window)
    return tokens


def as_chunk(message: AIMessage) -> AIMessageChunk:
    """A parsed reply as one stream chunk, its tool calls as chunks that merge back to the same calls."""
    return AIMessageChunk(
        content=message.content,
        tool_call_chunks=[
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(message.tool_calls)
        ],
    )


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the role/content dicts chat templates and OpenAI servers expect."""
    out = []
    for message in messages:
        if isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
        elif isinstance(message, ChatMessage):
            role = message.role
        else:
            role = "user"
        out.append({"role": role, "content": message.text})
    return out


def cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Truncate at the first stop string (generation itself stops at EOS)."""
    for word in stop or []:
        index = text.find(word)
        if index >= 0:
            text = text[:index]
    return text


# -- stopping a run mid-generation ------------------------------------------------------------------
_STOP_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("lectern_stop_check", default=None)


@contextlib.contextmanager
def stoppable(check: Callable[[], None]) -> Iterator[None]:
    """Within the block, `check` (which raises lectern.errors.Stopped once a stop is asked: a web UI
    job's) runs between an agent's steps and between the tokens of any model call made here: the
    backends that run a model in this process end generation there and raise it (a prompt's prefill
    runs to its end first)."""
    token = _STOP_CHECK.set(check)
    try:
        yield
    finally:
        _STOP_CHECK.reset(token)


def check_stop() -> None:
    """Raise Stopped if the run this call belongs to (`stoppable`) was asked to stop."""
    check = _STOP_CHECK.get()
    if check is not None:
        check()


class Interrupt:
    """A generation's view of `stoppable`, taken in the caller's thread (a streaming backend decodes
    in another): `asked()` between tokens; the Stopped it caught is raised by `raise_if_asked` once
    generation has ended."""

    def __init__(self, check: Callable[[], None]) -> None:
        self.check = check
        self.error: Stopped | None = None

    @classmethod
    def current(cls) -> Interrupt | None:
        check = _STOP_CHECK.get()
        return cls(check) if check is not None else None

    def asked(self) -> bool:
        try:
            self.check()
        except Stopped as error:
            self.error = error
        return self.error is not None

    def raise_if_asked(self) -> None:
        if self.error is not None:
            raise self.error
