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
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)  # a bound on a hang only


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


@pytest.mark.parametrize(
    ("response_format", "words"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            'needs a required string property "answer"',
        ),
        ({"type": "json_object"}, "needs constrained decoding"),
    ],
)
def test_a_rag_model_takes_response_format_through_the_structured_answer(
    settings: Any, fake_ws: Any, response_format: Any, words: str
) -> None:
    """A RAG model's JSON is the chain's structured answer (answer.json_schema): a schema without a
    string "answer" is a 400 before retrieval, and the fake cannot constrain (the real model does:
    tests/integration/test_serve_continuous_e2e.py)."""
    from lectern.rag.fake import FakeChatModel
    from tests.conftest import SAMPLE_DOCS
    from tests.serve.conftest import serving

    fake_ws.ingest([SAMPLE_DOCS / "brennock_canal.txt"])
    rag = {**ASK, "model": "lectern-rag/test"}
    with serving(settings, FakeChatModel()) as url:
        r = _post(url, {**rag, "response_format": response_format})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "response_format" and words in error["message"], error
        assert _post(url, {**rag, "response_format": {"type": "text"}}).status_code == 200
