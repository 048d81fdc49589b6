"""The LLM layer: registry, fake model, fit_check, the OpenAI-compatible client against a local fake
server, and (e2e) the real packaged SmolLM2: known answer, tokenizer, streaming, batching, caching."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage

from lectern.errors import ContextTooLong, LLMServerError, LLMUnavailable, UnknownKey
from lectern.rag.fake import DONT_KNOW, FakeChatModel
from lectern.rag.llm import LLM_BACKENDS, build_llm, convert, fit_check
from lectern.rag.settings import LLMSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTION = "What is the capital of France? Answer in one word."


# ----------------------------------------------------------------------------- registry and fake


def test_import_is_cheap() -> None:
    code = "import sys, lectern.rag.llm; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_backend_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownKey) as info:
        build_llm(LLMSettings(backend="nope"), tmp_path)
    assert set(info.value.known) == set(LLM_BACKENDS) == {"auto", "llamacpp", "local", "openai", "fake"}


def test_fake_quotes_and_cites_the_first_source(tmp_path: Path) -> None:
    llm = build_llm(LLMSettings(backend="fake"), tmp_path)
    prompt = "Sources:\n[1] Paris is the capital of France. It is large.\n[2] Berlin.\n\nQuestion: capital?"
    assert llm.invoke(prompt).content == "Paris is the capital of France. [1]"
    assert llm.invoke("Question: what is it?").content == DONT_KNOW


def test_fake_summarizes_with_leading_sentences() -> None:
    llm = FakeChatModel()
    msgs = [SystemMessage("Summarize the text."), HumanMessage("One. Two! Three? Four.")]
    assert llm.invoke(msgs).content == "One. Two!"
    assert llm.invoke("Summarize this:\nAlpha beta. Gamma. Delta.").content == "Alpha beta. Gamma."


def test_fake_streams_word_by_word_and_batches_in_order() -> None:
    llm = FakeChatModel()
    prompt = "[1] The sky is blue today. Yes."
    chunks = [c.text for c in llm.stream(prompt)]
    assert len(chunks) > 3 and "".join(chunks) == llm.invoke(prompt).text
    prompts = [f"[{i}] Fact number {i}." for i in range(1, 5)]
    out = llm.batch(prompts)  # type: ignore[arg-type]
    assert [m.content for m in out] == [f"Fact number {i}. [{i}]" for i in range(1, 5)]
    assert asyncio.run(llm.abatch(prompts))[2].content == "Fact number 3. [3]"  # type: ignore[arg-type]
    assert llm.batch_sizes == [4, 4]
    assert [c[-1].text for c in llm.calls[-4:]] == prompts


def test_fake_counts_words_and_fit_check_names_the_field() -> None:
    llm = FakeChatModel(context_window=10, max_new_tokens=2)
    assert llm.get_num_tokens("a b  c\nd") == 4
    assert fit_check(llm, "one two three") == 3
    with pytest.raises(ContextTooLong) as info:
        llm.fit_check([HumanMessage("w " * 9)], field="context")
    assert (info.value.tokens, info.value.window, info.value.field) == (11, 10, "context")


# ----------------------------------------------------------------------------- openai backend


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []  # noqa: RUF012

    def log_message(self, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["auth"] = self.headers.get("Authorization")
        _Handler.seen.append(body)
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
        elif body["model"] == "broken":
            self._json(500, {"error": {"message": "model exploded"}})
        elif body["stream"]:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ["Par", "is", "."]:
                event = {"choices": [{"delta": {"content": piece}}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        else:
            self._json(200, {"choices": [{"message": {"role": "assistant", "content": "Paris."}}]})

    def _json(self, status: int, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _openai(base_url: str, model: str = "m", **kw: Any) -> Any:
    settings = LLMSettings(backend="openai", base_url=base_url, model=model, api_key="k", timeout_s=5, **kw)
    return build_llm(settings, Path("."))


def test_openai_invoke_and_stream(server: str) -> None:
    llm = _openai(server, temperature=0)
    assert llm.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)]).content == "Paris."
    sent = _Handler.seen[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["auth"] == "Bearer k" and sent["temperature"] == 0 and sent["max_tokens"] == 256
    assert [c.content for c in llm.stream(QUESTION) if c.content] == ["Par", "is", "."]
    assert _openai(server + "/v1/").invoke("hi").content == "Paris."  # base_url with /v1 works too


def test_openai_http_error_carries_status_and_message(server: str) -> None:
    with pytest.raises(LLMServerError) as info:
        _openai(server, model="broken").invoke("hi")
    assert info.value.status == 500 and info.value.message == "model exploded"


def test_openai_unreachable_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = _openai(f"http://127.0.0.1:{port}")
    with pytest.raises(LLMUnavailable) as info:
        llm.invoke("hi")
    assert f"127.0.0.1:{port}" in info.value.url and info.value.reason
    with pytest.raises(LLMUnavailable):
        list(llm.stream("hi"))


def test_openai_window_and_conservative_count(server: str) -> None:
    llm = _openai(server)
    assert llm.context_window == 4096
    assert llm.get_num_tokens("hello world, how are you") >= 6  # over-estimates: 24 bytes / 3
    assert _openai(server, context_window=300).context_window == 300


# ----------------------------------------------------------------------------- real SmolLM2 (e2e)


def test_converted_models_are_cached_in_the_dtype_they_run_in() -> None:
    assert convert.storage_dtype(torch.bfloat16) == torch.bfloat16
    assert convert.storage_dtype(torch.float16) == torch.float16
    assert convert.storage_dtype(torch.float32) == torch.float32
    assert convert.storage_dtype(None) == torch.float32


def test_cpu_dtype_is_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lectern.rag.llm import local as llm_module

    monkeypatch.setattr(llm_module, "cpu_has_native_bf16", lambda: True)
    assert llm_module._resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(llm_module, "cpu_has_native_bf16", lambda: False)
    assert llm_module._resolve_dtype("auto", "cpu") == torch.float32
    assert llm_module._resolve_dtype("float32", "cpu") == torch.float32  # an explicit choice wins
    for bad in ("float8", "nn"):
        with pytest.raises(UnknownKey):
            llm_module._resolve_dtype(bad, "cpu")


def test_repetition_penalty_spares_the_prompt_tokens() -> None:
    import torch

    from lectern.rag.llm.local import _penalty_after

    processor = _penalty_after(prompt_len=3, penalty=2.0)
    scores = torch.tensor([[4.0, 4.0, 4.0, -4.0, 4.0]])
    ids = torch.tensor([[0, 1, 1, 2, 3]])  # prompt 0 1 1, generated 2 3
    out = processor(ids, scores.clone())
    assert out.tolist() == [[4.0, 4.0, 2.0, -8.0, 4.0]]  # only the generated 2 and 3 are penalised
    assert processor(ids[:, :3], scores.clone()).tolist() == scores.tolist()  # nothing generated yet


def test_a_cpu_window_is_capped_unless_configured() -> None:
    from lectern.rag.llm.local import CPU_WINDOW, context_window_for

    assert context_window_for(32768, "cpu", None) == CPU_WINDOW  # Qwen's 32k: minutes of prefill on 2 cores
    assert context_window_for(2048, "cpu", None) == 2048  # a smaller native window stays
    assert context_window_for(32768, "cuda", None) == 32768
    assert context_window_for(32768, "cpu", 16384) == 16384  # an explicit llm.context_window wins
