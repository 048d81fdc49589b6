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

from lectern.errors import AdapterMismatch, BadAdapter, InvalidInput, UnknownKey
from lectern.rag.llm import build_llm
from lectern.rag.llm.adapters import (
    IDENTITY,
    adapter_names,
    add_adapter,
    base_identity,
    check_adapter,
    use_adapter,
)
from lectern.rag.llm.tune import read_pairs, tune
from lectern.rag.model_cache import ModelCache, llm_key
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
