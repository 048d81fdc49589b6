"""`response_format` on /v1/chat/completions, over the fake model on a real loopback server: a schema
that cannot be decoded under is a 400 naming response_format, and a model that cannot constrain its
decoding (the fake, an upstream server) says so with a 400 rather than answering in free text. The
constrained replies themselves: tests/integration/test_serve_structured_e2e.py, with the real model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

ASK = {"model": "fake", "messages": [{"role": "user", "content": "Who built the canal?"}]}


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize(
    ("response_format", "words"),
    [
        ({"type": "yaml"}, "type must be one of"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "needs json_schema.schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 3}}},
            "not a valid JSON schema",
        ),
        ({"type": "json_object"}, "needs constrained decoding"),
    ],
)
def test_a_response_format_the_model_cannot_honour_is_a_400(
    fake_url: str, response_format: Any, words: str
) -> None:
    r = _post(fake_url, {**ASK, "response_format": response_format})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "response_format" and words in error["message"], error
    assert _post(fake_url, {**ASK, "response_format": {"type": "text"}}).status_code == 200
