"""What the server's routes share: the settings, the loaded model, its worker (the Batcher, or
continuous batching on llama.cpp: make_batcher), the embedder and the collections' Workspaces."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from lectern.errors import InvalidInput, ShuttingDown
from lectern.rag.settings import Settings
from lectern.serve.protocol import EMBED_MODEL, RAG_PREFIX, now
from lectern.serve.queued_model import QueuedChatModel
from lectern.serve.request_queue import Batcher

if TYPE_CHECKING:
    from lectern.serve.jobs import Event

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class ServeOptions:
    api_keys: Sequence[str] = ()
    collection: str | None = None  # the default collection of /v1/summarize
    max_batch: int | None = None  # None: CONTINUOUS_ROWS or STATIC_BATCH; 1: one at a time
    max_queue: int = 32  # waiting requests past which the server answers 503
    max_body_bytes: int = MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for key in self.api_keys:  # `--api-key "$KEY"` with KEY unset would otherwise open the door
            if not key.strip():
                raise InvalidInput(
                    "--api-key", key, "a key must not be empty or blank (is its variable set?)"
                )


@dataclass
class Server:
    """What the routes share: the settings, the loaded model, its batcher and the embedder."""

    settings: Settings
    llm: BaseChatModel
    options: ServeOptions
    batcher: Batcher
    created: int = field(default_factory=now)
    failures: Counter[str] = field(default_factory=Counter)  # requests answered with a 5xx (edges.Gate)
    streams: set[Callable[[Event], None]] = field(default_factory=set)  # the open streams' sinks
    _embedder: Any = None
    _workspaces: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_id(self) -> str:
        name = getattr(self.llm, "model_name", None)  # the local model actually loaded, or the upstream's
        if name is None and self.llm._llm_type == "lectern-fake":
            name = "fake"
        return str(name or self.settings.llm.model)

    def is_local_model(self, name: str) -> bool:
        return name in (self.model_id, self.settings.llm.model)

    def model_ids(self) -> list[str]:
        return [self.model_id, EMBED_MODEL, *(RAG_PREFIX + c for c in self.collections())]

    def shut_down(self) -> None:
        """The server is stopping: every open stream ends now with an error frame and `[DONE]` (its
        generation is cancelled as the stream ends) instead of being cut mid-answer."""
        for sink in list(self.streams):
            sink(("error", ShuttingDown()))

    def collections(self) -> list[str]:
        from lectern.rag.workspace import Workspace

        return Workspace(settings=self.settings).collections()

    def workspace(self, name: str) -> Any:
        """The collection's Workspace, opened once and shared by the requests (its SQLite connection
        is opened with check_same_thread=False; FAISS searches are read-only)."""
        from lectern.rag.workspace import Workspace

        with self._lock:
            if name not in self._workspaces:
                ws = Workspace(collection=name, settings=self.settings)
                ws.collection()  # CollectionNotFound (404) for a name that is not one: nothing cached
                self._workspaces[name] = ws
            return self._workspaces[name]

    def embedder(self) -> Any:
        from lectern.rag.workspace import shared_embedder

        with self._lock:
            if self._embedder is None:
                self._embedder = shared_embedder(self.settings.ingest.embed, self.settings.models_dir)
            return self._embedder

    def queued(self, max_tokens: int | None, temperature: float | None) -> QueuedChatModel:
        """A per-request chat model for the chains whose generations join the batcher."""
        return QueuedChatModel(
            base=self.llm,
            batcher=self.batcher,
            context_window=int(getattr(self.llm, "context_window", 2048)),
            max_new_tokens=max_tokens or self.settings.llm.max_new_tokens,
            temperature=temperature if temperature is not None else self.settings.llm.temperature,
        )


CONTINUOUS_ROWS, STATIC_BATCH = 32, 8
"""`--max-batch` when not given: rows of continuous batching on llama.cpp (a row costs a sequence
id; the cache's cells are shared, so 32 rows take no more memory than 8 and 32 clients all get a
first token after their prompts, not after the first 8 replies: docs/BENCHMARKS.md), and requests
per static batch on transformers (each padded to the longest)."""


def make_batcher(llm: BaseChatModel, *, max_batch: int | None = None, max_queue: int = 32) -> Batcher:
    """The server's model worker: continuous batching on llama.cpp (lectern.serve.continuous) when
    more than one row may run; otherwise the Batcher (static batches on transformers, one request
    at a time for any other model)."""
    from lectern.rag.llm.llamacpp import LlamaCppChatModel

    if isinstance(llm, LlamaCppChatModel) and max_batch != 1:
        from lectern.serve.continuous import ContinuousBatcher, LlamaSteps

        rows = max_batch or CONTINUOUS_ROWS
        steps = LlamaSteps(llm, rows)  # made here: a context llama.cpp refuses stops the start
        return ContinuousBatcher(llm, steps, max_batch=rows, max_queue=max_queue)
    return Batcher(llm, max_batch=max_batch or STATIC_BATCH, max_queue=max_queue)
