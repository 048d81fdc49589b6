"""Any chat model, one request at a time: the model's own `stream` (or llama.cpp's `stream_text` of the
prompt make_job rendered), cut at stop strings and at max_tokens; a tool-bound request on a model
that parses its own calls (the fake, an upstream server) in one call. A JSON schema (response_format,
a forced tool call) goes to llama.cpp as its grammar."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage

from lectern.rag.llm import TemplatedChatModel
from lectern.serve.jobs import Finish, Job
from lectern.serve.stop_strings import Emitter


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
