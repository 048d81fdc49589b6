"""The real-model tests of tests/rag/test_llm_contract.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from lectern.errors import ContextTooLong, Stopped, ToolsUnsupported
from lectern.rag.llm.base import stoppable
from lectern.rag.llm.structured import ANY_OBJECT, validate
from tests.rag.test_llm_contract import _build, needs_llama

QUESTION = [SystemMessage("Answer in one word."), HumanMessage("What is the capital of France?")]


BACKENDS = ["local", "llamacpp"]


@pytest.fixture(scope="module", params=BACKENDS)
def smol(request: pytest.FixtureRequest, models_dir: Path) -> Any:
    return _build(request.param, "packaged:smollm2", models_dir)


@pytest.fixture(scope="module", params=BACKENDS)
def qwen(request: pytest.FixtureRequest, models_dir: Path) -> Any:
    return _build(request.param, "packaged:qwen2.5-0.5b", models_dir, max_new_tokens=48)


@pytest.mark.e2e
def test_known_answer_with_usage(smol: Any) -> None:
    reply = smol.invoke(QUESTION)
    assert "Paris" in reply.content
    used = reply.usage_metadata
    assert used["input_tokens"] == smol.get_num_tokens_from_messages(QUESTION)
    assert (
        0 < used["output_tokens"] <= 16
        and used["total_tokens"] == used["input_tokens"] + used["output_tokens"]
    )
    assert smol.context_window == 4096  # its native 8192, capped on a CPU (CPU_WINDOW)


@pytest.mark.e2e
def test_stream_concatenates_to_invoke(smol: Any) -> None:
    chunks = [c.content for c in smol.stream(QUESTION)]
    assert len([c for c in chunks if c]) > 1 and "".join(chunks) == smol.invoke(QUESTION).content


@pytest.mark.e2e
def test_a_stop_string_ends_the_reply_before_it(smol: Any) -> None:
    counting = [HumanMessage("Count from 1 to 10, separated by commas.")]
    whole = smol.invoke(counting, max_new_tokens=40).content
    assert "4" in whole, whole
    cut = smol.invoke(counting, stop=["4"], max_new_tokens=40).content
    assert cut == whole[: whole.index("4")]
    assert "".join(c.content for c in smol.stream(counting, stop=["4"], max_new_tokens=40)) == cut


@pytest.mark.e2e
def test_a_stop_ends_generation_at_the_next_token(smol: Any) -> None:
    """A web UI job's Stop (rag.llm.base.stoppable) waited for the whole reply, or its next streamed
    word; now the backend checks after each token and ends there with Stopped, streamed or not."""
    counting = [HumanMessage("Count from 1 to 100, separated by commas.")]
    runs = {
        "invoke": lambda: smol.invoke(counting, max_new_tokens=60),
        "stream": lambda: [c.content for c in smol.stream(counting, max_new_tokens=60)],
    }
    for name, run in runs.items():
        checks = 0

        def check() -> None:
            nonlocal checks
            checks += 1
            if checks >= 4:
                raise Stopped("the answer")

        with stoppable(check), pytest.raises(Stopped, match="the answer was stopped"):
            run()
        # one check a token, and none past the stop (llama.cpp looks once more as its loop ends): of 60
        assert 4 <= checks <= 5, (name, checks)
    assert "1, 2" in smol.invoke(counting, max_new_tokens=8).content  # no stop asked: as before


@pytest.mark.e2e
def test_sampling_follows_the_seed_and_greedy_ignores_it(smol: Any) -> None:
    story = [HumanMessage("Write a sentence about a cat.")]
    if smol._llm_type == "lectern-local":  # transformers samples from torch's global generator
        import torch

        torch.manual_seed(7)
        first = smol.invoke(story, temperature=1.0).content
        torch.manual_seed(7)
        assert smol.invoke(story, temperature=1.0).content == first
    else:
        first = smol.invoke(story, temperature=1.0, seed=7).content
        assert smol.invoke(story, temperature=1.0, seed=7).content == first
        others = {smol.invoke(story, temperature=1.0, seed=s).content for s in (1, 2, 3)}
        assert others != {first}  # another seed, another sentence (three tries)
    assert smol.invoke(story, seed=1).content == smol.invoke(story, seed=2).content  # temperature 0


@pytest.mark.e2e
def test_counts_and_the_window(smol: Any) -> None:
    sentence = "The quick brown fox jumps over the lazy dog, twice."
    assert smol.get_num_tokens(sentence) == len(smol.get_token_ids(sentence)) > 5
    assert smol.get_num_tokens_from_messages([HumanMessage(sentence)]) > smol.get_num_tokens(sentence)
    with pytest.raises(ContextTooLong) as info:
        smol.fit_check(HumanMessage("word " * 9000), field="question")
    assert info.value.field == "question" and info.value.window == smol.context_window


@pytest.mark.e2e
def test_batch_equals_single_generations(smol: Any) -> None:
    prompts = [QUESTION, "Name one primary color."]
    assert [m.content for m in smol.batch(prompts)] == [smol.invoke(p).content for p in prompts]


CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


ASK_JSON = [HumanMessage("What is the capital of France and its population? Answer in JSON.")]


@pytest.mark.e2e
def test_a_response_schema_gives_json_that_validates(smol: Any) -> None:
    """Constrained decoding (rag.llm.structured): a grammar on llama.cpp, a token mask on transformers."""
    free = smol.invoke(ASK_JSON, max_new_tokens=40).content
    with pytest.raises(ValueError):  # left free, SmolLM2 answers in prose: the schema is what makes JSON
        json.loads(free)
    reply = smol.invoke(ASK_JSON, response_schema=CITY, max_new_tokens=40)
    validate(json.loads(reply.content), CITY)
    assert reply.usage_metadata["output_tokens"] > 0
    streamed = "".join(c.content for c in smol.stream(ASK_JSON, response_schema=CITY, max_new_tokens=40))
    assert streamed == reply.content
    assert isinstance(
        json.loads(smol.invoke(ASK_JSON, response_schema=ANY_OBJECT, max_new_tokens=40).content), dict
    )


@pytest.mark.e2e
def test_a_template_without_tools_is_refused(smol: Any) -> None:
    with pytest.raises(ToolsUnsupported, match="smollm2"):
        smol.bind_tools([search])


@tool
def search(query: str) -> str:
    """Search the documents for a query."""
    return query


@tool
def list_documents() -> str:
    """List the documents in the collection."""
    return ""


ASK = [HumanMessage("Find who designed the Marrow Point lighthouse. Use the tools.")]


@pytest.mark.e2e
def test_tool_choice_required_and_named_are_enforced(qwen: Any) -> None:
    named = qwen.bind_tools([search, list_documents], tool_choice="list_documents").invoke(ASK)
    assert [c["name"] for c in named.tool_calls] == ["list_documents"]
    required = qwen.bind_tools([search, list_documents], tool_choice="required").invoke(ASK)
    assert required.tool_calls and required.tool_calls[0]["name"] in {"search", "list_documents"}
    assert required.usage_metadata["output_tokens"] > 0
    none = qwen.bind_tools([search], tool_choice="none").invoke(ASK)
    assert not none.tool_calls and "<tool_call>" not in none.content


@pytest.mark.e2e
def test_a_forced_call_has_arguments_that_validate(qwen: Any) -> None:
    """Named and "required" tool_choice decode the call under its schema: that tool (or one of the
    tools), with arguments that validate against its parameters."""
    params = {t.name: convert_to_openai_tool(t)["function"]["parameters"] for t in (search, list_documents)}
    for choice in ("search", "required"):
        reply = qwen.bind_tools([search, list_documents], tool_choice=choice).invoke(ASK)
        assert len(reply.tool_calls) == 1 and not reply.invalid_tool_calls, reply
        call = reply.tool_calls[0]
        assert call["name"] in ({"search"} if choice == "search" else set(params))
        validate(call["args"], params[call["name"]])


@pytest.mark.e2e
def test_a_bound_model_streams_its_call_whole(qwen: Any) -> None:
    bound = qwen.bind_tools([search], tool_choice="search")
    chunks = [
        c for c in bound.stream(ASK) if c.content or c.tool_call_chunks
    ]  # LangChain ends with an empty one
    assert len(chunks) == 1 and chunks[0].tool_call_chunks[0]["name"] == "search"


@pytest.mark.e2e
@needs_llama
def test_llamacpp_prompts_and_counts_as_transformers_does(models_dir: Path) -> None:
    """The template the GGUF carries, rendered here without transformers, is the text transformers
    renders, tools included, and both tokenizers give the same ids. One known difference: in the
    tools section llama.cpp reads `<tool_call>` as Qwen's own added token, where the tokenizer
    transformers rebuilds from the GGUF spells it out; both decode to the same text."""
    local = _build("local", "packaged:qwen2.5-0.5b", models_dir)
    llama = _build("llamacpp", "packaged:qwen2.5-0.5b", models_dir)
    specs = [{"type": "function", "function": {"name": "search", "description": "Search «café» <docs>.",
                                               "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
    for tools in (None, specs):
        assert llama._prompt_text(QUESTION, tools) == local._prompt_text(QUESTION, tools)
    assert llama._prompt_ids(QUESTION) == local._prompt_ids(QUESTION)
    text = llama._prompt_text(QUESTION, specs)
    ours, theirs = llama._prompt_ids(QUESTION, specs), local._prompt_ids(QUESTION, specs)
    assert llama.llama.detokenize(ours, special=True).decode() == local.tokenizer.decode(theirs) == text
    assert ours != theirs and len(ours) < len(theirs)
    assert llama.get_token_ids("naïve café — 42%!") == local.get_token_ids("naïve café — 42%!")


@pytest.mark.e2e
@needs_llama
def test_llamacpp_runs_the_file_in_place_and_a_gguf_path(models_dir: Path, tmp_path: Path) -> None:
    from lectern.rag.models import packaged_gguf

    smol = _build("llamacpp", "packaged:smollm2", tmp_path)
    assert Path(smol.model_path) == packaged_gguf("smollm2", tmp_path)  # the wheel's own file
    assert list(tmp_path.iterdir()) == []  # nothing converted, nothing copied
    by_path = _build("llamacpp", smol.model_path, tmp_path)
    assert (
        by_path.model_name == smol.model_path
        and by_path.invoke(QUESTION).content == smol.invoke(QUESTION).content
    )


@pytest.mark.e2e
@needs_llama
def test_llamacpp_refuses_a_prompt_longer_than_its_context(models_dir: Path) -> None:
    smol = _build("llamacpp", "packaged:smollm2", models_dir, context_window=256)
    assert smol.context_window == 256
    with pytest.raises(ContextTooLong) as info:
        smol.invoke("word " * 400)
    assert info.value.window == 256
