"""docs/SCALING.md's settings for serving the LLM from vLLM, llama.cpp server and Ollama parse into Settings
that select the openai backend at that server, with that model, key and window. The servers
themselves are stood for by the openai backend's tests against `lectern serve` on loopback."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lectern.rag.llm import OpenAIChatModel, build_llm
from lectern.rag.settings import load_settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "SCALING.md").read_text(encoding="utf-8")
MARKER = "<!-- doc-test: llm-serving"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def serving_blocks() -> list[list[list[str]]]:
    """The bash blocks after the marker, up to the next section: each a list of command lines."""
    start = DOC.index(MARKER)
    end = DOC.find("\n## ", start)
    end = len(DOC) if end < 0 else end
    return [
        [argv for line in m.group(1).splitlines() if (argv := shlex.split(line, comments=True))]
        for m in FENCE.finditer(DOC, start, end)
    ]


def exported(block: list[list[str]]) -> dict[str, str]:
    """`export NAME=value` lines as the shell would set them (a "$KEY" stays as written)."""
    return dict(argv[1].split("=", 1) for argv in block if argv[0] == "export")


ENGINES = ("vllm", "llama-server", "ollama")


def served(block: list[list[str]]) -> tuple[str, str, int, bool, int]:
    """(engine, the model name it serves, its port, whether it wants a key, the window each request
    gets) from the block's server command line."""
    for line in block:
        prefix = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in line if re.fullmatch(r"[A-Z_]+=.*", a)}
        argv = line[len(prefix) :]
        if argv and argv[0] in ENGINES:
            break
    else:
        raise AssertionError(f"no server command in {block}")

    def flag(*names: str) -> str | None:
        return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in names), None)

    keyed = "--api-key" in argv
    if argv[:2] == ["vllm", "serve"]:
        return "vllm", argv[2], int(flag("--port") or 8000), keyed, int(flag("--max-model-len") or 0)
    if argv[0] == "llama-server":  # -c is shared by the -np slots
        window = int(flag("-c", "--ctx-size") or 0) // int(flag("-np", "--parallel") or 1)
        return "llama.cpp", flag("--alias") or "", int(flag("--port") or 8080), keyed, window
    pull = next(a for a in block if a[:2] == ["ollama", "pull"])
    return "ollama", pull[2], 11434, False, int(prefix.get("OLLAMA_CONTEXT_LENGTH", 0))


def test_the_doc_documents_the_three_engines() -> None:
    engines = [served(block)[0] for block in serving_blocks()]
    assert engines == ["vllm", "llama.cpp", "ollama"]
    vllm = next(b for b in serving_blocks() if served(b)[0] == "vllm")
    assert "--tensor-parallel-size" in vllm[0] and "--api-key" in vllm[0]


@pytest.mark.parametrize("index", range(3), ids=["vllm", "llama.cpp", "ollama"])
def test_documented_settings_select_the_openai_backend_at_that_server(
    index: int, data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    block = serving_blocks()[index]
    engine, model, port, keyed, window = served(block)
    env = exported(block)
    assert all(name.startswith("LECTERN_LLM__") for name in env), env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    llm = settings.llm
    assert llm.backend == "openai"
    assert llm.model == model, f"{engine}: lectern asks for {llm.model!r}, the server serves {model!r}"
    assert llm.base_url is not None and llm.base_url.endswith(f":{port}/v1"), llm.base_url
    assert (llm.api_key is not None) == keyed, f"{engine}: a key exactly when the server wants one"
    assert llm.context_window == window, f"{engine}: lectern's window is the server's per request"

    chat = build_llm(llm, tmp_path)  # the openai backend, built without contacting the server
    assert isinstance(chat, OpenAIChatModel)
    assert chat.url == f"{llm.base_url}/chat/completions"
    assert chat.model_name == model and chat.context_window == llm.context_window
    assert ("Authorization" in chat._headers()) == keyed
