"""Tool calls in a local model's text: Qwen2.5's chat template asks for
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, and small models get the JSON slightly
wrong. `parse_tool_calls` turns the text into langchain-core ToolCalls (with ids), repairs only
what has one reading (trailing commas, single quotes, missing closing braces, a code fence) and
reports the rest as InvalidToolCalls, so a run never crashes on a model's typo.

    content, calls, invalid = parse_tool_calls('<tool_call>{"name": "search", "arguments": {"query": "x",}}')

`tool_chat_dicts` renders a conversation with tool calls and tool results as the dicts
`apply_chat_template` expects (assistant `tool_calls`, role `tool`).

`tool_choice` (OpenAI's "none", "auto", "required" or a named function; LangChain's "any" and True
too) is enforced on a local model by what its reply starts with (`forced_start`: `<tool_call>`) and
then by constrained decoding of the call (rag.llm.structured): the named tool, or for "required" one
of the tools, with arguments that validate against its parameters; "none" renders no tools at all.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call

from lectern.rag.llm.base import to_chat_dicts

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def supports_tools(chat_template: str | None) -> bool:
    """Whether a chat template renders a `tools` list (Qwen2.5's does; SmolLM2's ignores it)."""
    return bool(chat_template) and "tools" in str(chat_template)


def normalize_tool_choice(choice: Any, names: Sequence[str]) -> str:
    """ "auto", "none", "required" or the name of one of the tools `names`, from any of the forms
    OpenAI and LangChain use; InvalidInput (field `tool_choice`) for anything else."""
    from lectern.errors import InvalidInput

    if choice is None or choice == "auto":
        return "auto"
    if choice in ("none", "required"):
        return str(choice)
    if choice == "any" or (choice is True and len(names) == 1):
        return "required" if choice == "any" else names[0]
    if isinstance(choice, dict):
        function = choice.get("function") if choice.get("type", "function") == "function" else None
        choice = function.get("name") if isinstance(function, dict) else choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    known = ", ".join(["auto", "none", "required", *names])
    raise InvalidInput("tool_choice", choice, f"not one of the tools; use one of {known}")


def forced_start(choice: str) -> str:
    """The text a reply is made to start with so that it honours `choice` (normalized): nothing for
    "auto"/"none", an opened `<tool_call>` block for "required" or a named function. What follows is
    decoded under the schema of the call (rag.llm.structured.tool_call_schema): that tool's name, or
    one of the tools', and arguments that validate against its parameters."""
    if choice in ("auto", "none"):
        return ""
    return OPEN + "\n"


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """The text outside `<tool_call>` blocks, the calls parsed from them, and the blocks that could
    not be read. A reply that is nothing but one `{"name": ..., "arguments": ...}` object (the tags
    forgotten), bare or in a code fence (Qwen 0.5B on llama.cpp writes one), is read as a call too."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    bodies = [m.group(1) for m in _BLOCK.finditer(text)]
    content = _BLOCK.sub("", text).strip() if bodies else text.strip()
    bare = "" if bodies else _FENCE.sub("", content).strip()
    if bare.startswith("{") and '"name"' in bare:
        bodies, content = [bare], ""
    for body in bodies:
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        data, error = _read_json(body)
        if data is None:
            invalid.append(invalid_tool_call(name=None, args=body.strip(), id=call_id, error=error))
            continue
        name, args = data.get("name"), data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):  # arguments given as a JSON string (the OpenAI wire form)
            args, error = _read_json(args)
        if not isinstance(name, str) or not name or not isinstance(args, dict):
            why = error or "a tool call needs a string 'name' and an object 'arguments'"
            shown = name if isinstance(name, str) else None
            invalid.append(invalid_tool_call(name=shown, args=body.strip(), id=call_id, error=why))
            continue
        calls.append(tool_call(name=name, args=args, id=call_id))
    return content, calls, invalid


def _read_json(body: str) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object from `body`, repaired where the repair has one reading; else (None, reason)."""
    text = _FENCE.sub("", body.strip()).strip()
    if not text:
        return None, "empty tool call"
    first_error = ""
    for attempt in _repairs(text):
        try:
            value = json.loads(attempt)
        except json.JSONDecodeError as error:
            first_error = first_error or f"invalid JSON: {error.msg} at column {error.colno}"
            continue
        if isinstance(value, dict):
            return value, None
        return None, "the tool call is JSON but not an object"
    return None, first_error


def _repairs(text: str) -> list[str]:
    """The text, then cumulative repairs: trailing commas removed; single quotes made double (only
    when the text has no double quote, so no string can change meaning); closing braces added when
    the text ends inside the object (and not inside a string)."""
    out = [text]
    fixed = _TRAILING_COMMA.sub(r"\1", text)
    out.append(fixed)
    if "'" in fixed and '"' not in fixed:
        fixed = fixed.replace("'", '"')
        out.append(fixed)
    missing = _unclosed(fixed)
    if missing:
        out.append(_TRAILING_COMMA.sub(r"\1", fixed.rstrip().rstrip(",") + missing))
    return out


def _unclosed(text: str) -> str:
    """The closers an object cut short needs ("}}", "]}"), or "" when it is balanced, ends inside a
    string, or closes more than it opens (no single reading)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and (not stack or stack.pop() != char):
            return ""
    if in_string or not stack:
        return ""
    return "".join(reversed(stack))


def tool_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages as chat-template dicts, keeping an assistant's tool calls and tool results."""
    out: list[dict[str, Any]] = []
    for message, plain in zip(messages, to_chat_dicts(messages), strict=True):
        entry: dict[str, Any] = dict(plain)
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [
                {"type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
                for c in message.tool_calls
            ]
        elif isinstance(message, ToolMessage):
            entry["role"] = "tool"
        out.append(entry)
    return out


def format_tool_call(name: str, args: dict[str, Any]) -> str:
    """A call in the `<tool_call>` form the model writes (for fakes and tests)."""
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': args})}\n{CLOSE}"


def openai_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages in the OpenAI wire form: an assistant's `tool_calls` with ids and JSON-string
    arguments, tool results as role `tool` with their `tool_call_id`."""
    out: list[dict[str, Any]] = []
    for message, plain in zip(messages, to_chat_dicts(messages), strict=True):
        entry: dict[str, Any] = dict(plain)
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
                }
                for c in message.tool_calls
            ]
        elif isinstance(message, ToolMessage):
            entry.update(role="tool", tool_call_id=message.tool_call_id)
        out.append(entry)
    return out


def from_openai_tool_calls(raw: list[dict[str, Any]] | None) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """An OpenAI response's `tool_calls` as ToolCalls; arguments that are not a JSON object (after
    the same unambiguous repairs as the local model's) become InvalidToolCalls."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for item in raw or []:
        function = item.get("function") or {}
        name, arguments = function.get("name"), function.get("arguments") or "{}"
        call_id = item.get("id") or f"call_{uuid.uuid4().hex[:12]}"
        args, error = (arguments, None) if isinstance(arguments, dict) else _read_json(str(arguments))
        if not isinstance(name, str) or not name or args is None:
            why = error or "a tool call needs a function name"
            invalid.append(invalid_tool_call(name=name, args=str(arguments), id=call_id, error=why))
            continue
        calls.append(tool_call(name=name, args=args, id=call_id))
    return calls, invalid
