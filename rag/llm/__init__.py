"""The one factory for chat models: `build_llm(settings, models_dir)` picks a backend from LLM_BACKENDS.

Every model it returns is a langchain-core BaseChatModel that also knows its `context_window` and
counts tokens with its own tokenizer (LangChain's default needs a GPT-2 download and silently says 0
offline), so chains can `fit_check` a prompt before sending it. torch and transformers are imported
inside the local backend only, so `import lectern.rag.llm` stays cheap.

    base.py      LecternChatModel, fit_check, to_chat_dicts
    templated.py TemplatedChatModel: what local and llamacpp share (chat template, tools, counting)
    local.py     LocalChatModel and build_local (transformers)
    llamacpp.py  LlamaCppChatModel and build_llamacpp (a GGUF file as it is, on llama.cpp)
    convert.py   GGUF -> a cached transformers folder (resolve_local)
    openai_api.py  OpenAIChatModel and build_openai (httpx)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from lectern.errors import InvalidInput, UnknownKey
from lectern.rag.llm.base import LecternChatModel, fit_check, to_chat_dicts
from lectern.rag.llm.llamacpp import LlamaCppChatModel, build_llamacpp, gpu_offload
from lectern.rag.llm.local import LocalChatModel, build_local
from lectern.rag.llm.openai_api import OpenAIChatModel, build_openai
from lectern.rag.llm.templated import TemplatedChatModel
from lectern.rag.models import is_gguf
from lectern.rag.settings import LLMSettings

__all__ = [
    "LLM_BACKENDS",
    "LecternChatModel",
    "LlamaCppChatModel",
    "LocalChatModel",
    "OpenAIChatModel",
    "TemplatedChatModel",
    "build_llamacpp",
    "build_llm",
    "build_local",
    "build_openai",
    "check_llm_settings",
    "choose_backend",
    "fit_check",
    "resolve_auto",
    "to_chat_dicts",
]


def build_fake(settings: LLMSettings, models_dir: Path) -> BaseChatModel:
    from lectern.rag.fake import FakeChatModel

    return FakeChatModel(
        context_window=settings.context_window or 2048, max_new_tokens=settings.max_new_tokens
    )


def cuda_here(device: str) -> bool:
    """Whether `device` means a CUDA GPU: "cuda", or "auto" on a machine with an NVIDIA driver and
    a torch that sees it (torch is imported only where the driver is there: a CPU machine pays
    nothing for the question)."""
    if device != "auto":
        return device == "cuda"
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_backend(settings: LLMSettings) -> tuple[str, str]:
    """(backend, why) for `llm.backend = "auto"`: llama.cpp for a GGUF model (the packaged ones) on a
    CPU, where it answers in about half the time in a fifth of the memory, and `lectern serve`
    batches it continuously (docs/LLM.md); the transformers `local` backend for a transformers
    model, a LoRA adapter (PEFT, which llama.cpp does not load), and a CUDA GPU unless llama.cpp was
    built to offload to it."""
    if settings.adapter:
        return "local", "a LoRA adapter is set, which only transformers loads"
    if not is_gguf(settings.model):
        return "local", "a transformers model, not a GGUF file"
    if importlib.util.find_spec("llama_cpp") is None:
        return "local", "llama-cpp-python is not installed (make setup installs it)"
    if cuda_here(settings.device):
        if gpu_offload():
            return "llamacpp", "a GGUF model, and llama.cpp offloads it to the GPU"
        return "local", "a CUDA GPU, which this CPU build of llama.cpp cannot use"
    return "llamacpp", "a GGUF model on a CPU"


def resolve_auto(settings: LLMSettings) -> tuple[LLMSettings, str]:
    """`settings` with backend "auto" made the backend choose_backend picks, and what to say of it
    ("llamacpp (auto: a GGUF model on a CPU)"); any other settings as they are, and ""."""
    if settings.backend != "auto":
        return settings, ""
    backend, why = choose_backend(settings)
    return settings.model_copy(update={"backend": backend}), f"{backend} (auto: {why})"


def build_auto(settings: LLMSettings, models_dir: Path) -> BaseChatModel:
    """The backend choose_backend picks, saying why on the model (`backend_because`)."""
    concrete, why = resolve_auto(settings)
    llm = LLM_BACKENDS[concrete.backend](concrete, models_dir)
    if isinstance(llm, TemplatedChatModel):
        llm.backend_because = why
    return llm


LLM_BACKENDS: dict[str, Callable[[LLMSettings, Path], BaseChatModel]] = {
    "auto": build_auto,
    "llamacpp": build_llamacpp,
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
    if settings.adapter and settings.backend not in ("local", "auto"):  # never silently answer without it
        raise InvalidInput(
            "llm.adapter",
            settings.adapter,
            f"the {settings.backend} backend cannot load a LoRA adapter, only the local backend can; "
            "use --backend local (or auto), or drop --adapter / llm.adapter",
        )
    return builder


def build_llm(settings: LLMSettings, models_dir: Path) -> BaseChatModel:
    """The chat model `settings` ask for; packaged/GGUF models are cached under `models_dir`."""
    return check_llm_settings(settings)(settings, Path(models_dir))
