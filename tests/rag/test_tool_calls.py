"""Tool-call parsing for local models: good calls, several calls, repairs with one reading, and
malformed JSON reported as invalid calls (never an exception)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from lectern.errors import ToolsUnsupported
from lectern.rag.fake import ScriptedChatModel
from lectern.rag.llm.tool_calls import format_tool_call, parse_tool_calls, supports_tools, tool_chat_dicts


def test_one_good_call_has_name_args_and_an_id() -> None:
    content, calls, invalid = parse_tool_calls(
        'Let me look.\n<tool_call>\n{"name": "search", "arguments": {"query": "pump", "k": 3}}\n</tool_call>'
    )
    assert content == "Let me look."
    assert invalid == []
    assert [(c["name"], c["args"]) for c in calls] == [("search", {"query": "pump", "k": 3})]
    assert calls[0]["id"] and calls[0]["type"] == "tool_call"


def test_several_calls_in_order_with_distinct_ids() -> None:
    text = (
        format_tool_call("search", {"query": "a"})
        + "\n"
        + format_tool_call("read", {"source": "b", "page": 2})
    )
    _, calls, invalid = parse_tool_calls(text)
    assert [c["name"] for c in calls] == ["search", "read"] and not invalid
    assert calls[1]["args"] == {"source": "b", "page": 2}
    assert len({c["id"] for c in calls}) == 2


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "search", "arguments": {"query": "pump",},}',  # trailing commas
        "{'name': 'search', 'arguments': {'query': 'pump'}}",  # single quotes, no double quote anywhere
        '{"name": "search", "arguments": {"query": "pump"}',  # one closing brace missing
        '{"name": "search", "arguments": {"query": "pump"',  # two missing
        '```json\n{"name": "search", "arguments": {"query": "pump"}}\n```',  # a code fence
        '{"name": "search", "arguments": "{\\"query\\": \\"pump\\"}"}',  # arguments as a JSON string
    ],
)
def test_unambiguous_repairs(body: str) -> None:
    _, calls, invalid = parse_tool_calls(f"<tool_call>\n{body}\n</tool_call>")
    assert not invalid
    assert [(c["name"], c["args"]) for c in calls] == [("search", {"query": "pump"})]


def test_missing_closing_tag_at_the_end_still_parses() -> None:
    _, calls, _ = parse_tool_calls('<tool_call>\n{"name": "list_documents", "arguments": {}}')
    assert [c["name"] for c in calls] == ["list_documents"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{name: search, arguments: {}}", "invalid JSON"),
        ('{"name": "search", "arguments": {"query": "pum', "invalid JSON"),  # ends inside a string
        ("{'name': \"search\", 'arguments': {}}", "invalid JSON"),  # mixed quotes: no single reading
        ('{"name": "search", "arguments": {"query": "x"}}}', "invalid JSON"),  # one brace too many
        ('{"arguments": {"query": "x"}}', "'name'"),
        ('["search"]', "not an object"),
        ("", "empty"),
    ],
)
def test_malformed_calls_are_reported_not_raised(body: str, why: str) -> None:
    content, calls, invalid = parse_tool_calls(f"ok <tool_call>{body}</tool_call>")
    assert content == "ok" and calls == []
    assert len(invalid) == 1 and why in str(invalid[0]["error"]) and invalid[0]["id"]
    assert invalid[0]["args"] == body.strip()


def test_good_and_bad_calls_side_by_side() -> None:
    text = format_tool_call("search", {"query": "a"}) + "<tool_call>{oops</tool_call>"
    _, calls, invalid = parse_tool_calls(text)
    assert [c["name"] for c in calls] == ["search"] and len(invalid) == 1


def test_bare_json_call_without_tags_is_read_and_plain_text_is_not() -> None:
    _, calls, _ = parse_tool_calls('{"name": "search", "arguments": {"query": "x"}}')
    assert calls[0]["name"] == "search"
    fenced = '```json\n{\n  "name": "search",\n  "arguments": {"query": "x", "k": 4}\n}\n```'
    content, calls, invalid = parse_tool_calls(fenced)
    assert [(c["name"], c["args"]) for c in calls] == [("search", {"query": "x", "k": 4})]
    assert content == "" and invalid == []
    _, calls, _ = parse_tool_calls('```json\n{"name": "search", "arguments": {"query": "x"')  # cut off
    assert calls[0]["args"] == {"query": "x"}
    content, calls, invalid = parse_tool_calls("The pump runs at 5 bar [1].")
    assert content == "The pump runs at 5 bar [1]." and calls == invalid == []


def test_conversation_with_tool_calls_renders_as_template_dicts() -> None:
    _, calls, _ = parse_tool_calls(format_tool_call("search", {"query": "x"}))
    dicts = tool_chat_dicts(
        [
            HumanMessage("q"),
            AIMessage("", tool_calls=calls),
            ToolMessage("[1] text", tool_call_id=calls[0]["id"]),
        ]
    )
    assert [d["role"] for d in dicts] == ["user", "assistant", "tool"]
    assert dicts[1]["tool_calls"] == [
        {"type": "function", "function": {"name": "search", "arguments": {"query": "x"}}}
    ]
    assert dicts[2]["content"] == "[1] text"


def test_supports_tools_reads_the_template() -> None:
    assert supports_tools("{% if tools %}# Tools{% endif %}")
    assert not supports_tools("{% for message in messages %}{{ message.content }}{% endfor %}")
    assert not supports_tools(None)


@tool
def search(query: str, k: int = 4) -> str:
    """Search the documents."""
    return query


def test_bound_model_returns_tool_calls_and_passes_openai_schemas() -> None:
    llm = ScriptedChatModel(replies=[format_tool_call("search", {"query": "x"}) + "<tool_call>{bad"])
    reply = llm.bind_tools([search]).invoke("q")
    assert isinstance(reply, AIMessage)
    assert [c["name"] for c in reply.tool_calls] == ["search"] and len(reply.invalid_tool_calls) == 1
    schema = llm.options[0]["tools"][0]
    assert schema["type"] == "function" and schema["function"]["name"] == "search"
    assert set(schema["function"]["parameters"]["properties"]) == {"query", "k"}


class _Tokenizer:
    chat_template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def test_local_model_without_a_tools_template_names_the_model() -> None:
    from lectern.rag.llm.local import LocalChatModel

    llm = LocalChatModel(model_name="packaged:smollm2", tokenizer=_Tokenizer())
    with pytest.raises(ToolsUnsupported, match=r"packaged:smollm2.*no tools section"):
        llm.bind_tools([search])


# ----------------------------------------------------------------------------- openai backend


def _openai_with(
    monkeypatch: pytest.MonkeyPatch, reply: dict[str, object], seen: list[dict[str, object]]
) -> object:
    """An OpenAIChatModel whose server is an httpx MockTransport returning `reply` as the message."""
    import httpx

    from lectern.rag.llm import openai_api

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": reply, "finish_reason": "tool_calls"}]})

    real = httpx.Client
    monkeypatch.setattr(
        openai_api.httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(handler), **kw)
    )
    return openai_api.OpenAIChatModel(base_url="http://server", model_name="m")


def test_openai_backend_sends_tools_and_parses_tool_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []
    reply = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"query": "x",}'}},
            {"id": "c2", "type": "function", "function": {"name": "search", "arguments": "{oops"}},
        ],
    }
    llm: Any = _openai_with(monkeypatch, reply, seen)
    message = llm.bind_tools([search], tool_choice="search").invoke("q")
    assert [(c["id"], c["name"], c["args"]) for c in message.tool_calls] == [("c1", "search", {"query": "x"})]
    assert [c["id"] for c in message.invalid_tool_calls] == ["c2"]
    body = seen[0]
    assert body["tools"][0]["function"]["name"] == "search"  # type: ignore[index]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    streamed = list(llm.bind_tools([search]).stream("q"))
    assert streamed[0].tool_calls[0]["args"] == {"query": "x"}
    assert "tool_choice" not in seen[1]


def test_openai_backend_sends_tool_history_in_wire_form(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []
    llm: Any = _openai_with(monkeypatch, {"role": "assistant", "content": "done [1]"}, seen)
    calls = [{"name": "search", "args": {"query": "x"}, "id": "c1", "type": "tool_call"}]
    history = [HumanMessage("q"), AIMessage("", tool_calls=calls), ToolMessage("[1] text", tool_call_id="c1")]
    assert llm.bind_tools([search]).invoke(history).content == "done [1]"
    sent = seen[0]["messages"]
    assert sent[1]["tool_calls"] == [  # type: ignore[index]
        {"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"query": "x"}'}}
    ]
    assert sent[2] == {"role": "tool", "content": "[1] text", "tool_call_id": "c1"}  # type: ignore[index]
