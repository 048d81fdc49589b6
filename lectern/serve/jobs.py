"""A generation the server's model worker runs: its sampling, the events its sink receives, how it
finished. Every route that generates makes a Job; the worker (request_queue.py) runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

Event = tuple[str, Any]
"""What a job's sink receives: ("text", str) pieces, then ("done", Finish) or ("error", exception);
a tool-bound job on a model that parses its own calls also sends ("calls", list[ToolCall])."""


@dataclass
class Sampling:
    """Per-request generation parameters (OpenAI's names)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks, tests)


@dataclass
class Finish:
    reason: str  # stop | length | cancelled
    completion_tokens: int


@dataclass
class Job:
    """One generation: a chat (messages) rendered with the model's template, or a raw prompt."""

    messages: list[BaseMessage]
    sampling: Sampling
    sink: Callable[[Event], None]
    prompt_ids: list[int] | None = None  # the local model's tokens of the prompt
    raw_prompt: str | None = None  # /v1/completions: the text as given, no chat template
    prompt_tokens: int = 0
    tools: list[dict[str, Any]] | None = None  # OpenAI-form tools (the local model has them in prompt_ids)
    tool_choice: str = "auto"
    start: str = ""  # the text the local model's reply was forced to begin with (tool_choice)
    prompt_text: str | None = None  # a model run here: the prompt as rendered (template, tools, start) or raw
    schema: dict[str, Any] | None = None  # the JSON schema the reply is decoded under (rag.llm.structured)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: bool = False  # some of its reply was sent: it cannot be run again
    finished: bool = False

    def emit(self, event: Event) -> None:
        if event[0] == "text":
            self.started = True
        else:
            self.finished = True
        self.sink(event)
