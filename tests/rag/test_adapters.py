"""LoRA adapters (rag.llm.adapters, rag.llm.tune): the base-model check on tiny random models, the
cache key, and (e2e) a LoRA trained here on SmolLM2 for a few steps that changes the greedy answers,
switched off and on without reloading, merged at load, and cached by adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lectern.errors import AdapterMismatch, BadAdapter, InvalidInput
from lectern.rag.llm import build_llm
from lectern.rag.llm.adapters import (
    IDENTITY,
    base_identity,
    check_adapter,
)
from lectern.rag.llm.tune import read_pairs
from lectern.rag.model_cache import llm_key
from lectern.rag.settings import LLMSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny(hidden: int = 32, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def save_lora(model: Any, folder: Path, base_name: str = "tiny-32") -> Path:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.peft_config["default"].base_model_name_or_path = base_name  # peft writes the config's path
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    return folder


# ----------------------------------------------------------------------------- the base-model check


def test_an_adapter_for_other_shapes_is_refused_naming_both_models(tmp_path: Path) -> None:
    folder = save_lora(tiny(32), tmp_path / "lora")  # peft's folder only: no lectern record
    check_adapter(tiny(32, seed=1), folder, "tiny-32")  # same shapes, no identity recorded: accepted
    with pytest.raises(AdapterMismatch) as info:
        check_adapter(tiny(64), folder, "tiny-64")
    assert (info.value.adapter_base, info.value.model) == ("tiny-32", "tiny-64")
    assert (
        "'tiny-32'" in str(info.value)
        and "'tiny-64'" in str(info.value)
        and "size 32 != 64" in str(info.value)
    )


def test_the_recorded_identity_tells_same_shaped_models_apart_whatever_their_dtype(tmp_path: Path) -> None:
    trained_on = tiny(32, seed=0)
    identity = base_identity(trained_on, "tiny-a")
    folder = save_lora(tiny(32, seed=0), tmp_path / "lora")
    (folder / IDENTITY).write_text(json.dumps(identity), encoding="utf-8")
    check_adapter(trained_on, folder, "tiny-a")
    check_adapter(tiny(32, seed=0).to(torch.bfloat16), folder, "tiny-a-bf16")  # the same weights
    with pytest.raises(AdapterMismatch) as info:
        check_adapter(tiny(32, seed=1), folder, "tiny-b")
    assert info.value.adapter_base == "tiny-a" and info.value.model == "tiny-b"
    assert "fingerprint" in info.value.detail


def test_folders_that_are_not_lora_adapters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadAdapter, match="no such folder"):
        check_adapter(tiny(), tmp_path / "missing", "tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadAdapter, match=r"adapter_config\.json"):
        check_adapter(tiny(), tmp_path / "empty", "tiny")
    folder = save_lora(tiny(), tmp_path / "lora")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(BadAdapter, match="only LORA"):
        check_adapter(tiny(), folder, "tiny")


def test_the_cache_key_holds_the_adapter_its_weights_and_merge(tmp_path: Path) -> None:
    folder = save_lora(tiny(), tmp_path / "lora")
    plain = LLMSettings(model="packaged:smollm2")
    with_adapter = plain.model_copy(update={"adapter": str(folder)})
    merged = with_adapter.model_copy(update={"merge_adapter": True})
    keys = {llm_key(s, tmp_path) for s in (plain, with_adapter, merged)}
    assert len(keys) == 3
    before = llm_key(with_adapter, tmp_path)
    weights = folder / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns + 1_000_000_000
    os.utime(weights, ns=(stamp, stamp))  # retrained into the same folder
    assert llm_key(with_adapter, tmp_path) != before
    # generation parameters still travel per call, adapter or not
    assert llm_key(with_adapter.model_copy(update={"temperature": 0.7}), tmp_path) == llm_key(
        with_adapter, tmp_path
    )


def test_training_pairs_are_read_with_their_sources_and_bad_lines_named(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    rows = [
        {"question": "Q1?", "answer": "A1 [1]", "sources": ["text one", {"source": "a.md", "text": "t"}]},
        {"question": "Q2?", "answer": "A2", "source": "only source"},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    pairs = read_pairs(data)
    assert [len(p.sources) for p in pairs] == [2, 1]
    assert pairs[0].sources[1].source == "a.md" and pairs[0].sources[1].number == 2
    data.write_text(json.dumps(rows[0]) + '\n{"question": "no answer"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="line 2"):
        read_pairs(data)


# ----------------------------------------------------------------------------- real SmolLM2 (e2e)


def test_tune_refuses_bad_pairs_in_one_line_before_loading_a_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lectern.cli import app

    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "Q?", "answer": ""}\n', encoding="utf-8")
    args = ["tune", "--data", str(data), "--out", str(tmp_path / "a"), "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "line 1" in result.output and "empty question or answer" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize("backend", ["openai", "fake"])
def test_an_adapter_on_a_backend_that_cannot_load_one_is_refused_naming_both(
    backend: str, tmp_path: Path
) -> None:
    settings = LLMSettings(backend=backend, model="m", adapter=str(tmp_path / "adapter"))
    with pytest.raises(InvalidInput) as info:
        build_llm(settings, tmp_path)
    assert info.value.field == "llm.adapter"
    assert f"the {backend} backend cannot load a LoRA adapter" in str(info.value)
