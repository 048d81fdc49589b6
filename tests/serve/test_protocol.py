"""The OpenAI protocol of `lectern serve`, over the fake model on a real loopback server: shapes,
stream frame order, every refused request with its status and error body, disconnects, the queue bound."""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from lectern.errors import Exposed
from lectern.exposure import API_SERVER, check_exposure
from lectern.rag.fake import DONT_KNOW, FakeChatModel
from lectern.rag.prompts import NO_ANSWER
from tests.serve.conftest import (
    EndlessFake,
    FailingFake,
    health,
    serving,
    serving_uvicorn,
    sse_events,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Hello there"}]}


def post(url: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=30, **kw)


def stream_lines(url: str, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(r.iter_lines())


def test_models_list_the_local_model_the_embedder_and_one_rag_model_per_collection(
    settings: Any, fake_ws: Any
) -> None:
    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    with serving(settings, FakeChatModel()) as url:
        body = httpx.get(f"{url}/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fake", "lectern-embed", "lectern-rag/test"]
    for card in body["data"]:
        assert set(card) == {"id", "object", "created", "owned_by"} and card["object"] == "model"


def test_chat_completion_has_openai_fields_and_always_usage(fake_url: str) -> None:
    body = post(fake_url, "/v1/chat/completions", CHAT).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": DONT_KNOW},
        "finish_reason": "stop",
    }
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}


def test_max_tokens_cuts_with_finish_reason_length(fake_url: str) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = post(fake_url, "/v1/chat/completions", {**CHAT, field: 3}).json()
        assert body["choices"][0]["message"]["content"] == "I don't know "
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 3


def test_stop_strings_end_the_answer_before_them(fake_url: str) -> None:
    body = post(fake_url, "/v1/chat/completions", {**CHAT, "stop": ["based"]}).json()
    assert body["choices"][0]["message"]["content"] == "I don't know "
    assert body["choices"][0]["finish_reason"] == "stop"
    events = sse_events(stream_lines(fake_url, {**CHAT, "stream": True, "stop": "know"}))
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "I don't "


