"""A tool-bound chat reply on its way out: the text the model writes (Qwen's `<tool_call>` blocks, or
calls a backend parsed itself) becomes OpenAI's message `content` plus `tool_calls`, whole or as
stream deltas.

While streaming, the text before a `<tool_call>` goes out as content as it comes (holding back a
tail that could be the start of the tag, or everything when the reply opens with a bare `{`, which
may be a call without its tags); the calls go out once the reply is complete, each as OpenAI's two
deltas: the call's id and name, then its arguments. A block that cannot be read as a call stays in
the content as the model wrote it, so nothing the model said is lost.

    reply = ToolReply(start)            # start: the text the reply was forced to begin with
    piece = reply.feed(text)            # content to stream now ("" while holding back)
    content, calls = reply.finish()     # the whole content and OpenAI-shaped tool_calls
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import ToolCall

from lectern.rag.llm.tool_calls import CLOSE, OPEN, parse_tool_calls
from lectern.serve.stop_strings import held_back


class ToolReply:
    def __init__(self, start: str = "") -> None:
        self.text = start
        self.sent = ""
        self.parsed: list[ToolCall] = []  # calls a backend returned already parsed (fake, upstream)

    def feed(self, piece: str) -> str:
        """Add the model's next text; returns the content that can be streamed now."""
        self.text += piece
        if self.text.lstrip().startswith("{"):
            return ""
        cut = self.text.find(OPEN)
        safe = self.text[:cut] if cut >= 0 else self.text[: len(self.text) - held_back(self.text, [OPEN])]
        if len(safe) <= len(self.sent):
            return ""
        new, self.sent = safe[len(self.sent) :], safe
        return new

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """(the whole content, the tool calls in OpenAI's wire form)."""
        content, calls, invalid = parse_tool_calls(self.text)
        if invalid:  # kept as written: the client sees what the model tried
            blocks = [f"{OPEN}{bad['args']}{CLOSE}" for bad in invalid]
            content = "\n".join([content, *blocks]).strip()
        return content, [_wire(c) for c in [*self.parsed, *calls]]

    def rest(self, content: str) -> str:
        """The part of the final `content` not streamed yet."""
        sent = self.sent.lstrip()  # the content is stripped; what was sent may end in a space
        return content[len(sent) :] if content.startswith(sent) else ""


def _wire(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(call["args"], ensure_ascii=False)},
    }


def stream_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's stream deltas for `calls`: per call, its index, id, type and name with empty
    arguments, then its arguments (a client joins the argument pieces by index)."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}  # fmt: skip
        deltas.append({"tool_calls": [head]})
        deltas.append(
            {"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]}
        )
    return deltas


def finish_reason(reason: str, calls: list[dict[str, Any]]) -> str:
    """ "tool_calls" for a reply that ended on its own with calls; a cut one keeps its reason."""
    return "tool_calls" if calls and reason == "stop" else reason
