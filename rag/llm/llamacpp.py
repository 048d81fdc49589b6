"""The llamacpp backend: a GGUF model run as it is by llama.cpp (llama-cpp-python), memory-mapped,
its 4- and 8-bit weights used by llama.cpp's own kernels (AVX2, AVX-512, AMX; a GPU's with a CUDA
build and `llm.gpu_layers`). No conversion: the packaged models' GGUF files are used in place (the
split ones joined once, rag.models.packaged_gguf) and a user's `.gguf` path too.

It meets the local backend's contract (rag.llm.templated): the prompt is the chat template the GGUF
carries, rendered as transformers would; tokens are counted with the GGUF's own tokenizer; stop
strings end generation; the repetition penalty falls on the generated tokens only; tools and
`tool_choice` work as on the local backend; replies carry `usage_metadata`. One Llama context
serves one generation at a time (a lock); llama.cpp keeps the prompt prefix a call shares with the
previous one (an agent's growing conversation is not prefilled again).

llama_cpp is imported when a model is built, never by `import lectern`.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from pydantic import ConfigDict, Field

from lectern.errors import BackendUnavailable, ContextTooLong, CorruptModel, InvalidInput, ModelNotFound
from lectern.rag.llm.base import Interrupt
from lectern.rag.llm.llamacpp_import import import_llama_cpp
from lectern.rag.llm.local import CPU_WINDOW
from lectern.rag.llm.structured import llama_grammar
from lectern.rag.llm.templated import TemplatedChatModel, render_chat_template, usage
from lectern.rag.llm.tool_calls import tool_chat_dicts
from lectern.rag.models import (
    AUTO,
    BIG,
    GGUF_MAGIC,
    Hardware,
    choose_packaged,
    gguf_file,
    installed,
)
from lectern.rag.settings import LLMSettings


def gpu_offload() -> bool:
    """Whether the installed llama.cpp can offload layers to a GPU (a CUDA, Metal or Vulkan build)."""
    try:
        return bool(import_llama_cpp().llama_supports_gpu_offload())
    except BackendUnavailable:
        return False


class LlamaCppChatModel(TemplatedChatModel):
    """A GGUF model on llama.cpp, prompted through the chat template its file carries."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: str = ""
    seed: int | None = None  # sampling's seed when temperature > 0 (a call's `seed=` wins)
    template: str | None = None  # the GGUF's tokenizer.chat_template
    special_tokens: dict[str, str] = Field(default_factory=dict)  # bos_token, eos_token for the template
    llama: Any = Field(default=None, exclude=True, repr=False)
    lock: Any = Field(default_factory=threading.Lock, exclude=True, repr=False)  # shared by copies

    @property
    def _llm_type(self) -> str:
        return "lectern-llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, "seed": self.seed}

    def get_token_ids(self, text: str) -> list[int]:
        """The GGUF tokenizer's ids; special tokens written in the text are read as such (as the
        local backend's tokenizer reads them)."""
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _chat_template(self) -> str | None:
        return self.template

    def _prompt_text(self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None) -> str:
        if not self.template:
            raise InvalidInput("llm.model", self.model_path, "the GGUF file has no chat template")
        options: dict[str, Any] = {"tools": tools} if tools else {}
        return render_chat_template(
            self.template,
            tool_chat_dicts(messages),
            add_generation_prompt=True,
            **self.special_tokens,
            **options,
        )

    def _options(
        self,
        prompt_len: int,
        stop: list[str] | None,
        overrides: dict[str, Any],
        interrupt: Interrupt | None = None,
    ) -> dict[str, Any]:
        """create_completion's arguments: greedy at temperature 0, else plain sampling at that
        temperature (no top-k, top-p, min-p: what the local backend samples from); stop strings; the
        repetition rule on the generated tokens only (llama.cpp's own penalty would hit the prompt's);
        a stop asked (rag.llm.base.stoppable) ends generation at the next token."""
        temperature = float(overrides.get("temperature", self.temperature))
        seed = overrides.get("seed", self.seed)
        options: dict[str, Any] = {
            "max_tokens": int(overrides.get("max_new_tokens", self.max_new_tokens)),
            "temperature": temperature,
            "top_p": float(overrides.get("top_p", 1.0)),
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "stop": list(stop or []),
        }
        if seed is not None:
            options["seed"] = int(seed)
        schema = overrides.get("response_schema", self.response_schema)
        if schema is not None:  # JSON that validates: a grammar from the schema (rag.llm.structured)
            options["grammar"] = llama_grammar(schema)
        if interrupt is not None:
            import llama_cpp

            options["stopping_criteria"] = llama_cpp.StoppingCriteriaList(
                [lambda _ids, _logits: interrupt.asked()]
            )
        if self.repetition_penalty != 1.0:
            import llama_cpp

            options["logits_processor"] = llama_cpp.LogitsProcessorList(
                [_penalty_after(prompt_len, self.repetition_penalty)]
            )
        return options

    def _ids_that_fit(self, prompt: str) -> list[int]:
        ids = self.get_token_ids(prompt)
        room = int(self.llama.n_ctx())
        if len(ids) >= room:  # at least one token of reply must fit
            raise ContextTooLong(len(ids), room, "prompt")
        return ids

    def _complete(self, prompt: str, stop: list[str] | None, **overrides: Any) -> tuple[str, UsageMetadata]:
        ids = self._ids_that_fit(prompt)
        interrupt = Interrupt.current()
        with self.lock:
            out = self.llama.create_completion(ids, **self._options(len(ids), stop, overrides, interrupt))
        if interrupt is not None:
            interrupt.raise_if_asked()
        used = out["usage"]
        return str(out["choices"][0]["text"]), usage(used["prompt_tokens"], used["completion_tokens"])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Text as llama.cpp decodes it (whole UTF-8 characters, a possible stop string held back),
        then an empty chunk with the usage; with tools bound, the whole reply as one chunk."""
        if kwargs.get("tools"):
            yield self._whole_reply(messages, stop, run_manager, **kwargs)
            return
        prompt, text = self._prompt_text(messages), ""
        for piece in self.stream_text(prompt, stop, **kwargs):
            text += piece
            yield self._chunk(piece, run_manager)
        used = usage(len(self.get_token_ids(prompt)), len(self.get_token_ids(text)) if text else 0)
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=used))

    def stream_text(self, prompt: str, stop: list[str] | None = None, **overrides: Any) -> Iterator[str]:
        """The reply to `prompt` as written (no chat template: `lectern serve`'s /v1/completions, and
        a rendered chat prompt), as llama.cpp decodes it: whole UTF-8 characters, a possible stop
        string held back."""
        ids = self._ids_that_fit(prompt)
        interrupt = Interrupt.current()
        with self.lock:  # held until the stream ends or its consumer closes it
            options = self._options(len(ids), stop, overrides, interrupt)
            for part in self.llama.create_completion(ids, stream=True, **options):
                piece = str(part["choices"][0]["text"])
                if piece:
                    yield piece
        if interrupt is not None:
            interrupt.raise_if_asked()


def _penalty_after(prompt_len: int, penalty: float) -> Any:
    """The local backend's repetition rule (rag.llm.local._penalty_after) as a llama.cpp logits
    processor: the logits of tokens generated so far are penalized, the prompt's are not."""
    import numpy as np

    def apply(input_ids: Any, scores: Any) -> Any:
        generated = np.unique(input_ids[prompt_len:])
        if generated.size:
            picked = scores[generated]
            scores[generated] = np.where(picked < 0, picked * penalty, picked / penalty)
        return scores

    return apply


