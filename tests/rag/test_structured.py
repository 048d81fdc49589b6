"""Structured output's one module (rag.llm.structured), without a model: OpenAI's response_format as a
schema, the schema of a forced tool call, and schemas refused with the field named. Constrained
decoding itself, on both backends with the real SmolLM2 and Qwen, is in tests/rag/test_llm_contract.py."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from lectern.errors import InvalidInput
from lectern.rag.llm.structured import (
    ANY_OBJECT,
    check_schema,
    gbnf,
    response_schema,
    schema_key,
    tool_call_schema,
    validate,
)

SEARCH = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}  # fmt: skip
LIST = {"type": "function", "function": {"name": "list_documents"}}


class Person(BaseModel):
    name: str
    born: int


class Team(BaseModel):  # nested: pydantic writes $defs and $ref
    members: list[Person]


def test_response_format_maps_to_a_schema() -> None:
    assert response_schema(None) is None and response_schema({"type": "text"}) is None
    assert response_schema({"type": "json_object"}) == ANY_OBJECT
    schema = Team.model_json_schema()
    given = {"type": "json_schema", "json_schema": {"name": "team", "schema": schema, "strict": True}}
    assert response_schema(given) == schema
    assert gbnf(schema_key(schema)).count("::=") > 3  # llama.cpp's grammar, $refs resolved


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"type": "xml"}, "type must be one of"),
        ("json", "type must be one of"),
        ({"type": "json_schema"}, "needs json_schema.schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "thing"}}},
            "not a valid JSON schema",
        ),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1, 2]}}, "must be a JSON object"),
    ],
)
def test_a_bad_response_format_names_the_field(given: Any, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        response_schema(given)
    assert info.value.field == "response_format" and words in str(info.value)


def test_a_named_call_must_be_that_tool_with_valid_arguments() -> None:
    call = check_schema(tool_call_schema([SEARCH, LIST], "search") or {}, "tools")
    validate({"name": "search", "arguments": {"query": "canal"}}, call)
    for wrong in (
        {"name": "list_documents", "arguments": {}},
        {"name": "search", "arguments": {}},
        {"name": "search", "arguments": {"query": 42}},
        {"name": "search"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(wrong, call)


def test_required_is_any_one_tool_and_auto_is_free() -> None:
    call = check_schema(tool_call_schema([SEARCH, LIST], "required") or {}, "tools")
    validate({"name": "list_documents", "arguments": {}}, call)
    validate({"name": "search", "arguments": {"query": "x"}}, call)
    with pytest.raises(jsonschema.ValidationError):
        validate({"name": "delete_everything", "arguments": {}}, call)
    assert tool_call_schema([SEARCH], "auto") is None and tool_call_schema([SEARCH], "none") is None


def test_the_grammar_keeps_control_characters_out_of_strings() -> None:
    """A raw newline inside a JSON string is not JSON: the grammar's string character is llama.cpp's
    own rule, not llama-cpp-python's looser one (a reply with one failed json.loads)."""
    pytest.importorskip("llama_cpp")
    from llama_cpp import LlamaGrammar

    grammar = gbnf(schema_key({"type": "object", "properties": {"answer": {"type": "string"}}}))
    char = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |'), char
    LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp reads it
