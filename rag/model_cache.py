"""One cache of loaded models for the CLI, the Python API and the web UI, keyed by what was loaded.

A chat model is cached by what loading it reads (LOADED_BY: the model, device and dtype; for an
OpenAI-compatible server its URL and the real API key), never by the whole settings object: a new
temperature or answer length is a copy that shares the weights (pydantic's shallow model_copy),
not a second multi-GB load. An embedder is cached by the embedder it builds. The cache is bounded:
loading another model first drops the least recently used one, whose memory is freed as soon as no
caller still holds it (Workspace asks the cache on every use and keeps no model of its own).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr

from lectern.ingest.embed import build_embedder
from lectern.ingest.embed_base import Embedder
from lectern.ingest.settings import EmbedSettings
from lectern.rag.settings import LLMSettings

if TYPE_CHECKING:  # langchain-core loads with the first chat model, not with an ingest's embedder
    from langchain_core.language_models import BaseChatModel

LOADED_BY: dict[str, tuple[str, ...]] = {
    # threads: torch's pool is set when it loads; adapter: keyed by its folder and weights' mtime
    "local": ("model", "device", "dtype", "threads", "adapter", "merge_adapter"),
    # llama.cpp allocates its context (the window) and places its layers when it loads
    "llamacpp": ("model", "device", "threads", "gpu_layers", "context_window"),
    "auto": (
        "model",
        "device",
        "dtype",
        "threads",
        "adapter",
        "merge_adapter",
        "gpu_layers",
        "context_window",
    ),
    "openai": ("model", "base_url", "api_key", "tokenizer"),
    "fake": (),
}
"""Per backend, the LLM settings whose change means loading anew; a backend missing here (unknown
to rag.llm.LLM_BACKENDS too) is keyed by every setting and then refused by build_llm."""

PER_CALL = (
    "temperature",
    "repetition_penalty",
    "max_new_tokens",
    "batch_size",
    "timeout_s",
    "context_window",
)
"""LLM settings applied to a cheap copy of the loaded model (where its class has the field)."""

EMBED_PER_CALL = ("batch_size",)
"""Embedder settings applied to a shallow copy: the rest of EmbedSettings decides what loads."""

T = TypeVar("T")


def _value(settings: Any, name: str) -> Hashable:
    value = getattr(settings, name)
    if name == "adapter" and isinstance(settings, LLMSettings):
        from lectern.rag.llm.adapters import adapter_key

        return adapter_key(value)
    if isinstance(value, SecretStr):  # "**********" whatever the key: key by a digest of the real one
        return "sha256:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()
    return value  # type: ignore[no-any-return]


def llm_key(settings: LLMSettings, models_dir: Path) -> tuple[Hashable, ...]:
    """What a chat model is cached by: its backend (auto's choice) and the settings it loads from."""
    if settings.backend == "auto":
        from lectern.rag.llm import resolve_auto

        settings = resolve_auto(settings)[0]
    names = LOADED_BY.get(settings.backend, tuple(sorted(LLMSettings.model_fields)))
    return (settings.backend, str(models_dir), *((n, _value(settings, n)) for n in names))


def embedder_key(settings: EmbedSettings, models_dir: Path) -> tuple[Hashable, ...]:
    """What an embedder is cached by: the model or profile it builds, where and at which precision."""
    what = settings.model or f"profile:{settings.chosen_profile}"
    return (what, settings.device, settings.precision, str(models_dir))


def _free_memory() -> None:
    """Collect the dropped model now, and hand CUDA's cached blocks back when torch is in use."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Bounded:
    """A small LRU of loaded objects: at most `size`; a new entry first evicts the oldest ones."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.items: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Hashable, ...], build: Callable[[], T], counts: Counter[str], kind: str) -> T:
        with self.lock:  # held while loading: two callers asking for one model load it once
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]  # type: ignore[no-any-return]
            if len(self.items) >= self.size:
                while len(self.items) >= self.size:  # before loading: never two large models at once
                    self.items.popitem(last=False)
                    counts[f"{kind}_evictions"] += 1
                _free_memory()
            value = build()
            counts[kind] += 1
            self.items[key] = value
            return value


class ModelCache:
    """Loaded chat models and embedders, shared by every Workspace, the CLI and the web UI."""

    def __init__(self, max_llms: int = 1, max_embedders: int = 2) -> None:
        self._llms = _Bounded(max_llms)
        self._embedders = _Bounded(max_embedders)
        self._rerankers = _Bounded(1)
        self.loads: Counter[str] = Counter()
        """Loads ("llm", "embedder") and evictions ("llm_evictions", ...) so far: tests count these."""

    def llm(self, settings: LLMSettings, models_dir: Path) -> BaseChatModel:
        """The chat model `settings` ask for, loaded at most once, with their generation parameters."""
        from lectern.rag.llm import check_llm_settings, resolve_auto

        settings, why = resolve_auto(settings)  # "auto" is keyed, and said, as the backend it picks
        build = check_llm_settings(settings)  # an adapter a backend cannot load is refused, cached or not
        loaded_by = LOADED_BY.get(settings.backend, ())
        # the cached one keeps its own window, unless loading allocates the window (llama.cpp)
        native = (
            settings
            if "context_window" in loaded_by
            else settings.model_copy(update={"context_window": None})
        )

        def load() -> BaseChatModel:
            llm = build(native, Path(models_dir))
            if why and "backend_because" in type(llm).model_fields:
                llm.backend_because = why  # type: ignore[attr-defined]
            return llm

        base = self._llms.get(llm_key(settings, models_dir), load, self.loads, "llm")
        fields = type(base).model_fields
        wanted = {name: getattr(settings, name) for name in PER_CALL if name in fields}
        if wanted.get("context_window") is None:
            wanted.pop("context_window", None)
        if why and "backend_because" in fields:
            wanted["backend_because"] = why
        changes = {k: v for k, v in wanted.items() if getattr(base, k) != v}
        return base.model_copy(update=changes) if changes else base

    def embedder(self, settings: EmbedSettings, models_dir: Path) -> Embedder:
        """The embedder `settings` ask for, loaded at most once; batch size on a shallow copy."""
        base: Embedder = self._embedders.get(
            embedder_key(settings, models_dir),
            lambda: build_embedder(settings, Path(models_dir)),
            self.loads,
            "embedder",
        )
        changes = {
            name: getattr(settings, name)
            for name in EMBED_PER_CALL
            if hasattr(base, name) and getattr(base, name) != getattr(settings, name)
        }
        if not changes:
            return base
        tuned = copy.copy(base)  # shares the model (and its lock) with the cached one
        for name, value in changes.items():
            setattr(tuned, name, value)
        return tuned

    def reranker(self, path: str) -> Any:
        """The cross-encoder in this folder (rag.rerank), loaded at most once."""
        from lectern.rag.rerank import CrossEncoderReranker

        key = (str(Path(path).expanduser().resolve()),)
        return self._rerankers.get(key, lambda: CrossEncoderReranker(path), self.loads, "reranker")

    def has_llm(self, settings: LLMSettings, models_dir: Path) -> bool:
        return llm_key(settings, models_dir) in self._llms.items

    def has_embedder(self, settings: EmbedSettings, models_dir: Path) -> bool:
        return embedder_key(settings, models_dir) in self._embedders.items

    def clear(self) -> None:
        """Drop every loaded model (tests; a server that wants its memory back)."""
        for cache in (self._llms, self._embedders, self._rerankers):
            with cache.lock:
                cache.items.clear()
        _free_memory()


MODELS = ModelCache()
"""The process's one cache: Workspace, the CLI (through Workspace) and app/resources.py use it."""
