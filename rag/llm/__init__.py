"""The one factory for chat models: `build_llm(settings, models_dir)` picks a backend from LLM_BACKENDS.

Every model it returns is a langchain-core BaseChatModel that also knows its `context_window` and
counts tokens with its own tokenizer (LangChain's default needs a GPT-2 download and silently says 0
offline), so chains can `fit_check` a prompt before sending it. torch and transformers are imported
inside the local backend only, so `import lectern.rag.llm` stays cheap.

    base.py      LecternChatModel, fit_check, to_chat_dicts
    local.py     LocalChatModel and build_local (transformers)
    convert.py   GGUF -> a cached transformers folder (resolve_local)
    openai_api.py  OpenAIChatModel and build_openai (httpx)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from lectern.errors import InvalidInput, UnknownKey
from lectern.rag.llm.base import LecternChatModel, fit_check, to_chat_dicts
from lectern.rag.llm.local import LocalChatModel, build_local
from lectern.rag.llm.openai_api import OpenAIChatModel, build_openai
from lectern.rag.settings import LLMSettings

__all__ = [
    "LLM_BACKENDS",
    "LecternChatModel",
    "LocalChatModel",
    "OpenAIChatModel",
    "build_llm",
    "build_local",
    "build_openai",
    "check_llm_settings",
    "fit_check",
    "to_chat_dicts",
]


def build_fake(settings: LLMSettings, models_dir: Path) -> BaseChatModel:
    from lectern.rag.fake import FakeChatModel

    return FakeChatModel(
        context_window=settings.context_window or 2048, max_new_tokens=settings.max_new_tokens
    )


LLM_BACKENDS: dict[str, Callable[[LLMSettings, Path], BaseChatModel]] = {
    "local": build_local,
    "openai": build_openai,
    "fake": build_fake,
}


def check_llm_settings(settings: LLMSettings) -> Callable[[LLMSettings, Path], BaseChatModel]:
    """The builder of `settings.backend`, once the settings are known to make sense for it; checked
    before any cache lookup too, so that a model cached without an adapter never answers for one."""
    try:
        builder = LLM_BACKENDS[settings.backend]
    except KeyError:
        raise UnknownKey("LLM backend", settings.backend, list(LLM_BACKENDS)) from None
    if settings.adapter and settings.backend != "local":  # never silently answer without it
        raise InvalidInput(
            "llm.adapter",
            settings.adapter,
            f"the {settings.backend} backend cannot load a LoRA adapter, only the local backend can; "
            "use --backend local, or drop --adapter / llm.adapter",
        )
    return builder


def build_llm(settings: LLMSettings, models_dir: Path) -> BaseChatModel:
    """The chat model `settings` ask for; packaged/GGUF models are cached under `models_dir`."""
    return check_llm_settings(settings)(settings, Path(models_dir))
