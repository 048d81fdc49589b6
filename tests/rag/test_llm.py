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


@pytest.fixture(scope="session")
def smol_dir(models_dir: Path) -> Path:
    return models_dir  # the session's one models folder: SmolLM2 is converted once per dtype


@pytest.fixture(scope="module")
def smol(smol_dir: Path) -> Any:
    settings = LLMSettings(
        backend="local", model="packaged:smollm2", temperature=0, max_new_tokens=16, device="cpu"
    )
    return build_llm(settings, smol_dir)


@pytest.mark.e2e
def test_known_answer(smol: Any) -> None:
    assert "Paris" in smol.invoke(QUESTION).content
    assert smol.context_window == 4096  # its native 8192, capped on a CPU (CPU_WINDOW)


@pytest.mark.e2e
def test_tokenizer_round_trip_and_counts(smol: Any) -> None:
    sentence = "The quick brown fox jumps over the lazy dog, twice."
    ids = smol.tokenizer.encode(sentence, add_special_tokens=False)
    assert smol.tokenizer.decode(ids) == sentence and "<|endoftext|>" not in smol.tokenizer.decode(ids)
    assert smol.get_num_tokens(sentence) == len(ids) > 5
    assert smol.get_num_tokens_from_messages([HumanMessage(sentence)]) > len(ids)  # template tokens
    with pytest.raises(ContextTooLong):
        smol.fit_check(HumanMessage("word " * 9000), field="question")


@pytest.mark.e2e
def test_stream_concatenates_to_invoke(smol: Any) -> None:
    chunks = [c.content for c in smol.stream(QUESTION)]
    assert len(chunks) > 2 and "".join(chunks) == smol.invoke(QUESTION).content


@pytest.mark.e2e
def test_batch_equals_single_greedy_generations(smol: Any) -> None:
    prompts = [QUESTION, "Name one primary color.", "What is 2+2? Answer with a number."]
    batched = [m.content for m in smol.batch(prompts)]
    assert batched == [smol.invoke(p).content for p in prompts]
    assert [m.content for m in asyncio.run(smol.abatch(prompts))] == batched


@pytest.mark.e2e
def test_out_of_memory_halves_the_batch_and_keeps_order(smol: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    real = smol.hf_model.generate
    sizes: list[int] = []

    def generate(*args: Any, **kwargs: Any) -> Any:
        size = kwargs["input_ids"].shape[0]
        sizes.append(size)
        if size > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(smol.hf_model, "generate", generate)
    monkeypatch.setattr(smol, "batch_size", 8)
    prompts = [f"Say the number {i}." for i in range(3)]
    expected = [smol.invoke(p).content for p in prompts]
    sizes.clear()
    assert [m.content for m in smol.batch(prompts)] == expected
    assert sizes == [3, 1, 1, 1]


@pytest.mark.e2e
def test_second_build_uses_the_conversion_cache(smol: Any, smol_dir: Path) -> None:
    before = convert.CONVERSIONS
    again = build_llm(
        LLMSettings(backend="local", model="packaged:smollm2", temperature=0, max_new_tokens=16), smol_dir
    )
    assert before == convert.CONVERSIONS
    assert again.invoke(QUESTION).content == smol.invoke(QUESTION).content

    def cached() -> dict[str, dict[str, Any]]:  # stored dtype -> manifest of each SmolLM2 cache
        manifests = (json.loads(m.read_text()) for m in smol_dir.glob("smollm2-*/lectern.json"))
        return {m["stored_dtype"]: m for m in manifests}

    running = str(smol.hf_model.dtype).removeprefix("torch.")  # bf16 on CPUs with bf16, else fp32
    assert cached()[running]["tokenizer"] == "saved"  # cached as it runs
    had_fp32 = "float32" in cached()  # another test of the session may have converted it
    before = convert.CONVERSIONS
    fp32 = build_llm(
        LLMSettings(backend="local", model="packaged:smollm2", max_new_tokens=16, dtype="float32"), smol_dir
    )
    assert fp32.hf_model.dtype == torch.float32  # type: ignore[attr-defined]
    assert before + (not had_fp32) == convert.CONVERSIONS and "float32" in cached()  # one cache per dtype
    assert "Paris" in fp32.invoke(QUESTION).content


@pytest.mark.e2e
def test_a_conversion_the_disk_cannot_hold_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI run that filled its disk ended in safetensors' bare 'No space left on device' after the
    GGUF was read; now the room is checked first and the error names the model, the folder and why."""
    from lectern.errors import NotEnoughDisk
    from lectern.ingest import atomic

    real = atomic.shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: real(p)._replace(free=200 * 1024**2))
    before = convert.CONVERSIONS
    with pytest.raises(NotEnoughDisk) as refused:
        build_llm(
            LLMSettings(backend="local", model="packaged:smollm2", device="cpu", dtype="float32"), tmp_path
        )
    assert before == convert.CONVERSIONS  # refused before any dequantizing
    message = str(refused.value)
    assert "SmolLM2-135M-Instruct" in message and "(float32)" in message and str(tmp_path) in message
    assert 0.4 < refused.value.needed / 1024**3 < 0.6  # 135M parameters in fp32
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temp


def test_converted_models_are_cached_in_the_dtype_they_run_in() -> None:
    assert convert.storage_dtype(torch.bfloat16) == torch.bfloat16
    assert convert.storage_dtype(torch.float16) == torch.float16
    assert convert.storage_dtype(torch.float32) == torch.float32
    assert convert.storage_dtype(None) == torch.float32


@pytest.mark.e2e
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("torch") or not __import__("torch").cuda.is_available(),
    reason="needs CUDA",
)
def test_cuda_loads_in_half_precision(smol_dir: Path) -> None:
    import torch

    gpu = build_llm(
        LLMSettings(backend="local", model="packaged:smollm2", temperature=0, device="cuda"), smol_dir
    )
    assert gpu.hf_model.dtype in (torch.bfloat16, torch.float16)  # type: ignore[attr-defined]
    assert "Paris" in gpu.invoke(QUESTION).content


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


@pytest.mark.e2e
def test_bf16_weights_answer_the_known_question(smol_dir: Path) -> None:
    """The dtype `auto` picks on CPUs with bf16 instructions (forced here, so every machine checks it)."""
    import torch

    settings = LLMSettings(
        backend="local", model="packaged:smollm2", max_new_tokens=16, device="cpu", dtype="bfloat16"
    )
    half = build_llm(settings, smol_dir)
    assert half.hf_model.dtype == torch.bfloat16  # type: ignore[attr-defined]
    assert "Paris" in half.invoke(QUESTION).content


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