def test_stream_frames_role_first_then_content_then_finish_then_usage_then_done(fake_url: str) -> None:
    lines = stream_lines(fake_url, {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert not [line for line in lines if line.startswith("event:")]
    events = sse_events(lines)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = chunks[1:-2]
    assert content and all(c["choices"][0]["finish_reason"] is None for c in content)
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == DONT_KNOW
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI: null until the last chunk


def test_stream_without_include_usage_sends_no_usage(fake_url: str) -> None:
    events = sse_events(stream_lines(fake_url, {**CHAT, "stream": True}))
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_text_completions(fake_url: str) -> None:
    body = post(
        fake_url, "/v1/completions", {"model": "fake", "prompt": "Once upon a time", "max_tokens": 2}
    ).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "I don't "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    with httpx.stream(
        "POST", f"{fake_url}/v1/completions", json={"model": "fake", "prompt": ["Hi"], "stream": True}
    ) as r:
        events = sse_events(list(r.iter_lines()))
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks) == DONT_KNOW


def test_embeddings_float_base64_and_token_ids(fake_url: str) -> None:
    floats = post(fake_url, "/v1/embeddings", {"model": "lectern-embed", "input": ["a b", "c"]}).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"]["prompt_tokens"] == 3 == floats["usage"]["total_tokens"]
    b64 = post(
        fake_url,
        "/v1/embeddings",
        {"model": "lectern-embed", "input": ["a b", "c"], "encoding_format": "base64"},
    ).json()
    for as_float, packed in zip(floats["data"], b64["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(packed["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(as_float["embedding"], dtype=np.float32))
    one = post(fake_url, "/v1/embeddings", {"model": "lectern-embed", "input": "a b"}).json()
    assert one["data"][0]["embedding"] == floats["data"][0]["embedding"]
    ids = post(fake_url, "/v1/embeddings", {"model": "lectern-embed", "input": [[1, 2], [3]]}).json()
    assert len(ids["data"]) == 2
    flat = post(fake_url, "/v1/embeddings", {"model": "lectern-embed", "input": [1, 2]}).json()
    assert flat["data"][0]["embedding"] == ids["data"][0]["embedding"]


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "fake"}, "messages"),
        ({"model": "fake", "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "top_p": 0}, "top_p"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "n": 2}, "n"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**CHAT, "tools": [{"type": "function"}]}, "tools"),
        ({**CHAT, "logprobs": True}, "logprobs"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
        ({**CHAT, "stream": "yes"}, "stream"),
    ],
)
def test_invalid_bodies_are_400_in_openai_shape_not_422(fake_url: str, body: Any, param: str) -> None:
    error = _error(post(fake_url, "/v1/chat/completions", body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_malformed_json_is_400(fake_url: str) -> None:
    r = httpx.post(f"{fake_url}/v1/chat/completions", content=b'{"model": ', timeout=10)
    assert _error(r, 400)["code"] == "invalid_json"
    r = httpx.post(f"{fake_url}/v1/chat/completions", content=b"[1, 2]", timeout=10)
    _error(r, 400)


def test_unknown_model_and_unknown_route_are_404(fake_url: str) -> None:
    error = _error(post(fake_url, "/v1/chat/completions", {**CHAT, "model": "gpt-4o"}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    _error(post(fake_url, "/v1/chat/completions", {**CHAT, "model": "lectern-rag/nope"}), 404)
    _error(post(fake_url, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}), 404)
    _error(httpx.get(f"{fake_url}/v1/nothing"), 404)


def test_context_overflow_is_400_naming_the_limit(settings: Any) -> None:
    with serving(settings, FakeChatModel(context_window=16)) as url:
        long = {"model": "fake", "messages": [{"role": "user", "content": "word " * 20}]}
        error = _error(post(url, "/v1/chat/completions", long), 400)
        assert error["code"] == "context_length_exceeded" and "16" in error["message"]
        error = _error(post(url, "/v1/chat/completions", {**CHAT, "max_tokens": 15}), 400)
        assert "16" in error["message"] and "max_tokens" in error["message"]
        assert post(url, "/v1/chat/completions", {**CHAT, "max_tokens": 14}).status_code == 200
        assert health(url)["submitted"] == 1  # the refused ones never reached the model


def test_api_keys_401_when_missing_or_wrong_and_health_models_public(settings: Any) -> None:
    with serving(settings, FakeChatModel(), api_keys=("k1", "k2")) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 200
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k1"}):
            r = post(url, "/v1/chat/completions", CHAT, headers=headers)
            assert _error(r, 401)["code"] == "invalid_api_key"
        _error(httpx.get(f"{url}/v1/collections"), 401)
        r = httpx.post(f"{url}/v1/chat/completions", content=b"{bad", timeout=10)
        _error(r, 401)  # the key is checked before the body is read
        for key in ("k1", "k2"):
            r = post(url, "/v1/chat/completions", CHAT, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200


def test_too_large_a_body_is_413(settings: Any) -> None:
    with serving(settings, FakeChatModel(), max_body_bytes=1000) as url:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        _error(post(url, "/v1/chat/completions", big), 413)

        def chunked() -> Any:  # no Content-Length: counted as it arrives
            yield b'{"model": "fake", "messages": [{"role": "user", "content": "'
            yield b"x" * 2000
            yield b'"}]}'

        r = httpx.post(f"{url}/v1/chat/completions", content=chunked(), timeout=10)
        _error(r, 413)
        assert post(url, "/v1/chat/completions", CHAT).status_code == 200


def test_disconnect_mid_stream_cancels_the_generation_and_frees_the_model(settings: Any) -> None:
    with serving(settings, EndlessFake(), max_batch=1) as url:
        body = {**CHAT, "stream": True, "max_tokens": 2000}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if "tick" in line:
                    break
        stats = wait_for(url, "cancelled", lambda s: s["cancelled"] == 1 and s["running"] == 0)
        assert stats["completed"] == 0
        r = post(url, "/v1/chat/completions", {**CHAT, "max_tokens": 3})  # the model is free again
        assert r.json()["choices"][0]["message"]["content"] == "tick tick tick "


def test_past_the_queue_bound_503_with_retry_after_and_the_server_stays_healthy(settings: Any) -> None:
    import openai

    with serving(settings, EndlessFake(), max_batch=1, max_queue=2) as url:
        body = {**CHAT, "stream": True, "max_tokens": 2000}
        client = httpx.Client(timeout=30)
        streams = []
        for expected in (
            {"running": 1, "waiting": 0},
            {"running": 1, "waiting": 1},
            {"running": 1, "waiting": 2},
        ):
            s = client.stream("POST", f"{url}/v1/chat/completions", json=body)
            s.__enter__()
            streams.append(s)
            wait_for(url, f"at {expected}", lambda st, e=expected: all(st[k] == v for k, v in e.items()))
        r = post(url, "/v1/chat/completions", CHAT)
        error = _error(r, 503)
        assert error["code"] == "server_busy"
        assert int(r.headers["Retry-After"]) >= 3  # the running batch and the two waiting, 1 s each at least
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 503
        for s in streams:
            s.__exit__(None, None, None)
        client.close()
        stats = wait_for(url, "all cancelled", lambda st: st["cancelled"] == 3 and st["running"] == 0)
        assert stats["rejected"] == 2
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert post(url, "/v1/chat/completions", {**CHAT, "max_tokens": 2}).status_code == 200


def test_a_rag_answer_cut_by_max_tokens_ends_with_length(settings: Any, fake_ws: Any) -> None:
    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    question = "How many locks does the Brennock Canal climb through?"
    with serving(settings, FakeChatModel()) as url:
        rag = {"model": "lectern-rag/test", "messages": [{"role": "user", "content": question}], "k": 3}
        assert post(url, "/v1/chat/completions", rag).json()["choices"][0]["finish_reason"] == "stop"
        cut = post(url, "/v1/chat/completions", {**rag, "max_tokens": 3}).json()
        assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
        events = sse_events(stream_lines(url, {**rag, "max_tokens": 3, "stream": True}))
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
        off = {**rag, "messages": [{"role": "user", "content": "What colour is the Moon's far side?"}]}
        abstained = post(url, "/v1/chat/completions", {**off, "max_tokens": 3}).json()
        assert abstained["choices"][0]["message"]["content"] == NO_ANSWER
        assert (
            abstained["choices"][0]["finish_reason"] == "stop"
        )  # the chain's abstention, whatever max_tokens
        assert abstained["abstained_by"] in ("evidence", "off_subject"), abstained


def test_a_streamed_rag_answer_withdrawn_after_it_was_written_says_so(settings: Any, fake_ws: Any) -> None:
    """Past the gate (off here), the subject check withdraws an answer whose cited passages do not
    name the Kennet and Avon: the stream carried the model's words, then says why they were
    withdrawn and ends with lectern's abstain sentence, the whole response's answer; its last chunk
    says so too (`abstained_by`)."""
    from lectern.rag.verify import OFF_SUBJECT

    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    question = "How many locks does the Kennet and Avon Canal climb through?"
    ungated = settings.model_copy(update={"answer": settings.answer.model_copy(update={"evidence": False})})
    with serving(ungated, FakeChatModel()) as url:
        rag = {"model": "lectern-rag/test", "messages": [{"role": "user", "content": question}], "k": 3}
        body = post(url, "/v1/chat/completions", rag).json()
        assert body["choices"][0]["message"]["content"] == NO_ANSWER and body["sources"] == []
        assert body["abstained_by"] == "off_subject" and body["retried"] is None, body
        chunks = [json.loads(e) for e in sse_events(stream_lines(url, {**rag, "stream": True}))[:-1]]
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        words, note = streamed.split("\n\n(", 1)  # the model's words went out first
        assert words.strip() and NO_ANSWER not in words
        assert note == f"That answer {OFF_SUBJECT}:) {NO_ANSWER}", streamed
        assert chunks[-1]["abstained_by"] == "off_subject" and chunks[-1]["sources"] == []


def test_a_streamed_rag_answer_asked_again_ends_with_the_sources_words(settings: Any, fake_ws: Any) -> None:
    """The model's first answer says what no passage says, so the chain asks again for a source's
    exact words: a non-streamed response gives that span; a stream, which already carried the first
    answer, says why it was replaced and ends with the same span, so no client is left with words
    lectern took back."""
    from lectern.rag.fake import ScriptedChatModel
    from lectern.rag.verify import FOUND_AGAIN, NOT_IN_SOURCES

    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    question = "How many locks does the Brennock Canal climb through?"
    first, span = "It climbs through ninety purple gates.", "42 locks"
    llm = ScriptedChatModel(replies=[first, span, first, span])  # the whole response, then the stream
    with serving(settings, llm) as url:
        rag = {"model": "lectern-rag/test", "messages": [{"role": "user", "content": question}], "k": 3}
        body = post(url, "/v1/chat/completions", rag).json()
        answer = body["choices"][0]["message"]["content"]
        assert answer.startswith(span + " [") and body["retried"] == NOT_IN_SOURCES, body
        assert body["abstained_by"] is None and len(body["sources"]) == 1
        chunks = [json.loads(e) for e in sse_events(stream_lines(url, {**rag, "stream": True}))[:-1]]
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert streamed == f"{first}\n\n(That answer {NOT_IN_SOURCES}; {FOUND_AGAIN}:) {answer}", streamed
        assert chunks[-1]["retried"] == NOT_IN_SOURCES and chunks[-1]["sources"] == body["sources"]


def test_rag_model_answers_with_sources(settings: Any, fake_ws: Any) -> None:
    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    question = "How many locks does the Brennock Canal climb through?"
    with serving(settings, FakeChatModel()) as url:
        rag = {"model": "lectern-rag/test", "messages": [{"role": "user", "content": question}], "k": 3}
        body = post(url, "/v1/chat/completions", rag).json()
        assert body["object"] == "chat.completion"
        assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
        assert body["sources"], body
        source = body["sources"][0]
        assert set(source) == {"number", "source", "page", "location", "ocr", "chunk_id", "quote"}
        assert source["source"].endswith("brennock_canal.txt")
        events = sse_events(
            stream_lines(url, {**rag, "stream": True, "stream_options": {"include_usage": True}})
        )
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-2]["sources"] == body["sources"]
        assert body["abstained_by"] is None and chunks[-2]["abstained_by"] is None
        assert chunks[-1]["usage"] == body["usage"]
        filtered = post(url, "/v1/chat/completions", {**rag, "sources": ["sample_docs/brennock_canal.txt"]})
        assert filtered.json()["sources"] == body["sources"]  # a relative path: the end of an ingested one
        for unknown in ("nothing.txt", "../brennock_canal.txt", str(ROOT / "nothing.txt")):
            for stream in (False, True):  # a 404 before the stream starts, not an abstention
                r = post(url, "/v1/chat/completions", {**rag, "sources": [unknown], "stream": stream})
                assert _error(r, 404)["code"] == "document_not_found", (unknown, stream)
        collections = httpx.get(f"{url}/v1/collections").json()["data"]
        assert [(c["id"], c["documents"], c["model"]) for c in collections] == [
            ("test", 1, "lectern-rag/test")
        ]


def test_summarize_a_document_and_a_query(settings: Any, fake_ws: Any) -> None:
    path = ROOT / "sample_docs" / "brennock_canal.txt"
    fake_ws.ingest([path])
    with serving(settings, FakeChatModel(), collection="test") as url:
        for method in ("stuff", "refine", "map_reduce"):
            body = post(url, "/v1/summarize", {"source": str(path), "method": method}).json()
            assert body["object"] == "summary" and body["requested"] == method, body
            assert (body["method"] == "stuff" and "fits the window" in body["reason"]) or method == "stuff"
            assert body["faithfulness"] == 1.0 and body["citations"] and body["unsupported"] == []
            assert body["summary"] and body["usage"]["completion_tokens"] > 0
        body = post(url, "/v1/summarize", {"query": "locks", "collection": "test"}).json()
        assert body["summary"]
        _error(post(url, "/v1/summarize", {"source": "nope.txt"}), 404)
        _error(post(url, "/v1/summarize", {"method": "best"}), 400)
        _error(post(url, "/v1/summarize", {"collection": "missing"}), 404)


def test_openai_client_against_the_fake(fake_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{fake_url}/v1", api_key="unused")
    reply = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == DONT_KNOW and reply.usage is not None
    parts = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(parts)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DONT_KNOW
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    vectors = client.embeddings.create(model="lectern-embed", input=["a", "b"])  # base64 on the wire
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64


def test_non_loopback_needs_a_key_or_a_loud_opt_out() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert check_exposure(host, API_SERVER, has_secret=False, opted_out=False) is None
    assert check_exposure("0.0.0.0", API_SERVER, has_secret=True, opted_out=False) is None
    with pytest.raises(Exposed, match="--api-key"):
        check_exposure("0.0.0.0", API_SERVER, has_secret=False, opted_out=False)
    warning = check_exposure("192.168.1.5", API_SERVER, has_secret=False, opted_out=True)
    assert warning is not None and "without an API key (--insecure-no-api-key)" in warning


def test_cli_refuses_a_public_host_without_a_key_before_loading_a_model() -> None:
    from typer.testing import CliRunner

    from lectern.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--backend", "fake"])
    assert result.exit_code == 2
    assert "--api-key" in result.output


def test_an_error_after_the_stream_started_is_a_data_frame_then_done(settings: Any) -> None:
    with serving(settings, FailingFake()) as url:
        events = sse_events(stream_lines(url, {**CHAT, "stream": True}))
        assert events[-1] == "[DONE]"
        assert json.loads(events[1])["choices"][0]["delta"]["content"] == "partial "
        error = json.loads(events[-2])
        assert set(error) == {"error"} and error["error"]["type"] == "server_error"
        _error(post(url, "/v1/chat/completions", CHAT), 500)  # not streamed: a 500 in the same shape
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_a_bad_request_never_takes_the_server_down(fake_url: str) -> None:
    with socket.create_connection(("127.0.0.1", int(fake_url.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    assert post(fake_url, "/v1/chat/completions", CHAT).status_code == 200


def test_models_retrieve_one_by_id_and_404_for_an_unknown_one(settings: Any, fake_ws: Any) -> None:
    import openai

    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    with serving(settings, FakeChatModel(), api_keys=("k",)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        for model_id in ("fake", "lectern-embed", "lectern-rag/test"):  # the slash travels as %2F
            card = client.models.retrieve(model_id)
            assert card.id == model_id and card.object == "model"
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("gpt-4o")
        assert caught.value.code == "model_not_found"
        _error(httpx.get(f"{url}/v1/models/lectern-rag/nope"), 404)  # public, as the list is


def test_openapi_document_has_every_route_and_its_body(fake_url: str) -> None:
    doc = httpx.get(f"{fake_url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/summarize"):
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    assert "/v1/models/{model_id}" in doc["paths"] and "/health" in doc["paths"]
    chat = doc["components"]["schemas"]["ChatRequest"]
    assert {"model", "messages"} <= set(chat["required"]) and "Message" in doc["components"]["schemas"]


def test_a_wrong_method_is_405_with_allow(fake_url: str) -> None:
    r = httpx.get(f"{fake_url}/v1/chat/completions")
    assert _error(r, 405)["type"] == "invalid_request_error"
    assert r.headers["Allow"] == "POST"


def test_sigterm_ends_every_open_stream_with_an_error_frame_then_done(settings: Any) -> None:
    with serving_uvicorn(settings, EndlessFake(), max_batch=1) as (url, server):
        body = {**CHAT, "stream": True, "max_tokens": 2000}
        client = httpx.Client(timeout=30)
        streams = [client.stream("POST", f"{url}/v1/chat/completions", json=body) for _ in range(2)]
        lines: list[Any] = []
        for s in streams:
            lines.append(s.__enter__().iter_lines())
            assert '"role":"assistant"' in next(
                line for line in lines[-1] if line
            )  # open: one running, one queued
        wait_for(url, "one running, one waiting", lambda st: st["running"] == 1 and st["waiting"] == 1)
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
        for s, rest in zip(streams, lines, strict=True):
            events = sse_events(list(rest))
            assert events[-1] == "[DONE]"
            error = json.loads(events[-2])["error"]
            assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
            s.__exit__(None, None, None)
        client.close()


class SlowFake(FakeChatModel):
    """The fake's answer (7 words), one word every 0.15 s: a request that holds the model about a
    second, longer than a constant `Retry-After: 1` covers."""

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        for chunk in super()._stream(messages, stop, run_manager, **kwargs):
            threading.Event().wait(0.15)  # pacing only
            yield chunk


def test_retry_after_reflects_the_queue_so_the_clients_default_retries_get_through(settings: Any) -> None:
    """A burst of 8 at --max-queue 2, one at a time: the refused ones are told to come back one
    batch apart, when there is room, and the `openai` client's default two retries all succeed
    (with `Retry-After: 1` for all, three of them failed)."""
    import openai

    with serving(settings, SlowFake(), max_batch=1, max_queue=2) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")  # max_retries: its default, 2
        assert client.max_retries == 2
        replies: list[Any] = []

        def ask() -> None:
            try:
                replies.append(client.chat.completions.create(model="fake", messages=CHAT["messages"]))
            except openai.APIStatusError as error:
                replies.append(error)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = health(url)
    assert [type(r).__name__ for r in replies] == ["ChatCompletion"] * 8
    assert stats["rejected"] >= 5  # the burst did overflow the queue


def test_rag_stream_and_response_carry_the_same_citation_markers(settings: Any, fake_ws: Any) -> None:
    import re

    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    with serving(settings, FakeChatModel()) as url:
        rag = {"model": "lectern-rag/test", "messages": [{"role": "user", "content": "How many locks?"}]}
        whole = post(url, "/v1/chat/completions", rag).json()["choices"][0]["message"]["content"]
        events = sse_events(stream_lines(url, {**rag, "stream": True}))
        streamed = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert re.findall(r"\[\d+\]", whole) and re.findall(r"\[\d+\]", streamed) == re.findall(r"\[\d+\]", whole)


def test_appended_sends_only_what_the_final_text_adds() -> None:
    from lectern.serve.answers import appended

    assert appended([" Varley built", " it."], "Varley built it. [1]") == " [1]"
    assert appended(["Varley built it. [1]"], "Varley built it. [1]") == ""
    assert appended(["Answer: Varley [9]"], "Varley") == ""  # changed, not continued: nothing to add
    assert appended(["x"], None) == ""


def test_langchain_reaches_a_rag_answers_sources_through_its_openai_client(
    settings: Any, fake_ws: Any
) -> None:
    """The README's recipe: ChatOpenAI keeps only OpenAI's fields, and its `root_client` (the `openai`
    client it was built with) returns the whole response, `sources` in `model_extra`."""
    from langchain_openai import ChatOpenAI

    fake_ws.ingest([ROOT / "sample_docs" / "brennock_canal.txt"])
    with serving(settings, FakeChatModel()) as url:
        llm = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="lectern-rag/test")
        reply = llm.root_client.chat.completions.create(
            model=llm.model_name, messages=[{"role": "user", "content": "How many locks?"}]
        )
    sources = (reply.model_extra or {})["sources"]
    assert sources and sources[0]["source"].endswith("brennock_canal.txt")
