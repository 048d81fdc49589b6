"""The server's one model worker: requests queue up, and those that arrive while the model is busy
join the next generation batch (left-padded, one `generate` call), each row with its own sampling,
stop strings, token limit and cancellation. Past `max_queue` waiting requests, `submit` refuses.

Rows never mix: every step's token is routed to its own request's sink by row index. A cancelled
row (client gone) is stopped by a stopping criterion checked between tokens; when every row of a
batch is done, `generate` returns and the next batch starts.

llama.cpp with more than one row is batched continuously (lectern.serve.continuous, make_batcher
picks it). Other models are served one request at a time, with the same events and cancellation:
llamacpp at --max-batch 1 streams the prompt make_job rendered (`stream_text`), the fake and an
upstream OpenAI server their own `stream`. A row with a JSON schema (response_format, a forced
tool call) is decoded under it: llama.cpp's grammar, or its own mask in the transformers batch.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from lectern.errors import ServerBusy
from lectern.rag.llm import LecternChatModel, LocalChatModel, TemplatedChatModel
from lectern.rag.llm.structured import json_rows

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


class Batcher:
    """The worker thread that owns the model; `submit` queues a job, `stats` feeds /health."""

    def __init__(
        self, llm: BaseChatModel, *, max_batch: int = 8, max_queue: int = 32, gather_s: float = 0.02
    ) -> None:
        self.llm = llm
        self.max_batch = max(1, max_batch)
        self.max_queue = max(0, max_queue)
        self.gather_s = gather_s
        """How long an idle worker waits for a first request's companions before it starts a batch
        that is not full: clients whose answers ended together come back within milliseconds of each
        other, and without the wait the first of them would run alone while the rest wait a whole
        batch (batches of 1, 7, 1, 7... instead of 8)."""
        self.waiting: deque[Job] = deque()
        self.running = 0
        self.stats: Counter[str] = Counter()
        """submitted, completed, cancelled (stopped because the client left), failed (the generation
        raised), rejected, batches, batched_rows; tests read these through /health instead of timing
        anything."""
        self.batch_s = 0.0
        """A running average of a batch's seconds: the wait a refused request is told (Retry-After)."""
        self._began = 0.0  # when the running batch started
        self._promised: list[float] = []  # when the refused requests were told to come back
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lectern-model", daemon=True)
        self._thread.start()

    def submit(self, job: Job, *, bounded: bool = True) -> Job:
        """Queue `job`; a bounded submit past `max_queue` waiting jobs raises ServerBusy. Sub-jobs of an
        admitted request (a RAG answer, a summary's map steps) are queued unbounded."""
        with self._cond:
            if bounded and len(self.waiting) >= self.max_queue:
                self._refuse()
            self.stats["submitted"] += 1
            self.waiting.append(job)
            self._cond.notify()
        return job

    def check_capacity(self) -> None:
        """Refuse a new request now if the queue is full (for requests that submit their jobs later)."""
        with self._cond:
            if len(self.waiting) >= self.max_queue:
                self._refuse()

    def _refuse(self) -> None:
        """ServerBusy, with the expected wait for room in the queue: the batches ahead (the running
        one, the waiting rows, and the refused requests already told to come back before this one)
        at a batch's seconds (the running average; 1 s before any batch ended; at least the running
        one's time so far). Clients that honour Retry-After then come back one batch apart, when
        there is room, instead of all at once into the same full queue."""
        self.stats["rejected"] += 1
        now = time.monotonic()
        self._promised = [t for t in self._promised if t > now]
        per = max(self.batch_s or 1.0, now - self._began if self.running else 0.0)
        ahead = 1 + (len(self.waiting) + len(self._promised)) // self.max_batch
        self._promised.append(now + ahead * per)
        raise ServerBusy(len(self.waiting), retry_after_s=ahead * per)

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {
                "waiting": len(self.waiting),
                "running": self.running,
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                **{k: self.stats[k] for k in STAT_NAMES},
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _take(self) -> list[Job]:
        with self._cond:
            while not self.waiting and not self._closed:
                self._cond.wait()
            deadline = time.monotonic() + self.gather_s
            while len(self.waiting) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[Job] = []
            while self.waiting and len(batch) < self.max_batch:
                job = self.waiting.popleft()
                if job.cancelled.is_set():  # gone before it started: nothing to stop
                    self.stats["cancelled"] += 1
                    job.emit(("done", Finish("cancelled", 0)))
                    continue
                batch.append(job)
            self.running = len(batch)
            self._began = time.monotonic()
            return batch

    def _loop(self) -> None:
        while not self._closed:
            batch = self._take()
            if not batch:
                continue
            self.stats["batches"] += 1
            self.stats["batched_rows"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            began = time.monotonic()
            try:
                self._run(batch)
            finally:
                seconds = time.monotonic() - began
                with self._cond:
                    self.running = 0
                    self.batch_s = seconds if not self.batch_s else 0.8 * self.batch_s + 0.2 * seconds

    def _run(self, batch: list[Job]) -> None:
        """The local model generates the batch together; any other model serves it one by one."""
        llm = self.llm
        if isinstance(llm, LocalChatModel):
            self._isolated(batch, lambda jobs: generate_batch(llm, jobs, self.stats))
            return
        for job in batch:
            self._isolated([job], lambda jobs: stream_one(llm, jobs[0], self.stats))

    def _isolated(self, jobs: list[Job], run: Callable[[list[Job]], None]) -> None:
        """Run `jobs` together; when that raises, one bad row must not fail the others: the rows that
        have sent nothing yet run again one by one, and only a row that fails alone (or had already
        sent part of its reply) hears the error."""
        try:
            run(jobs)
            return
        except Exception as error:
            failed: BaseException = error
        unfinished = [job for job in jobs if not job.finished]
        if len(jobs) > 1:
            for job in unfinished:
                if job.started:
                    self._fail(job, failed)
                else:
                    self._isolated([job], run)
            return
        for job in unfinished:
            self._fail(job, failed)

    def _fail(self, job: Job, error: BaseException) -> None:
        self.stats["failed"] += 1
        job.emit(("error", error))


STAT_NAMES = ("submitted", "completed", "cancelled", "failed", "rejected", "batches", "batched_rows",
              "largest_batch", "joined", "isolated_steps", "prompt_tokens_cached")  # fmt: skip
"""Continuous batching's own: joined, rows that joined while others were generating; isolated_steps,
failed steps run again one row at a time; prompt_tokens_cached, prompt tokens a row found in the
cache (a prefix shared with a running or ended row) instead of feeding them."""


CONTINUOUS_ROWS, STATIC_BATCH = 32, 8
"""`--max-batch` when not given: rows of continuous batching on llama.cpp (a row costs a sequence
id; the cache's cells are shared, so 32 rows take no more memory than 8 and 32 clients all get a
first token after their prompts, not after the first 8 replies: docs/BENCHMARKS.md), and requests
per static batch on transformers (each padded to the longest)."""


def make_batcher(llm: BaseChatModel, *, max_batch: int | None = None, max_queue: int = 32) -> Batcher:
    """The server's model worker: continuous batching on llama.cpp (lectern.serve.continuous) when
    more than one row may run; otherwise this Batcher (static batches on transformers, one request
    at a time for any other model)."""
    from lectern.rag.llm.llamacpp import LlamaCppChatModel

    if isinstance(llm, LlamaCppChatModel) and max_batch != 1:
        from lectern.serve.continuous import ContinuousBatcher, LlamaSteps

        rows = max_batch or CONTINUOUS_ROWS
        steps = LlamaSteps(llm, rows)  # made here: a context llama.cpp refuses stops the start
        return ContinuousBatcher(llm, steps, max_batch=rows, max_queue=max_queue)
    return Batcher(llm, max_batch=max_batch or STATIC_BATCH, max_queue=max_queue)


# --------------------------------------------------------------------------- any chat model, one at a time


def stream_one(llm: BaseChatModel, job: Job, stats: Counter[str]) -> None:
    """A job through the model's own `stream`, cut at stop strings and at max_tokens (counted with
    the model's tokenizer)."""
    s = job.sampling
    kwargs: dict[str, Any] = {"temperature": s.temperature}
    if hasattr(llm, "max_new_tokens"):
        kwargs["max_new_tokens"] = s.max_tokens
    if s.seed is not None and "seed" in type(llm).model_fields:  # the llamacpp backend samples with it
        kwargs["seed"] = s.seed
    pieces: Iterator[str]
    if isinstance(llm, TemplatedChatModel) and job.prompt_text is not None:
        # llamacpp: the prompt as make_job rendered it (template, tools, a forced call's start) or a
        # raw /v1/completions prompt as written; its tool calls are read from the text (ToolReply)
        if job.schema is not None:
            kwargs["response_schema"] = job.schema
        pieces = llm.stream_text(job.prompt_text, s.stop or None, top_p=s.top_p, **kwargs)
    elif job.tools and job.tool_choice != "none":
        call_tools(llm, job, kwargs, stats)
        return
    else:
        pieces = (chunk.text for chunk in llm.stream(job.messages, stop=s.stop or None, **kwargs))
    out = Emitter(job)
    text, reason = "", "stop"
    try:
        for piece in pieces:
            if job.cancelled.is_set():
                stats["cancelled"] += 1
                job.emit(("done", Finish("cancelled", llm.get_num_tokens(text) if text else 0)))
                return
            text += piece
            if out.update(text):
                break
            if llm.get_num_tokens(text) >= s.max_tokens:
                reason = "length"
                break
    finally:  # a generator left early ends now (llamacpp's lock is released)
        getattr(pieces, "close", lambda: None)()
    out.flush()
    stats["completed"] += 1
    job.emit(("done", Finish(reason, llm.get_num_tokens(out.sent) if out.sent else 0)))


def call_tools(llm: BaseChatModel, job: Job, kwargs: dict[str, Any], stats: Counter[str]) -> None:
    """A tool-bound job on a model that parses its own replies (the fake, an upstream server): one
    call, its content as text and its calls as a ("calls", ...) event."""
    bound = llm.bind_tools(
        job.tools or [], tool_choice=None if job.tool_choice == "auto" else job.tool_choice
    )
    reply = bound.invoke(job.messages, stop=job.sampling.stop or None, **kwargs)
    text = reply.text if isinstance(reply, AIMessage) else str(reply)
    if job.cancelled.is_set():
        stats["cancelled"] += 1
        job.emit(("done", Finish("cancelled", 0)))
        return
    if text:
        job.emit(("text", text))
    calls = list(getattr(reply, "tool_calls", []) or [])
    if calls:
        job.emit(("calls", calls))
    stats["completed"] += 1
    used = getattr(reply, "usage_metadata", None) or {}
    written = text + "".join(json.dumps({"name": c["name"], "arguments": c["args"]}) for c in calls)
    job.emit(("done", Finish("stop", int(used.get("output_tokens") or llm.get_num_tokens(written)))))


class Emitter:
    """Sends a job the new part of its growing text: cut at the first stop string, and holding back
    a tail that could be the start of one (or half a UTF-8 character)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.text = ""
        self.sent = ""

    def update(self, text: str) -> bool:
        """The whole text so far; True when it reached a stop string (then it is cut and sent)."""
        stops = self.job.sampling.stop
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = text[:cut]
            self.flush()
            return True
        self.text = text
        if not text.endswith("\ufffd"):
            self._send(text[: len(text) - _held_back(text, stops)])
        return False

    def flush(self) -> None:
        self._send(self.text)

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.job.emit(("text", text[len(self.sent) :]))
            self.sent = text


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


# --------------------------------------------------------------------------- the local model, batched


class _Row:
    """One request's share of a batch: its tokens so far and whether it is done."""

    def __init__(self, job: Job, tokenizer: Any, eos: set[int]) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.eos = eos
        self.ids: list[int] = []
        self.out = Emitter(job)
        self.done = False
        self.generator: Any = None

    def finish(self, reason: str, stats: Counter[str]) -> None:
        self.done = True
        stats["cancelled" if reason == "cancelled" else "completed"] += 1
        self.job.emit(("done", Finish(reason, len(self.ids))))

    def take(self, token: int, stats: Counter[str]) -> None:
        """The row's next token: EOS ends it; else its text grows, up to a stop string or max_tokens."""
        if token in self.eos and not self.job.sampling.ignore_eos:
            self.out.flush()
            self.finish("stop", stats)
            return
        self.ids.append(token)
        if self.out.update(str(self.tokenizer.decode(self.ids, skip_special_tokens=True))):
            self.finish("stop", stats)
        elif len(self.ids) >= self.job.sampling.max_tokens:
            self.out.flush()
            self.finish("length", stats)


def generate_batch(llm: LocalChatModel, jobs: list[Job], stats: Counter[str]) -> None:
    """One left-padded `generate` call for `jobs`; tokens are routed to each job's sink as they come."""
    import torch
    from transformers import LogitsProcessor, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    tok = llm.tokenizer
    eos = set(llm._eos_ids())
    rows = [_Row(job, tok, eos) for job in jobs]
    prompts = [job.prompt_ids or [] for job in jobs]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos), 0)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    constraints = [llm.json_constraint(job.schema) if job.schema is not None else None for job in jobs]
    for row in rows:
        seed = row.job.sampling.seed
        row.generator = torch.Generator().manual_seed(seed if seed is not None else random.getrandbits(63))
    eos_list = sorted(eos)

    class RowSampler(LogitsProcessor):
        """Each row's own temperature, top_p and seed (generate itself then takes the argmax), and
        EOS masked for rows that asked to ignore it."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            for i, row in enumerate(rows):
                s = row.job.sampling
                if s.ignore_eos and eos_list and row.job.schema is None:  # JSON ends when it is whole
                    scores[i, eos_list] = -float("inf")
                if row.done or s.temperature <= 0:
                    continue
                logits = scores[i].float() / s.temperature
                probs = torch.softmax(logits, dim=-1)
                if s.top_p < 1.0:
                    ordered, order = torch.sort(probs, descending=True)
                    keep = torch.cumsum(ordered, dim=-1) - ordered < s.top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
                pick = torch.multinomial(probs.cpu(), 1, generator=row.generator).item()
                scores[i] = -float("inf")
                scores[i, int(pick)] = 0.0
            return scores

    class RowStreamer(BaseStreamer):
        """generate's per-step tokens, one per row, handed to each row (the first put is the prompt)."""

        def __init__(self) -> None:
            self.started = False

        def put(self, value: Any) -> None:
            if not self.started:
                self.started = True
                return
            for i, token in enumerate(value.reshape(-1).tolist()):
                row = rows[i]
                if not row.done:
                    if row.job.cancelled.is_set():
                        row.finish("cancelled", stats)
                    else:
                        row.take(int(token), stats)

        def end(self) -> None:
            pass

    class RowsDone(StoppingCriteria):
        """A row is done when it ended (EOS, stop string, its own max_tokens) or its client left."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
            for row in rows:
                if not row.done and row.job.cancelled.is_set():
                    row.finish("cancelled", stats)
            return torch.tensor([row.done for row in rows], dtype=torch.bool, device=input_ids.device)

    kwargs = llm._gen_kwargs(
        width, None, max_new_tokens=max(j.sampling.max_tokens for j in jobs), temperature=0
    )
    processors = kwargs.pop("logits_processor", None) or []
    if any(constraints):  # each row's own schema, or none (rag.llm.structured), before sampling
        processors = [*processors, json_rows(constraints, width)]
    processors = [*processors, RowSampler()]
    device = llm.hf_model.device
    with torch.inference_mode():
        llm.hf_model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([RowsDone()]),
            streamer=RowStreamer(),
            **kwargs,
        )
    for row in rows:  # generate ended at the batch's max_new_tokens or EOS handled by generate itself
        if not row.done:
            row.out.flush()
            row.finish("length" if len(row.ids) >= row.job.sampling.max_tokens else "stop", stats)


# --------------------------------------------------------------------------- the batcher as a chat model


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
