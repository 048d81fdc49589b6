"""The batcher as a chat model: lectern's chains (the RAG models, /v1/summarize) call it like any chat
model, and their generations join the server's batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from lectern.rag.llm import LecternChatModel, TemplatedChatModel
from lectern.serve.jobs import Event, Job, Sampling


class QueuedChatModel(LecternChatModel):
    """The chains' face of the batcher: lectern's QA chain and summarizers call this like any chat
    model, and their generations join the server's batches. One per request: `cancelled` stops
    every job it submitted, and `usage` collects (prompt_tokens, completion_tokens) per call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base: Any = Field(exclude=True, repr=False)  # the loaded BaseChatModel
    batcher: Any = Field(exclude=True, repr=False)
    temperature: float = 0.0
    response_schema: dict[str, Any] | None = None  # its replies are JSON under it (a call's wins)
    cancelled: threading.Event = Field(default_factory=threading.Event, exclude=True)
    usage: list[tuple[int, int]] = Field(default_factory=list)
    finishes: list[str] = Field(default_factory=list)  # each call's finish reason (stop, length...)

    @property
    def _llm_type(self) -> str:
        return "lectern-queued"

    def get_num_tokens(self, text: str) -> int:
        return int(self.base.get_num_tokens(text))

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return int(self.base.get_num_tokens_from_messages(messages))

    def batch(
        self, inputs: Any, config: Any = None, *, return_exceptions: bool = False, **kwargs: Any
    ) -> Any:
        """All inputs submitted at once (a summary's map step), so they share the worker's batches."""
        config = {**(config or {}), "max_concurrency": max(1, len(inputs))}
        return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    def _events(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> Iterator[Event]:
        import queue

        events: queue.Queue[Event] = queue.Queue()
        sampling = Sampling(
            max_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)),
            temperature=float(kwargs.get("temperature", self.temperature)),
            stop=list(stop or []),
        )
        job = Job(list(messages), sampling, events.put, cancelled=self.cancelled)
        job.schema = kwargs.get("response_schema", self.response_schema)
        prompt_tokens = self.get_num_tokens_from_messages(list(messages))
        if isinstance(self.base, TemplatedChatModel):
            job.prompt_text = self.base._prompt_text(messages)
            job.prompt_ids = self.base.get_token_ids(job.prompt_text)
        self.batcher.submit(job, bounded=False)
        while True:
            event = events.get()
            if event[0] == "done":
                self.usage.append((prompt_tokens, event[1].completion_tokens))
                self.finishes.append(event[1].reason)
                return
            if event[0] == "error":
                raise event[1]
            yield event

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(str(e[1]) for e in self._events(messages, stop, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for event in self._events(messages, stop, **kwargs):
            yield self._chunk(str(event[1]), run_manager)
