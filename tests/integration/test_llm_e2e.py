"""The real-model tests of tests/rag/test_llm.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import HumanMessage

from lectern.errors import ContextTooLong
from lectern.rag.llm import build_llm, convert
from lectern.rag.settings import LLMSettings
from tests.rag.test_llm import QUESTION

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