def physical_cores() -> int:
    """The physical cores this process may run on (llama.cpp is slower with a thread per SMT
    sibling); the usable CPUs where /proc/cpuinfo does not say."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return max(1, len(usable))
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^(processor|physical id|core id)\s*:\s*(\S+)", block, re.MULTILINE))
        if "processor" in fields and int(fields["processor"]) in usable:
            cores.add((fields.get("physical id"), fields.get("core id", fields["processor"])))
    return max(1, len(cores) or len(usable))


def check_gguf_header(path: Path) -> None:
    """CorruptModel unless `path` starts as a GGUF file does (llama.cpp checks the rest as it loads)."""
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CorruptModel(str(path), "not a GGUF file (no GGUF magic at the start)")


SPEED_FILE = "llm-speed.json"
"""<models_dir>/llm-speed.json: a typical answer's seconds per GGUF model, measured once per machine."""
TYPICAL_PROMPT, TYPICAL_REPLY = 500, 18
"""Tokens the model reads and writes for a typical RAG answer: 525 and 18 on average per `ask` of 20
S09 questions with lectern's defaults (1.1 model calls per answer; docs/LLM.md). What
`typical_answer_seconds` scales its short timing to."""
_PROBE_PROMPT, _PROBE_STEPS = 256, 8
_PROBE_TEXT = (
    "The reading room of the county library keeps its older maps in a cool room on the second floor. "
    "Each map is catalogued by region, year and scale, and readers may ask for three at a time. "
)


