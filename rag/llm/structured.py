"""Structured output: a reply made to be JSON that validates against a JSON schema, by constrained
decoding on the two backends that run a model here, from the one schema:

- llamacpp: a GBNF grammar built from the schema (llama.cpp's `json_schema_to_gbnf`), passed as
  `grammar=` to create_completion; llama.cpp's own sampler then allows only the grammar's tokens.
- local (transformers): lm-format-enforcer's JsonSchemaParser over the model's tokenizer, as a
  logits processor that masks every token the schema does not allow next (`JsonRows`, one
  constraint per row of a batch, or none for a row that is free).

A caller passes `response_schema=SCHEMA` to a model call (invoke, stream, batch, `_complete`); the
server maps OpenAI's `response_format` (`response_schema`) and a forced tool call (`tool_call_schema`:
the call object `{"name": NAME, "arguments": {...}}` whose arguments follow the tool's parameters)
to one. `ANY_OBJECT` is `json_object`: any JSON object. `check_schema` turns a schema either backend
cannot build into InvalidInput naming the field, before any model work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lectern.errors import BackendUnavailable, InvalidInput

ANY_OBJECT: dict[str, Any] = {"type": "object"}
"""OpenAI's `{"type": "json_object"}`: any JSON object."""

MAX_WHITESPACE = 2
"""Whitespace allowed in a row between JSON tokens on transformers (llama.cpp's grammar allows one
space, or a newline and an indent): a small model left free pads a constrained reply with newlines
until max_tokens cuts the JSON short."""


def schema_key(schema: dict[str, Any]) -> str:
    """A schema as canonical text: the cache key of what is built from it."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def check_schema(schema: Any, field: str) -> dict[str, Any]:
    """`schema` if it is a JSON schema (an object) that both backends can build a constraint from;
    else InvalidInput naming `field` and the reason."""
    if not isinstance(schema, dict):
        raise InvalidInput(field, str(schema)[:80], "a JSON schema must be a JSON object")
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.path)
        raise InvalidInput(field, where or "schema", f"not a valid JSON schema: {error.message}") from None
    from lmformatenforcer import JsonSchemaParser

    try:
        JsonSchemaParser(schema)
    except Exception as error:  # what lm-format-enforcer cannot read (it raises plain exceptions)
        raise InvalidInput(field, "schema", f"not supported for constrained decoding: {error}") from None
    try:
        gbnf(schema_key(schema))
    except BackendUnavailable:  # no llama.cpp here: lm-format-enforcer reads the schema when it runs
        pass
    except Exception as error:  # the converter raises plain exceptions for what it cannot express
        raise InvalidInput(field, "schema", f"cannot be turned into a grammar: {error}") from None
    return schema


def response_schema(response_format: Any, field: str = "response_format") -> dict[str, Any] | None:
    """The schema OpenAI's `response_format` asks for: None for `text` (or none given), ANY_OBJECT for
    `json_object`, the checked `json_schema.schema` for `json_schema`; InvalidInput naming `field`."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidInput(field, "json_schema", "needs json_schema.schema (a JSON schema)")
        return check_schema(spec["schema"], field)
    raise InvalidInput(field, str(kind), "type must be one of text, json_object, json_schema")


def tool_call_schema(tools: list[dict[str, Any]], choice: str) -> dict[str, Any] | None:
    """The schema of the call a reply must write under `choice` (normalized): for a tool's name,
    `{"name": NAME, "arguments": ...}` with the tool's parameters as the arguments' schema; for
    "required", any one of the tools so; None for "auto" and "none"."""
    if choice in ("auto", "none"):
        return None
    specs = [t["function"] for t in tools if choice == "required" or t["function"]["name"] == choice]
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": spec["name"]},
                "arguments": spec.get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for spec in specs
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def load_schema(path: Path, field: str) -> dict[str, Any]:
    """The JSON schema in the file at `path`, checked (check_schema); InvalidInput naming `field` and
    the file when it cannot be read or is not a schema both backends can decode under."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInput(field, str(path), f"cannot read the file ({error.strerror or error})") from None
    except ValueError as error:
        raise InvalidInput(field, str(path), f"not JSON ({error})") from None
    try:
        return check_schema(schema, field)
    except InvalidInput as error:
        raise InvalidInput(field, str(path), error.reason) from None


def validate(value: Any, schema: dict[str, Any]) -> None:
    """jsonschema's ValidationError unless `value` validates against `schema`."""
    import jsonschema

    jsonschema.validate(value, schema)


