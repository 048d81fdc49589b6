"""rag.model_cache: one bounded cache keyed by what was loaded, shared by the API, the CLI and the UI.

Loads are counted (ModelCache.loads and a counting backend), never timed."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

import lectern.rag.llm as llm_mod
from lectern.errors import InvalidInput
from lectern.ingest.settings import EmbedSettings
from lectern.rag.llm import LocalChatModel, OpenAIChatModel
from lectern.rag.model_cache import LOADED_BY, MODELS, PER_CALL, ModelCache
from lectern.rag.settings import LLMSettings, load_settings
from lectern.rag.workspace import Workspace


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The local backend replaced by a stand-in that records each load (no weights are read)."""
    loads: list[str] = []

    def build_local(settings: LLMSettings, models_dir: Path) -> LocalChatModel:
        loads.append(settings.model)
        return LocalChatModel(
            model_name=settings.model,
            hf_model=object(),  # stands for the weights: copies must share this very object
            tokenizer=object(),
            context_window=settings.context_window or 4096,  # the model's own window
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            repetition_penalty=settings.repetition_penalty,
        )

    monkeypatch.setitem(llm_mod.LLM_BACKENDS, "local", build_local)
    return loads


def test_generation_parameters_load_nothing(built: list[str], tmp_path: Path) -> None:
    cache = ModelCache()
    first = cache.llm(LLMSettings(model="m1"), tmp_path)
    assert isinstance(first, LocalChatModel)
    warm = cache.llm(
        LLMSettings(model="m1", temperature=0.7, max_new_tokens=64, repetition_penalty=1.3, batch_size=2),
        tmp_path,
    )
    assert built == ["m1"] and cache.loads["llm"] == 1
    assert isinstance(warm, LocalChatModel) and warm.hf_model is first.hf_model  # the same weights
    assert (warm.temperature, warm.max_new_tokens) == (0.7, 64)
    assert (warm.repetition_penalty, warm.batch_size) == (1.3, 2)
    assert first.temperature == 0.0 and first.max_new_tokens == 256  # a copy, the cached one untouched
    # LangChain's response cache (bench.answer_quality shares calls through it) keys on these: a copy
    # with another penalty or answer length must not be handed the first one's replies
    assert first._get_llm_string() != warm._get_llm_string()
    for change in ({"repetition_penalty": 1.3}, {"max_new_tokens": 64}, {"temperature": 0.7}):
        assert first.model_copy(update=change)._get_llm_string() != first._get_llm_string(), change
    assert cache.llm(LLMSettings(model="m1"), tmp_path) is first  # nothing changed: no copy either
    assert cache.llm(LLMSettings(model="m1", context_window=1024), tmp_path).context_window == 1024
    assert cache.llm(LLMSettings(model="m1"), tmp_path).context_window == 4096  # back to the model's own
    assert built == ["m1"]


def test_a_different_model_evicts_and_frees_the_old_one(built: list[str], tmp_path: Path) -> None:
    cache = ModelCache(max_llms=1)
    old = weakref.ref(cache.llm(LLMSettings(model="m1"), tmp_path))
    cache.llm(LLMSettings(model="m2", temperature=0.5), tmp_path)
    assert built == ["m1", "m2"] and cache.loads["llm_evictions"] == 1
    gc.collect()
    assert old() is None  # nobody held it: its memory is back
    assert not cache.has_llm(LLMSettings(model="m1"), tmp_path)
    assert cache.has_llm(LLMSettings(model="m2"), tmp_path)
    cache.llm(LLMSettings(model="m1"), tmp_path)
    assert built == ["m1", "m2", "m1"]  # it was really gone
    cache.llm(LLMSettings(model="m1", dtype="float32"), tmp_path)  # another dtype is another load
    assert built == ["m1", "m2", "m1", "m1"]


def test_a_changed_api_key_gives_a_new_client(tmp_path: Path) -> None:
    cache = ModelCache()
    server = {"backend": "openai", "model": "served", "base_url": "http://127.0.0.1:9/v1"}
    one = cache.llm(LLMSettings(**server, api_key="key-one"), tmp_path)
    assert cache.llm(LLMSettings(**server, api_key="key-one", temperature=1.0), tmp_path) is not one
    assert cache.loads["llm"] == 1
    two = cache.llm(LLMSettings(**server, api_key="key-two"), tmp_path)
    assert isinstance(one, OpenAIChatModel) and isinstance(two, OpenAIChatModel)
    assert (one.api_key, two.api_key) == ("key-one", "key-two") and cache.loads["llm"] == 2
    assert "key-two" not in repr(list(cache._llms.items))  # keyed by a digest, not the secret
    other_server = cache.llm(LLMSettings(**{**server, "base_url": "http://127.0.0.1:8/v1"}), tmp_path)
    assert isinstance(other_server, OpenAIChatModel) and other_server.base_url.endswith(":8/v1")
    assert cache.loads["llm"] == 3


def test_embedders_are_keyed_by_what_they_load(tmp_path: Path) -> None:
    cache = ModelCache(max_embedders=1)
    fake = cache.embedder(EmbedSettings(model="fake"), tmp_path)
    assert cache.embedder(EmbedSettings(model="fake", batch_size=4), tmp_path) is fake
    assert cache.loads["embedder"] == 1
    assert cache.has_embedder(EmbedSettings(model="fake", profile="fast"), tmp_path)  # model wins
    assert not cache.has_embedder(EmbedSettings(), tmp_path)


def test_every_llm_setting_is_either_loaded_or_applied_per_call() -> None:
    """A new LLM setting must be classified: else changing it would be silently ignored."""
    classified = {"backend", *PER_CALL}.union(*LOADED_BY.values())
    assert set(LLMSettings.model_fields) == classified
    assert set(LOADED_BY) == set(llm_mod.LLM_BACKENDS)


def test_workspaces_share_one_load(built: list[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Workspaces (as the CLI and the API build them) with other generation settings: one load."""
    monkeypatch.setattr(MODELS, "_llms", ModelCache()._llms)
    cold = Workspace(settings=load_settings(llm={"model": "m1", "temperature": 0.0}))
    hot = Workspace(settings=load_settings(llm={"model": "m1", "temperature": 0.9, "max_new_tokens": 32}))
    llms: list[Any] = [cold.llm, hot.llm, cold.llm]
    assert built == ["m1"]
    assert [m.temperature for m in llms] == [0.0, 0.9, 0.0] and llms[1].max_new_tokens == 32


def test_an_adapter_is_refused_for_a_backend_that_cannot_load_it_even_when_cached(tmp_path: Path) -> None:
    """The fake and openai backends are keyed without `adapter` (it loads nothing for them): a model
    cached without one once answered a request that named one. The check now runs before the lookup."""
    cache = ModelCache()
    plain = cache.llm(LLMSettings(backend="fake"), tmp_path)
    with pytest.raises(InvalidInput, match="adapter"):
        cache.llm(LLMSettings(backend="fake", adapter=str(tmp_path)), tmp_path)
    assert cache.loads["llm"] == 1 and cache.llm(LLMSettings(backend="fake"), tmp_path) is plain
