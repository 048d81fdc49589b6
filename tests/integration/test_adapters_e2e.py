"""The real-model tests of tests/rag/test_adapters.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lectern.errors import AdapterMismatch, UnknownKey
from lectern.rag.llm import build_llm
from lectern.rag.llm.adapters import (
    IDENTITY,
    adapter_names,
    add_adapter,
    use_adapter,
)
from lectern.rag.llm.tune import tune
from lectern.rag.model_cache import ModelCache
from lectern.rag.settings import LLMSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


PAIRS = [
    (
        "Who built the bridge?",
        "Ada Lovelace built the bridge.",
        "The bridge was built by Ada Lovelace in 1850.",
    ),
    ("When did the mill open?", "The mill opened in 1901.", "The mill opened its doors in 1901."),
    ("What colour is the door?", "The door is green.", "Everyone knows the door is painted green."),
    ("How many locks are there?", "There are 42 locks.", "The canal has 42 locks along its length."),
]


MARK = "Zorblax says:"


PROMPTS = ["What is the capital of France? Answer in one word.", "Name one primary color."]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, smol_models: Path) -> Path:
    """A rank-4 LoRA trained for a handful of steps to start every answer with an odd marker."""
    data = tmp_path_factory.mktemp("tune") / "qa.jsonl"
    lines = [json.dumps({"question": q, "answer": f"{MARK} {a} [1]", "sources": [s]}) for q, a, s in PAIRS]
    data.write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path_factory.mktemp("adapters") / "zorblax"
    report = tune(SMOL, smol_models, data, out, steps=12, rank=4, learning_rate=3e-3)
    assert report.examples == 4 and report.steps == 12 and report.last_loss < report.first_loss
    return out


SMOL = LLMSettings(
    backend="local", model="packaged:smollm2", temperature=0, max_new_tokens=12, device="cpu", dtype="float32"
)  # adapters load on transformers only


@pytest.fixture(scope="module")
def smol_models(models_dir: Path) -> Path:
    return models_dir  # the session's one models folder: SmolLM2 is converted once per dtype


def answers(llm: Any) -> list[str]:
    return [str(llm.invoke(p).content) for p in PROMPTS]


@pytest.mark.e2e
def test_tuned_adapter_records_its_base(adapter_dir: Path) -> None:
    record = json.loads((adapter_dir / IDENTITY).read_text())
    assert record["model"] == "packaged:smollm2" and record["model_type"] == "llama" and record["rank"] == 4
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "packaged:smollm2" and config["r"] == 4


@pytest.mark.e2e
def test_the_adapter_changes_answers_and_switching_it_off_gives_the_base_back(
    adapter_dir: Path, smol_models: Path
) -> None:
    base = answers(build_llm(SMOL, smol_models))
    tuned = build_llm(SMOL.model_copy(update={"adapter": str(adapter_dir)}), smol_models)
    assert adapter_names(tuned) == ["default"]
    with_adapter = answers(tuned)
    assert with_adapter != base
    assert any(MARK.split()[0] in a for a in with_adapter)  # it learned the trained format
    use_adapter(tuned, None)  # the same weights in memory, LoRA layers off
    assert answers(tuned) == base
    use_adapter(tuned, "default")
    assert answers(tuned) == with_adapter
    with pytest.raises(UnknownKey):
        use_adapter(tuned, "nope")
    add_adapter(tuned, str(adapter_dir), "again")  # a second adapter by name on the same base weights
    assert adapter_names(tuned) == ["default", "again"]
    use_adapter(tuned, "again")
    assert answers(tuned) == with_adapter
    merged = build_llm(
        SMOL.model_copy(update={"adapter": str(adapter_dir), "merge_adapter": True}), smol_models
    )
    assert adapter_names(merged) == []  # folded into the weights: a plain model
    assert answers(merged) == with_adapter


@pytest.mark.e2e
def test_the_model_cache_loads_once_per_adapter(adapter_dir: Path, smol_models: Path) -> None:
    cache = ModelCache(max_llms=2)
    with_adapter = SMOL.model_copy(update={"adapter": str(adapter_dir)})
    first = cache.llm(with_adapter, smol_models)
    again = cache.llm(with_adapter.model_copy(update={"max_new_tokens": 4}), smol_models)
    assert cache.loads["llm"] == 1 and again.hf_model is first.hf_model  # type: ignore[attr-defined]
    plain = cache.llm(SMOL, smol_models)
    assert cache.loads["llm"] == 2 and adapter_names(plain) == []


@pytest.mark.e2e
def test_an_adapter_with_another_recorded_base_is_refused(
    adapter_dir: Path, tmp_path: Path, smol_models: Path
) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(adapter_dir, other)
    record = json.loads((other / IDENTITY).read_text())
    (other / IDENTITY).write_text(
        json.dumps({**record, "model": "packaged:qwen2.5-0.5b", "fingerprint": "0" * 32})
    )
    with pytest.raises(AdapterMismatch) as info:
        build_llm(SMOL.model_copy(update={"adapter": str(other)}), smol_models)
    assert info.value.adapter_base == "packaged:qwen2.5-0.5b" and info.value.model == "packaged:smollm2"
    assert "trained on 'packaged:qwen2.5-0.5b', not on the loaded model 'packaged:smollm2'" in str(info.value)
    assert "another model named 'x'" in str(AdapterMismatch("a", "x", "x", "fingerprint differs"))
