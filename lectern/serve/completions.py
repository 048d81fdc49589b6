"""Chat and text completions of the local model: a request becomes a Job (its prompt counted and
checked against the window) that the batcher generates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import tool_call

from lectern.errors import APIError, ContextTooLong, InvalidInput, ToolsUnsupported
from lectern.rag.llm.structured import check_schema, tool_call_schema
from lectern.rag.llm.templated import TemplatedChatModel
from lectern.serve.answers import Ending, async_sink, respond
from lectern.serve.jobs import Event, Finish, Job, Sampling
from lectern.serve.protocol import (
    ChatRequest,
    GenerationRequest,
    Message,
    Shape,
    new_id,
    now,
    usage,
)
from lectern.serve.tool_replies import ToolReply

if TYPE_CHECKING:
    from lectern.serve.server import Server


def to_messages(messages: list[Message]) -> list[BaseMessage]:
    """The request's messages as langchain-core messages: an assistant's tool calls and the tool
    results kept, so a tool template renders the whole exchange."""
    kinds: dict[str, Callable[..., BaseMessage]] = {
        "system": SystemMessage,
        "developer": SystemMessage,
        "user": HumanMessage,
    }
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "assistant":
            calls = [
                tool_call(name=c.function.name, args=c.function.args(), id=c.id) for c in m.tool_calls or []
            ]
            out.append(AIMessage(content=m.text(), tool_calls=calls))
        elif m.role == "tool":
            out.append(ToolMessage(content=m.text(), tool_call_id=m.tool_call_id or ""))
        else:
            out.append(kinds[m.role](content=m.text()))
    return out


def make_job(
    server: Server, body: GenerationRequest, messages: list[BaseMessage], raw: str | None = None
) -> Job:
    """The job for a request, its prompt counted with the model's tokenizer and checked against the
    window: an explicit max_tokens that does not fit is a 400 naming the limit. A model run here
    (local, llamacpp) gets its prompt rendered once: the chat template with the tools and a forced
    call's start, or a raw prompt as written; and the schema its reply is decoded under, if any
    (response_format, or the call a tool_choice forces)."""
    llm = server.llm
    ids: list[int] | None = None
    text: str | None = None
    tools, choice = (body.tool_dicts(), body.choice()) if isinstance(body, ChatRequest) else (None, "auto")
    schema = body.response_schema() if isinstance(body, ChatRequest) else None
    if schema is not None and tools and choice == "auto":
        choice = "none"  # the reply is the JSON asked for, never a call (docs/SERVE.md)
    start = ""
    if isinstance(llm, TemplatedChatModel):
        if raw is not None:
            text = raw
        else:
            try:
                text, start = llm.tool_prompt(messages, tools, choice)
            except ToolsUnsupported as error:  # SmolLM2: no tools section in its template
                raise APIError(str(error), param="tools", code="tools_unsupported") from None
            schema = forced_call(tools, choice) or schema
        ids = llm.get_token_ids(text)
        prompt_tokens = len(ids)
    else:
        if schema is not None:
            raise unconstrained(llm)
        prompt_tokens = (
            llm.get_num_tokens(raw) if raw is not None else llm.get_num_tokens_from_messages(messages)
        )
    window = int(getattr(llm, "context_window", 0) or 0)
    wanted = body.limit()
    field_name = "prompt" if raw is not None else "messages"
    if window:
        room = window - prompt_tokens
        if wanted is not None and wanted > room:
            raise ContextTooLong(prompt_tokens + wanted, window, f"{field_name} plus max_tokens")
        if room < 1:
            raise ContextTooLong(prompt_tokens + 1, window, field_name)
    max_tokens = wanted or min(
        server.settings.llm.max_new_tokens, window - prompt_tokens if window else 10**9
    )
    sampling = Sampling(
        max_tokens=max_tokens,
        temperature=body.temperature if body.temperature is not None else server.settings.llm.temperature,
        top_p=body.top_p if body.top_p is not None else 1.0,
        seed=body.seed,
        stop=body.stops(),
        ignore_eos=body.ignore_eos,
    )
    job = Job(
        messages, sampling, sink=lambda e: None, prompt_ids=ids, raw_prompt=raw, prompt_tokens=prompt_tokens
    )
    job.tools, job.tool_choice, job.start = tools, choice, start
    job.prompt_text, job.schema = text, schema
    return job


def unconstrained(llm: BaseChatModel) -> APIError:
    """The 400 for a response_format sent to a model that cannot decode under a schema here."""
    return APIError(f"response_format needs constrained decoding, which a {llm._llm_type} model does not "
                    "do here (the local and llamacpp backends do)", param="response_format",
                    code="response_format_unsupported")  # fmt: skip


def forced_call(tools: list[dict[str, Any]] | None, choice: str) -> dict[str, Any] | None:
    """The schema of the call a named or "required" tool_choice forces (its arguments those of the
    tool's parameters); a 400 naming `tools` when a tool's parameters cannot be decoded under."""
    call = tool_call_schema(tools, choice) if tools else None
    if call is None:
        return None
    try:
        return check_schema(call, "tools")
    except InvalidInput as error:
        raise APIError(str(error), param="tools", code="invalid_request") from None


async def generate(server: Server, job: Job, body: GenerationRequest, request: Request, *, chat: bool) -> Any:
    """A chat or text completion of the local model through the batcher."""
    events: asyncio.Queue[Event] = asyncio.Queue()
    job.sink = async_sink(asyncio.get_running_loop(), events)
    server.batcher.submit(job)  # ServerBusy (503) past the queue bound
    shape = Shape(new_id("chatcmpl" if chat else "cmpl"), now(), body.model, chat, body.include_usage())

    def ending(finish: Finish) -> Ending:
        return Ending(finish.reason, usage(job.prompt_tokens, finish.completion_tokens))

    tools = ToolReply(job.start) if chat and job.tools and job.tool_choice != "none" else None
    return await respond(request, shape, events, job.cancelled, body.stream, ending, tools)