def typical_answer_seconds(llama_cpp: Any, path: Path, threads: int) -> dict[str, float]:
    """How long a typical RAG answer takes with the GGUF at `path` on this CPU: a prefill of
    _PROBE_PROMPT tokens and _PROBE_STEPS decode steps, timed after a warm-up that pages the weights
    in, scaled to TYPICAL_PROMPT and TYPICAL_REPLY tokens (a few seconds for the 1.5B on 2 cores,
    not a whole answer's)."""
    llama = llama_cpp.Llama(
        model_path=str(path), n_ctx=2 * _PROBE_PROMPT, n_threads=threads, n_threads_batch=threads,
        n_gpu_layers=0, use_mmap=True, verbose=False,
    )  # fmt: skip
    try:
        text = _PROBE_TEXT.encode()
        ids = list(llama.tokenize(text, add_bos=False))
        ids = (ids * (_PROBE_PROMPT // len(ids) + 1))[:_PROBE_PROMPT]
        llama.eval(ids[:32])  # warm-up
        llama.reset()
        start = time.perf_counter()
        llama.eval(ids)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for token in ids[:_PROBE_STEPS]:
            llama.eval([token])
        step = (time.perf_counter() - start) / _PROBE_STEPS
    finally:
        llama.close()
    answer = TYPICAL_PROMPT * prefill / _PROBE_PROMPT + TYPICAL_REPLY * step
    return {"prefill_tokens_per_s": round(_PROBE_PROMPT / prefill, 1), "decode_s_per_token": round(step, 4),
            "answer_s": round(answer, 2)}  # fmt: skip


def settled(entry: dict[str, Any], threads: int, retry_s: float = 86400.0) -> bool:
    """Whether a kept speed measurement stands: one taken while other jobs held the cores (a load
    average of `threads` or more) is used, but taken again after `retry_s`, so a busy moment does
    not decide the model for good."""
    if not isinstance(entry.get("answer_s"), (int, float)):
        return False
    if float(entry.get("load_average") or 0.0) < threads:
        return True
    try:
        taken = time.mktime(time.strptime(str(entry["measured"]), "%Y-%m-%d %H:%M:%S"))
    except (KeyError, ValueError, OverflowError):
        return False
    return time.time() - taken < retry_s


def measured_answer_seconds(model: str, models_dir: Path, threads: int) -> float:
    """`typical_answer_seconds` of packaged `model` on this machine, measured once and kept in
    <models_dir>/llm-speed.json (ingest.cpu_precision.once_per_machine), keyed by the CPU, its
    threads, llama-cpp-python's version and the model file."""
    from lectern.ingest.cpu_precision import cpu_info, machine_key, once_per_machine

    llama_cpp = import_llama_cpp()
    path = gguf_file(model, models_dir)
    assert path is not None
    cpu, flags = cpu_info()
    fields = {
        "cpu": cpu or os.uname().machine,
        "flags": machine_key({"flags": " ".join(sorted(flags))}),
        "threads": str(threads),
        "llama_cpp": importlib.metadata.version("llama_cpp_python"),
        "model": f"{model}@{path.stat().st_size}",
    }

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    entry = once_per_machine(
        models_dir / SPEED_FILE,
        fields,
        lambda: typical_answer_seconds(llama_cpp, path, threads),
        say,
        f"how fast {model} answers on this CPU",
        valid=lambda entry: settled(entry, threads),
    )
    return float(entry["answer_s"])


def build_llamacpp(settings: LLMSettings, models_dir: Path) -> LlamaCppChatModel:
    """The GGUF `settings.model` names, on llama.cpp: CorruptModel for a file llama.cpp cannot load
    (truncated, damaged), InvalidInput for a model that is not a GGUF file."""
    llama_cpp = import_llama_cpp()
    offload = settings.device != "cpu" and gpu_offload()
    threads = settings.threads or physical_cores()
    name, why = settings.model, ""
    if name == AUTO:
        available = installed()
        big_s = None
        if BIG in available and not offload:
            try:
                big_s = measured_answer_seconds(BIG, models_dir, threads)
            except (CorruptModel, ModelNotFound, OSError) as error:  # the 0.5B still answers
                print(f"lectern: {BIG} left out of the choice: {error}", file=sys.stderr, flush=True)
                available = [m for m in available if m != BIG]
        name, why = choose_packaged(available, Hardware.here(cuda=offload, big_answer_s=big_s))
    path = gguf_file(name, models_dir)
    if path is None:
        raise InvalidInput(
            "llm.model",
            settings.model,
            "the llamacpp backend runs GGUF files (packaged:NAME or a .gguf path); "
            "use --backend local for a transformers model",
        )
    check_gguf_header(path)
    layers = settings.gpu_layers if settings.gpu_layers is not None else (-1 if offload else 0)
    # the window: the configured one, else the model's own capped at CPU_WINDOW on a CPU (a
    # context is allocated for all of it: the KV cache of Qwen's 32k would be 0.4-0.9 GB)
    n_ctx = settings.context_window or (0 if layers else CPU_WINDOW)
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=layers,
            use_mmap=True,
            verbose=False,
        )
    except ValueError as error:  # llama.cpp's loader refused the file
        raise CorruptModel(str(path), f"llama.cpp cannot load this GGUF file ({error})") from None
    window = int(llama.n_ctx())
    if not settings.context_window:
        window = min(window, int(llama._model.n_ctx_train()))
    meta = dict(getattr(llama, "metadata", {}) or {})
    vocab = llama._model
    specials = {
        "bos_token": vocab.token_get_text(llama.token_bos()) if llama.token_bos() >= 0 else "",
        "eos_token": vocab.token_get_text(llama.token_eos()) if llama.token_eos() >= 0 else "",
    }
    return LlamaCppChatModel(
        model_name=name,
        chosen_because=why,
        model_path=str(path),
        llama=llama,
        template=meta.get("tokenizer.chat_template"),
        special_tokens=specials,
        context_window=window,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        repetition_penalty=settings.repetition_penalty,
    )