# --------------------------------------------------------------------------- llama.cpp: a grammar


@lru_cache(maxsize=64)
def gbnf(key: str) -> str:
    """The GBNF grammar of the schema whose schema_key is `key` (pure Python, no model needed)."""
    from lectern.rag.llm.llamacpp_import import import_llama_cpp

    import_llama_cpp()  # its threads' wait policy is set before llama.cpp loads
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(key)).replace(_LOOSE_CHAR, _JSON_CHAR)


_LOOSE_CHAR, _JSON_CHAR = 'char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'
"""llama-cpp-python's string character admits control characters, which JSON strings may not hold
raw (a model wrote a newline inside "answer", and json.loads refused the reply): the rule of
llama.cpp's own json-schema-to-grammar instead."""


def llama_grammar(schema: dict[str, Any]) -> Any:
    """A fresh llama_cpp.LlamaGrammar for `schema` (create_completion's `grammar=`)."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(gbnf(schema_key(schema)), verbose=False)


# --------------------------------------------------------------------------- transformers: a mask


_TOKENIZER_DATA: dict[int, tuple[Any, Any]] = {}  # id(tokenizer) -> (tokenizer, data)


def tokenizer_data(tokenizer: Any, eos_ids: list[int], vocab_size: int) -> Any:
    """lm-format-enforcer's view of a transformers tokenizer (each token's text, and whether it starts
    a word), built once per tokenizer: a second or two for SmolLM2's 49k tokens. `vocab_size` is the
    model's (its logits' width), which can differ from len(tokenizer)."""
    held = _TOKENIZER_DATA.get(id(tokenizer))
    if held is not None and held[0] is tokenizer:
        return held[1]
    from lmformatenforcer import TokenEnforcerTokenizerData

    special = set(tokenizer.all_special_ids)
    size = min(len(tokenizer), vocab_size)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    ids = [i for i in range(size) if i not in special]
    after_zero = tokenizer.batch_decode([[zero, i] for i in ids])
    alone = tokenizer.batch_decode([[i] for i in ids])
    regular = [
        (i, pair[1:], len(pair) - 1 > len(one)) for i, pair, one in zip(ids, after_zero, alone, strict=True)
    ]

    def decode(tokens: list[int]) -> str:
        return str(tokenizer.decode(tokens)).rstrip("\ufffd")

    data = TokenEnforcerTokenizerData(regular, decode, list(eos_ids), False, size)
    _TOKENIZER_DATA[id(tokenizer)] = (tokenizer, data)
    return data


class JsonConstraint:
    """One reply's constraint on transformers: the tokens `schema` allows after the tokens generated
    so far (lm-format-enforcer's TokenEnforcer; it keeps the parser state of each prefix it saw)."""

    def __init__(self, schema: dict[str, Any], tokenizer: Any, eos_ids: list[int], vocab_size: int) -> None:
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer

        data = tokenizer_data(tokenizer, eos_ids, vocab_size)
        parser = JsonSchemaParser(schema)
        self.enforcer = TokenEnforcer(data, parser)
        parser.config = CharacterLevelParserConfig(
            alphabet=data.tokenizer_alphabet,
            max_consecutive_whitespaces=MAX_WHITESPACE,
            force_json_field_order=True,  # as llama.cpp's grammar: the schema's order
        )

    def allowed(self, generated: list[int]) -> list[int]:
        return list(self.enforcer.get_allowed_tokens(generated).allowed_tokens)


def json_rows(constraints: JsonConstraint | Sequence[JsonConstraint | None], prompt_len: int) -> Any:
    """A transformers LogitsProcessor that leaves, in row i, only the tokens constraints[i] allows
    after that row's generated tokens (those past `prompt_len`); a row with None is left free. One
    constraint applies to every row (its enforcer keeps each prefix's state apart)."""
    import torch
    from transformers import LogitsProcessor

    class JsonRows(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            for i in range(scores.shape[0]):
                constraint = constraints if isinstance(constraints, JsonConstraint) else constraints[i]
                if constraint is None:
                    continue
                allowed = constraint.allowed(input_ids[i, prompt_len:].tolist())
                keep = torch.full_like(scores[i], -float("inf"))
                keep[allowed] = 0.0
                scores[i] = scores[i] + keep
            return scores

    return JsonRows()
