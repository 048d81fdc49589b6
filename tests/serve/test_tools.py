"""`tools` / `tool_choice` on /v1/chat/completions, over the fake model (which calls `search` until a
tool has answered) on a real loopback server and the official `openai` client: OpenAI-shaped
`tool_calls` with finish_reason "tool_calls", the stream's tool-call deltas, the conversation sent
back with the tool's result, and every malformed tools field refused with a 400 naming it. The
local model's own path (a `<tool_call>` in its text, tool_choice enforced) is in ToolReply's tests
here and in tests/integration/test_serve_tools_e2e.py with the real Qwen."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from lectern.rag.llm.tool_calls import OPEN, forced_start, normalize_tool_choice, parse_tool_calls
from lectern.serve.tool_replies import ToolReply, finish_reason, stream_deltas

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the library.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
ASK = {"model": "fake", "messages": [{"role": "user", "content": "Who built the canal?"}], "tools": [SEARCH]}


@pytest.fixture
def client(fake_url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{fake_url}/v1", api_key="none", max_retries=0)


def test_a_tool_call_comes_back_openai_shaped(client: Any) -> None:
    reply = client.chat.completions.create(**ASK)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "Who built the canal?"}
    assert reply.usage.completion_tokens > 0


def test_streamed_tool_calls_arrive_as_openai_deltas(client: Any) -> None:
    chunks = list(client.chat.completions.create(**ASK, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head, args = deltas[0][0], deltas[1][0]
    assert head.index == 0 and head.id.startswith("call_") and head.function.name == "search"
    assert head.function.arguments == "" and args.id is None and args.index == 0
    joined = "".join(d[0].function.arguments or "" for d in deltas)
    assert json.loads(joined) == {"query": "Who built the canal?"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(not (c.choices[0].delta.content or "") for c in chunks if c.choices)


def test_the_tool_result_goes_back_and_the_model_answers(client: Any) -> None:
    first = client.chat.completions.create(**ASK).choices[0].message
    call = first.tool_calls[0]
    result = "[1] (canal.txt p.1) The canal was built by Ada Brennock in 1820. It is long."
    messages = [
        *ASK["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    reply = client.chat.completions.create(model="fake", messages=messages, tools=[SEARCH])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == "The canal was built by Ada Brennock in 1820. [1]"


def test_tool_choice_none_gives_a_plain_answer(client: Any) -> None:
    reply = client.chat.completions.create(**ASK, tool_choice="none")
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content


def test_named_tool_choice_is_accepted(client: Any) -> None:
    named = {"type": "function", "function": {"name": "search"}}
    reply = client.chat.completions.create(**ASK, tool_choice=named)
    assert reply.choices[0].message.tool_calls[0].function.name == "search"


def _error(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    return r.json()["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"tools": [{"type": "function"}]}, "tools", "tools.0.function"),
        ({"tools": [{"type": "retrieval", "function": SEARCH["function"]}]}, "tools", "tools.0.type"),
        ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools", "function.name"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools", "function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools",
            "parameters",
        ),
        ({"tools": "search"}, "tools", "tools"),
        ({"tools": []}, "tools", "tools"),
        ({"tool_choice": "sometimes"}, "tool_choice", "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "read"}}}, "tool_choice", "'read'"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice", "only allowed when tools"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "tool_call_id"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "search", "arguments": "not json"},
                            }
                        ],
                    }
                ]
            },
            "messages",
            "JSON object",
        ),
        ({"model": "lectern-rag/test"}, "tools", "takes no tools"),
    ],
)
def test_malformed_tools_are_400_naming_the_field(
    fake_url: str, fake_ws: Any, change: dict[str, Any], param: str, words: str
) -> None:
    error = _error(fake_url, {**ASK, **change})
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert words in error["message"], error["message"]


def test_text_completions_refuse_tools(fake_url: str) -> None:
    error = _error_at(fake_url, "/v1/completions", {"model": "fake", "prompt": "x", "tools": [SEARCH]})
    assert error["param"] == "tools"


def _error_at(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{url}{path}", json=body, timeout=30)
    assert r.status_code == 400, r.text
    return r.json()["error"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the local model's text


def _stream(reply: ToolReply, pieces: list[str]) -> str:
    return "".join(reply.feed(p) for p in pieces)


def test_content_before_a_tool_call_streams_and_the_tag_is_held_back() -> None:
    reply = ToolReply()
    text = 'Let me look. <tool_call>\n{"name": "search", "arguments": {"query": "canal"}}\n</tool_call>'
    streamed = _stream(reply, [text[i : i + 3] for i in range(0, len(text), 3)])
    assert streamed == "Let me look. "  # never a piece of the tag
    content, calls = reply.finish()
    assert content == "Let me look." and reply.rest(content) == ""
    assert [c["function"]["name"] for c in calls] == ["search"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"query": "canal"}
    assert finish_reason("stop", calls) == "tool_calls" and finish_reason("length", calls) == "length"


def test_a_plain_answer_streams_whole_and_a_bare_json_call_is_held() -> None:
    plain = ToolReply()
    assert _stream(plain, ["The canal ", "is long", ". <tool"]) == "The canal is long. "
    content, calls = plain.finish()
    assert calls == [] and plain.rest(content) == "<tool"
    bare = ToolReply()
    assert _stream(bare, ['{"name": "search", ', '"arguments": {"query": "x"}}']) == ""
    assert bare.finish()[1][0]["function"]["name"] == "search"


def test_a_forced_start_is_part_of_the_reply_and_an_unreadable_block_stays_in_content() -> None:
    reply = ToolReply(forced_start("search"))
    _stream(reply, ['{"name": "search", "arguments": {"query": "canal"}}\n</tool_call>'])
    assert json.loads(reply.finish()[1][0]["function"]["arguments"]) == {"query": "canal"}
    broken = ToolReply()
    _stream(broken, ["<tool_call>not json at all</tool_call>"])
    content, calls = broken.finish()
    assert calls == [] and content == "<tool_call>not json at all</tool_call>"


def test_stream_deltas_are_head_then_arguments_per_call() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": '{"query": "x"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "read", "arguments": "{}"}},
    ]
    deltas = stream_deltas(calls)
    assert [d["tool_calls"][0]["index"] for d in deltas] == [0, 0, 1, 1]
    assert deltas[2]["tool_calls"][0] == {
        "index": 1, "id": "call_b", "type": "function", "function": {"name": "read", "arguments": ""}
    }  # fmt: skip
    assert deltas[3]["tool_calls"][0] == {"index": 1, "function": {"arguments": "{}"}}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "auto"),
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        ("read", "read"),
        ({"type": "function", "function": {"name": "read"}}, "read"),
        (True, None),  # True forces the only tool; with two it is ambiguous
    ],
)
def test_tool_choice_forms(given: Any, expected: str | None) -> None:
    from lectern.errors import InvalidInput

    if expected is None:
        with pytest.raises(InvalidInput, match="tool_choice"):
            normalize_tool_choice(given, ["search", "read"])
        assert normalize_tool_choice(given, ["search"]) == "search"
        return
    assert normalize_tool_choice(given, ["search", "read"]) == expected


def test_forced_starts_make_the_model_continue_a_call() -> None:
    """The start opens the block; the call itself is decoded under its schema (tests/rag/test_structured.py)."""
    assert forced_start("auto") == forced_start("none") == ""
    assert forced_start("required") == forced_start("read") == OPEN + "\n"
    _, calls, _ = parse_tool_calls(
        forced_start("read") + '{"name": "read", "arguments": {"source": "a.pdf"}}'
    )
    assert calls[0]["name"] == "read" and calls[0]["args"] == {"source": "a.pdf"}
