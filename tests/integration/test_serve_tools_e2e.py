"""Tool calling through a real `lectern serve` subprocess with the real default model
(packaged:qwen2.5-0.5b, whose chat template has a tools section) on loopback, called with the
official `openai` client: a tool call with finish_reason "tool_calls", the same streamed as
OpenAI's deltas, tool_choice "none" and a named function enforced, the tool's result sent back.

What a real model writes cannot be scripted, so the assertions are on shapes and on what tool_choice
enforces (a named function is always the one called), never on the model's wording.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.ui_server import child_env, lectern_serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
MODEL = "packaged:qwen2.5-0.5b"
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the library for passages about a topic.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look for."}},
            "required": ["query"],
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "Who designed the Marrow Point lighthouse? Search the library."}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import openai

    data = tmp_path_factory.mktemp("serve-tools")
    env = child_env()
    env.update(LECTERN_DATA_DIR=str(data), LECTERN_LLM__THREADS="1", LECTERN_LLM__MAX_NEW_TOKENS="48",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    args = ["--model", MODEL, "--log-level", "warning"]
    # the first run converts the GGUF (minutes on two cores)
    with lectern_serve(args, env, data / "serve.log", timeout_s=600) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)


def _check_call(call: Any, names: set[str]) -> dict[str, Any]:
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict)
    return args  # type: ignore[no-any-return]


def test_a_named_tool_choice_is_enforced_whole_and_streamed(client: Any) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[SEARCH, WEATHER],
                                           tool_choice=named)  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    _check_call(choice.message.tool_calls[0], {"get_weather"})
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[SEARCH, WEATHER],
                                                 tool_choice=named, stream=True))  # fmt: skip
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    joined = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(joined) == json.loads(choice.message.tool_calls[0].function.arguments)  # greedy
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_then_the_result_goes_back(client: Any) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[SEARCH])
    choice = reply.choices[0]
    print(choice)
    if not choice.message.tool_calls:  # the model may answer directly; then it is a plain reply
        assert choice.finish_reason in ("stop", "length") and choice.message.content
        return
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    _check_call(call, {"search"})
    messages = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id,
         "content": "[1] The Marrow Point lighthouse tower was designed by Edith Varley in 1871."},
    ]  # fmt: skip
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[SEARCH], tool_choice="none"
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content


def test_required_gives_a_call_and_none_gives_text(client: Any) -> None:
    required = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[SEARCH, WEATHER],
                                              tool_choice="required")  # fmt: skip
    calls = required.choices[0].message.tool_calls
    assert calls and required.choices[0].finish_reason == "tool_calls"
    _check_call(calls[0], {"search", "get_weather"})
    none = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=[SEARCH], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content
