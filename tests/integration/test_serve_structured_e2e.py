"""Structured output and a backend-neutral prompt path through a real `lectern serve` subprocess on
loopback, on both backends that run a model here (`--backend local` and `--backend llamacpp`), with
the clients people use: the `openai` client's `parse()` with a pydantic model, LangChain's
`with_structured_output(method="json_schema")`, a streamed `json_object`; a named and a "required"
tool_choice with Qwen, whose arguments validate against the tool's parameters; a raw /v1/completions
prompt continued as written; tools for a template without a tools section a 400.

What a real model writes cannot be scripted: the assertions are on what constrained decoding
guarantees (JSON that validates), never on the model's wording.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field

from lectern.rag.llm.structured import validate
from lectern.serve.server import CONTINUOUS_ROWS
from tests.fixtures.ui_server import child_env, lectern_serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
SMOL, QWEN = "packaged:smollm2", "packaged:qwen2.5-0.5b"
ASK = [{"role": "user", "content": "What is the capital of France and how many people live there?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the library for passages about a topic.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


class City(BaseModel):
    city: str = Field(max_length=40)
    population: int


def _serve(tmp: Path, model: str, backend: str) -> Any:
    env = child_env()
    env.update(LECTERN_DATA_DIR=str(tmp), LECTERN_LLM__THREADS="1", LECTERN_LLM__MAX_NEW_TOKENS="48",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    args = ["--model", model, "--backend", backend, "--log-level", "warning"]
    return lectern_serve(args, env, tmp / "serve.log", timeout_s=600)


@pytest.fixture(scope="module", params=["local", "llamacpp"])
def smol(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(URL, backend) of `lectern serve` with SmolLM2 on that backend."""
    if request.param == "llamacpp" and not __import__("importlib").util.find_spec("llama_cpp"):
        pytest.skip("llama-cpp-python not installed")
    with _serve(tmp_path_factory.mktemp(f"structured-{request.param}"), SMOL, request.param) as url:
        yield url, request.param


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)


def test_parse_returns_the_pydantic_object(smol: tuple[str, str]) -> None:
    reply = _client(smol[0]).chat.completions.parse(
        model=SMOL, messages=ASK, response_format=City, max_tokens=48
    )
    message = reply.choices[0].message
    assert isinstance(message.parsed, City), message.content
    assert reply.choices[0].finish_reason == "stop"


def test_a_streamed_json_object_is_one_object(smol: tuple[str, str]) -> None:
    stream = _client(smol[0]).chat.completions.create(
        model=SMOL, messages=ASK, response_format={"type": "json_object"}, max_tokens=48, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict), text


def test_langchain_with_structured_output_json_schema(smol: tuple[str, str]) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{smol[0]}/v1", api_key="none", model=SMOL, max_retries=0, max_tokens=48)
    city = llm.with_structured_output(City, method="json_schema").invoke(ASK[0]["content"])
    assert isinstance(city, City)


def test_a_raw_prompt_is_continued_as_written(smol: tuple[str, str], models_dir: Path) -> None:
    """/v1/completions continues the prompt itself, not a chat turn holding it: the served text is
    the one the same backend writes in this process for the bare prompt (greedy, same settings)."""
    from lectern.rag.llm import build_llm
    from lectern.rag.settings import LLMSettings

    prompt = "The three primary colors are"
    r = httpx.post(
        f"{smol[0]}/v1/completions", json={"model": SMOL, "prompt": prompt, "max_tokens": 12}, timeout=300
    )
    assert r.status_code == 200, r.text
    served = r.json()["choices"][0]["text"]
    here = build_llm(LLMSettings(backend=smol[1], model=SMOL, temperature=0, device="cpu"), models_dir)
    assert served == "".join(here.stream_text(prompt, max_new_tokens=12))
    chat = httpx.post(f"{smol[0]}/v1/chat/completions", json={"model": SMOL, "messages": [
        {"role": "user", "content": prompt}], "max_tokens": 12}, timeout=300).json()  # fmt: skip
    assert chat["usage"]["prompt_tokens"] > r.json()["usage"]["prompt_tokens"] + 10  # the template's turn


def test_tools_for_a_template_without_them_are_a_400(smol: tuple[str, str]) -> None:
    body = {"model": SMOL, "messages": ASK, "tools": [WEATHER], "tool_choice": "required"}
    r = httpx.post(f"{smol[0]}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "tools" and r.json()["error"]["code"] == "tools_unsupported"


@pytest.fixture(scope="module")
def qwen_llamacpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Qwen 0.5B (a template with tools) on llama.cpp; the same on transformers is
    tests/integration/test_serve_tools_e2e.py's server."""
    if not __import__("importlib").util.find_spec("llama_cpp"):
        pytest.skip("llama-cpp-python not installed")
    with _serve(tmp_path_factory.mktemp("structured-qwen"), QWEN, "llamacpp") as url:
        yield url


def test_a_forced_call_has_arguments_that_validate(qwen_llamacpp: str) -> None:
    client = _client(qwen_llamacpp)
    question = [{"role": "user", "content": "Is it cold in Oslo today? Also find books about Oslo."}]
    params = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, SEARCH)}
    for choice in ({"type": "function", "function": {"name": "get_weather"}}, "required"):
        reply = client.chat.completions.create(
            model=QWEN, messages=question, tools=[SEARCH, WEATHER], tool_choice=choice, max_tokens=48
        )
        calls = reply.choices[0].message.tool_calls
        assert calls and reply.choices[0].finish_reason == "tool_calls", reply
        name = calls[0].function.name
        assert name == "get_weather" if isinstance(choice, dict) else name in params
        validate(json.loads(calls[0].function.arguments), params[name])
    rows = httpx.get(f"{qwen_llamacpp}/health").json()["generation"]["max_batch"]
    assert rows == CONTINUOUS_ROWS  # no --max-batch: llama.cpp's continuous rows
