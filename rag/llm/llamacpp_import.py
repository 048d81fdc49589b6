"""llama-cpp-python itself: imported when a model or a grammar needs it, with its threads' wait policy
set first, or an error saying how to install it. Its own module, so that the grammar (rag.llm.structured)
and the backend (rag.llm.llamacpp), which imports the grammar, both reach it without a cycle."""

from __future__ import annotations

import os
from typing import Any

from lectern.errors import BackendUnavailable

INSTALL = "pip install llama-cpp-python==0.3.36 (make setup installs it)"
"""How to get the backend: built from source for this CPU (a CUDA build: docs/LLM.md)."""


def import_llama_cpp() -> Any:
    """The llama_cpp module, or BackendUnavailable saying how to install it.

    Its OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE, unless the environment says
    otherwise; read once, when llama.cpp's libgomp loads): spinning, a thread that waits for one the
    system descheduled holds a core the other needs. On 2 cores shared with other jobs (load 7.9),
    24 tokens of Qwen 0.5B took 14-69 s with 2 spinning threads, 3.6-8.1 s with one, and 4.5-5.3 s
    with 2 passive threads (docs/LLM.md)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError as error:  # missing, or its shared library does not load
        raise BackendUnavailable(
            "llamacpp", f"llama-cpp-python is not installed ({error}); run: {INSTALL}, or use --backend local"
        ) from None
    return llama_cpp
