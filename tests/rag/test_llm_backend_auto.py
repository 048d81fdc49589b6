"""`llm.backend = "auto"` (the default): which backend runs a model, and why, said once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lectern.rag.llm as llm_mod
from lectern.rag.llm import LocalChatModel, choose_backend, resolve_auto
from lectern.rag.model_cache import ModelCache
from lectern.rag.settings import LLMSettings


@pytest.fixture
def cpu_with_llama(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU machine with llama-cpp-python installed (whatever this one has)."""
    real = llm_mod.importlib.util.find_spec
    monkeypatch.setattr(
        llm_mod.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "llama_cpp" else real(name, *a),
    )
    monkeypatch.setattr(llm_mod, "cuda_here", lambda device: device == "cuda")
    monkeypatch.setattr(llm_mod, "gpu_offload", lambda: False)


def test_the_default_is_auto() -> None:
    assert LLMSettings().backend == "auto"


@pytest.mark.parametrize(
    ("settings", "backend", "why"),
    [
        (LLMSettings(), "llamacpp", "a GGUF model on a CPU"),
        (LLMSettings(model="~/models/own.gguf"), "llamacpp", "a GGUF model on a CPU"),
        (LLMSettings(model="/models/qwen-folder"), "local", "a transformers model, not a GGUF file"),
        (LLMSettings(model="Qwen/Qwen2.5-0.5B-Instruct"), "local", "a transformers model, not a GGUF file"),
        (LLMSettings(adapter="/adapters/a"), "local", "a LoRA adapter is set, which only transformers loads"),
        (LLMSettings(device="cuda"), "local", "a CUDA GPU, which this CPU build of llama.cpp cannot use"),
    ],
)
def test_choices_and_their_reasons(
    cpu_with_llama: None, settings: LLMSettings, backend: str, why: str
) -> None:
    assert choose_backend(settings) == (backend, why)


def test_a_cuda_build_of_llama_cpp_takes_the_gpu(
    cpu_with_llama: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_mod, "gpu_offload", lambda: True)
    assert choose_backend(LLMSettings(device="cuda")) == (
        "llamacpp",
        "a GGUF model, and llama.cpp offloads it to the GPU",
    )


def test_without_llama_cpp_gguf_models_run_on_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    real = llm_mod.importlib.util.find_spec
    monkeypatch.setattr(
        llm_mod.importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a)
    )
    assert choose_backend(LLMSettings()) == (
        "local",
        "llama-cpp-python is not installed (make setup installs it)",
    )


def test_a_cpu_machine_never_imports_torch_to_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_mod.Path, "exists", lambda self: False)  # no NVIDIA driver
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # importing it would raise
    assert llm_mod.cuda_here("auto") is False
    assert llm_mod.cuda_here("cuda") is True and llm_mod.cuda_here("cpu") is False


def test_explicit_backends_are_left_alone() -> None:
    for backend in ("local", "llamacpp", "openai", "fake"):
        settings = LLMSettings(backend=backend)
        assert resolve_auto(settings) == (settings, "")


def test_the_cache_keys_auto_as_its_choice_and_says_why(
    cpu_with_llama: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[str] = []

    def stand_in(settings: LLMSettings, models_dir: Path) -> LocalChatModel:
        built.append(settings.backend)
        return LocalChatModel(model_name=settings.model, hf_model=object(), tokenizer=object())

    monkeypatch.setitem(llm_mod.LLM_BACKENDS, "local", stand_in)
    cache = ModelCache()
    folder = str(tmp_path)  # a transformers folder: auto picks local
    auto = cache.llm(LLMSettings(model=folder), tmp_path)
    assert auto.backend_because == "local (auto: a transformers model, not a GGUF file)"  # type: ignore[attr-defined]
    explicit = cache.llm(LLMSettings(backend="local", model=folder), tmp_path)
    assert built == ["local"] and cache.loads["llm"] == 1  # one load serves both
    assert explicit.hf_model is auto.hf_model  # type: ignore[attr-defined]
    assert cache.has_llm(LLMSettings(model=folder), tmp_path)


def test_build_llm_says_why_too(
    cpu_with_llama: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(
        llm_mod.LLM_BACKENDS,
        "llamacpp",
        lambda s, d: LocalChatModel(model_name=s.model, hf_model=object(), tokenizer=object()),
    )
    llm = llm_mod.build_llm(LLMSettings(), tmp_path)
    assert llm.backend_because == "llamacpp (auto: a GGUF model on a CPU)"  # type: ignore[attr-defined]


def test_a_gguf_models_speed_is_measured_once_per_machine_and_kept_as_json(tmp_path: Path) -> None:
    """The real SmolLM2 on the real llama.cpp: timed once, then read back from llm-speed.json."""
    pytest.importorskip("llama_cpp")
    from lectern.ingest import cpu_precision
    from lectern.rag.llm import llamacpp

    before = cpu_precision.MEASURED["benchmark"]
    first = llamacpp.measured_answer_seconds("packaged:smollm2", tmp_path, 1)
    assert llamacpp.measured_answer_seconds("packaged:smollm2", tmp_path, 1) == first > 0
    assert cpu_precision.MEASURED["benchmark"] == before + 1
    (entry,) = json.loads((tmp_path / llamacpp.SPEED_FILE).read_text()).values()
    assert entry["prefill_tokens_per_s"] > 0 and entry["decode_s_per_token"] > 0
    assert entry["machine"]["model"].startswith("packaged:smollm2@")
    llamacpp.measured_answer_seconds("packaged:smollm2", tmp_path, 2)  # other threads, other speed
    assert cpu_precision.MEASURED["benchmark"] == before + 2


@pytest.mark.parametrize(
    ("seconds", "chosen"), [(1e9, "packaged:qwen2.5-0.5b"), (0.1, "packaged:qwen2.5-1.5b")]
)
def test_auto_on_llamacpp_picks_by_the_measured_speed_and_says_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seconds: float, chosen: str
) -> None:
    """Both Qwen models stand in by SmolLM2's file (this test is about the choice, not them)."""
    pytest.importorskip("llama_cpp")
    from lectern.rag import models
    from lectern.rag.llm import llamacpp

    smol = models.packaged_gguf("smollm2", tmp_path)
    measured: list[str] = []
    monkeypatch.setattr(llamacpp, "installed", lambda: [models.DEFAULT, models.BIG])
    monkeypatch.setattr(llamacpp, "measured_answer_seconds", lambda m, d, t: measured.append(m) or seconds)
    monkeypatch.setattr(llamacpp, "gguf_file", lambda model, models_dir: smol)
    monkeypatch.setattr(
        models.Hardware,
        "here",
        classmethod(lambda cls, cuda, big_answer_s=None: cls(cuda, 2, 8.0, big_answer_s)),
    )
    llm = llamacpp.build_llamacpp(LLMSettings(backend="llamacpp", device="cpu"), tmp_path)
    assert measured == [models.BIG] and llm.model_name == chosen
    assert ("within the" if chosen == models.BIG else "over the") in llm.chosen_because
