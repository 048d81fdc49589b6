"""The one factory for chat models: `build_llm(settings, models_dir)` picks a backend from LLM_BACKENDS.

Every model it returns is a langchain-core BaseChatModel that also knows its `context_window` and
counts tokens with its own tokenizer (LangChain's default needs a GPT-2 download and silently says 0
offline), so chains can `fit_check` a prompt before sending it. torch and transformers are imported
inside the local backend only, so `import rag.llm` stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from lectern.errors import ContextTooLong, LLMServerError, LLMUnavailable, ModelNotFound, UnknownKey
from lectern.ingest.atomic import atomic_folder
from lectern.ingest.embed import cpu_has_native_bf16
from lectern.rag.models import (
    AUTO,
    PACKAGED_PREFIX,
    Hardware,
    choose_packaged,
    file_key,
    installed,
    packaged_gguf,
)
from lectern.rag.settings import LLMSettings

CONVERSIONS = 0
"""How many GGUF -> safetensors conversions this process ran (tests prove the cache by this count)."""

CACHE_FORMAT = 3
"""Bumped when the layout of a converted model's folder changes, so old caches are not reused."""
DEFAULT_OPENAI_WINDOW = 4096
_PROBE = "The quick brown fox jumps over the lazy dog. Paris, 1889: naïve café — 42%!"


class LecternChatModel(BaseChatModel):
    """A chat model that knows its context window and can say whether a prompt fits."""

    context_window: int = 2048
    max_new_tokens: int = 256

    def fit_check(
        self, messages: LanguageModelInput, reserve: int | None = None, field: str = "prompt"
    ) -> int:
        """Count the prompt's tokens; raise ContextTooLong naming `field` if it plus `reserve` overflow."""
        return fit_check(self, messages, reserve=reserve, field=field)

    @staticmethod
    def _chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        """One streamed piece, reported to the callbacks as a new token."""
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk


def fit_check(
    llm: BaseChatModel, messages: LanguageModelInput, reserve: int | None = None, field: str = "prompt"
) -> int:
    """Tokens of `messages`; raises ContextTooLong when they plus `reserve` (default: the answer's
    max_new_tokens) do not fit the model's context window."""
    window = int(getattr(llm, "context_window", 0) or 0)
    if reserve is None:
        reserve = int(getattr(llm, "max_new_tokens", 0) or 0)
    if isinstance(messages, BaseMessage):
        messages = [messages]
    msgs = llm._convert_input(messages).to_messages()
    tokens = llm.get_num_tokens_from_messages(msgs)
    if window and tokens + reserve > window:
        raise ContextTooLong(tokens + reserve, window, field)
    return tokens


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the role/content dicts chat templates and OpenAI servers expect."""
    out = []
    for message in messages:
        if isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
        elif isinstance(message, ChatMessage):
            role = message.role
        else:
            role = "user"
        out.append({"role": role, "content": message.text})
    return out


def _cut_at_stop(text: str, stop: list[str] | None) -> str:
    """Truncate at the first stop string (generation itself stops at EOS)."""
    for word in stop or []:
        index = text.find(word)
        if index >= 0:
            text = text[:index]
    return text


# --------------------------------------------------------------------------- local (transformers)


class LocalChatModel(LecternChatModel):
    """A transformers causal LM on CPU or CUDA, with true batched generation for map steps."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "local"
    chosen_because: str = ""  # packaged:auto: why this model was picked for this machine
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    batch_size: int = 8
    hf_model: Any = Field(default=None, exclude=True, repr=False)
    tokenizer: Any = Field(default=None, exclude=True, repr=False)

    @property
    def _llm_type(self) -> str:
        return "lectern-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature}

    # token counting with the model's own tokenizer
    def get_token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return len(self._prompt_ids(messages))

    def _prompt_text(self, messages: Sequence[BaseMessage]) -> str:
        text = self.tokenizer.apply_chat_template(
            to_chat_dicts(messages), tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def _prompt_ids(self, messages: Sequence[BaseMessage]) -> list[int]:
        return list(self.tokenizer(self._prompt_text(messages), add_special_tokens=False).input_ids)

    def _gen_kwargs(
        self, prompt_len: int | None = None, stop: Sequence[str] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        temperature = float(overrides.get("temperature", self.temperature))
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(overrides.get("max_new_tokens", self.max_new_tokens)),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self._eos_ids(),
        }
        if stop and prompt_len is not None:  # end generation at a stop string, not only cut the text
            kwargs["stopping_criteria"] = _stop_at_text(prompt_len, list(stop), self.tokenizer)
        if self.repetition_penalty != 1.0 and prompt_len is not None:
            # Small models loop ("the tower the tower ...") without it. transformers' own penalty also
            # hits the prompt's tokens, which stops the model copying names from its sources.
            kwargs["logits_processor"] = _penalty_after(prompt_len, self.repetition_penalty)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _eos_ids(self) -> list[int]:
        """The tokenizer's EOS and the generation config's (Qwen ends turns with <|im_end|>)."""
        ids: list[int] = []
        configured = getattr(self.hf_model.generation_config, "eos_token_id", None)
        for value in [self.tokenizer.eos_token_id, configured]:
            for item in value if isinstance(value, list) else [value]:
                if item is not None and item not in ids:
                    ids.append(int(item))
        return ids

    def _generate_texts(
        self, prompts: list[str], stop: Sequence[str] | None = None, **overrides: Any
    ) -> list[str]:
        """One padded `generate` call for all `prompts` (left padding, so new tokens line up)."""
        import torch

        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.hf_model.device)
        with torch.inference_mode():
            out = self.hf_model.generate(
                **enc, **self._gen_kwargs(enc["input_ids"].shape[1], stop, **overrides)
            )
        new = out[:, enc["input_ids"].shape[1] :]
        return [str(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def generate_many(self, prompts: list[str], **overrides: Any) -> list[str]:
        """Generate for many prompts in batches of `batch_size`; on out-of-memory halve and retry."""
        import torch

        results: list[str] = []
        size = max(1, min(self.batch_size, len(prompts)))
        start = 0
        while start < len(prompts):
            chunk = prompts[start : start + size]
            try:
                results.extend(self._generate_texts(chunk, **overrides))
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                size = max(1, size // 2)
                continue
            start += len(chunk)
        return results

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = _cut_at_stop(self._generate_texts([self._prompt_text(messages)], stop, **kwargs)[0], stop)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Token-by-token text from a TextIteratorStreamer fed by `generate` in a thread."""
        import torch
        from transformers import TextIteratorStreamer

        enc = self.tokenizer(self._prompt_text(messages), return_tensors="pt", add_special_tokens=False)
        enc = enc.to(self.hf_model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.hf_model.generate(
                        **enc,
                        **self._gen_kwargs(enc["input_ids"].shape[1], stop, **kwargs),
                        streamer=streamer,
                    )
            except BaseException as error:  # surfaced to the caller below
                failure.append(error)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        emitted = ""
        for piece in streamer:
            if not piece:
                continue
            if stop:
                cut = _cut_at_stop(emitted + piece, stop)
                if len(cut) < len(emitted) + len(piece):
                    piece = cut[len(emitted) :]
                    if piece:
                        yield self._chunk(piece, run_manager)
                    break
            emitted += piece
            yield self._chunk(piece, run_manager)
        thread.join()
        if failure:
            raise failure[0]

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """All inputs through padded `generate` calls (the map step of map-reduce), in order."""
        if not inputs:
            return []
        prompts = [self._prompt_text(self._convert_input(x).to_messages()) for x in inputs]
        stop = kwargs.pop("stop", None)
        try:
            texts = self.generate_many(prompts, stop=stop, **kwargs)
        except Exception as error:
            if not return_exceptions:
                raise
            return [error for _ in inputs]  # type: ignore[misc]
        return [AIMessage(content=_cut_at_stop(t, stop)) for t in texts]

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:  # type: ignore[override]
        """`batch` in a worker thread, so the event loop stays free while the model runs."""
        return await run_in_executor(
            None, lambda: self.batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        )


def _stop_at_text(prompt_len: int, stop: list[str], tokenizer: Any) -> Any:
    """Stop a row once its generated text holds a stop string. transformers' own `stop_strings`
    precomputes tables over the whole vocabulary on every call (seconds for Qwen's 151k tokens);
    decoding the few new tokens of a short answer costs microseconds."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopAtText(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [any(s in text for s in stop) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopAtText()])


def _penalty_after(prompt_len: int, penalty: float) -> Any:
    """A repetition penalty on the tokens generated so far only, not on the prompt's (the sources)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class GeneratedRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            generated = input_ids[:, prompt_len:]
            if generated.shape[1] == 0:
                return scores
            picked = torch.gather(scores, 1, generated)
            picked = torch.where(picked < 0, picked * penalty, picked / penalty)
            return scores.scatter(1, generated, picked)  # type: ignore[return-value]

    return LogitsProcessorList([GeneratedRepetitionPenalty()])


def _resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name not in ("auto", ""):
        value = getattr(torch, name, None)
        if not isinstance(value, torch.dtype):  # torch.nn is an attribute too
            raise UnknownKey("dtype", name, ["auto", "float32", "bfloat16", "float16"])
        return value
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPU: bf16 weights where the CPU has bf16 instructions (2x faster answers with Qwen 0.5B on
    # avx512_bf16, half the memory; bench/llm_speed.py --dtypes), fp32 elsewhere, where bf16 is
    # emulated and several times slower.
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def tokenizer_ok(tokenizer: Any) -> bool:
    """A round trip of a probe sentence gives it back, with no special token slipped between words
    (the known transformers trap: a tokenizer saved after a GGUF load inserted <|endoftext|>)."""
    ids = tokenizer.encode(_PROBE, add_special_tokens=False)
    special = set(tokenizer.all_special_ids or [])
    return tokenizer.decode(ids) == _PROBE and not any(i in special for i in ids)


def save_tokenizer(tok: Any, folder: Path) -> None:
    """Save the fast tokenizer's own tokenizer.json plus its special tokens and chat template.

    Not `save_pretrained`: after a GGUF load transformers 5.23 saves a CodeLlamaTokenizer config
    whose reload puts <|endoftext|> between words; the raw tokenizers JSON round-trips exactly.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    meta = {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    meta["chat_template"] = tok.chat_template
    (folder / "lectern_tokenizer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_saved_tokenizer(folder: Path) -> Any:
    """The tokenizer `save_tokenizer` wrote (a plain PreTrainedTokenizerFast, ~0.1 s)."""
    from transformers import PreTrainedTokenizerFast

    meta = json.loads((folder / "lectern_tokenizer.json").read_text(encoding="utf-8"))
    template = meta.pop("chat_template", None)
    specials = {k: v for k, v in meta.items() if isinstance(v, str)}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **specials)
    tok.chat_template = template
    return tok


def _convert_gguf(gguf: Path, target: Path, stored: Any) -> None:
    """Dequantize a GGUF once and save it as safetensors in `target` (temp dir renamed into place),
    in the `stored` dtype (see _storage_dtype).

    The saved tokenizer is kept only if it encodes probe texts to the same ids and renders the same
    chat template as the GGUF-loaded one; else the manifest says to load the tokenizer from the GGUF.
    """
    global CONVERSIONS
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    CONVERSIONS += 1
    with atomic_folder(target, done="lectern.json") as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers refuses to save a model loaded through its GGUF quantizer even though the
        # weights are already dequantized plain tensors; detach the quantizer to save them.
        packed = [type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()]
        if packed:
            raise RuntimeError(f"GGUF load kept packed layers ({packed[0]}); cannot cache them")
        setattr(model, "hf_quantizer", None)  # noqa: B010
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if stored != torch.float32:
            model.to(stored)
        model.save_pretrained(str(tmp))
        save_tokenizer(tok, tmp / "tokenizer")
        saved = load_saved_tokenizer(tmp / "tokenizer")
        chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": _PROBE}]
        same = (
            tokenizer_ok(saved)
            and all(saved.encode(t) == tok.encode(t) for t in (_PROBE, "Hello world.\n\n  x = 1"))
            and saved.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        )
        manifest = {
            "source": str(gguf),
            "tokenizer": "saved" if same else "gguf",
            "format": CACHE_FORMAT,
            "stored_dtype": str(stored).removeprefix("torch."),
        }
        (tmp / "lectern.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _storage_dtype(dtype: Any) -> Any:
    """The dtype a converted GGUF is cached in: the one it will run in.

    Stored in its compute dtype, the weights are memory-mapped as they are: Qwen 1.5B in bf16 loads
    in 5.4 s with a 3.8 GB peak RSS from a bf16 cache, against 13.0 s and 10.9 GB from an fp32 one
    (the mapped file plus a bf16 copy), and the cache is half the size (3.6 instead of 7.1 GB).
    Rounding to bf16 once at conversion is the rounding loading would do anyway (docs/LLM.md)."""
    import torch

    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def _load_tokenizer(folder: Path, gguf: Path | None) -> Any:
    from transformers import AutoTokenizer

    manifest = folder / "lectern.json"
    use_gguf = gguf is not None and (
        not manifest.is_file() or json.loads(manifest.read_text(encoding="utf-8"))["tokenizer"] != "saved"
    )
    if not use_gguf:
        sub = folder / "tokenizer"
        tok = load_saved_tokenizer(sub) if sub.is_dir() else AutoTokenizer.from_pretrained(str(folder))
        if tokenizer_ok(tok) or gguf is None:
            return tok
    assert gguf is not None
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def resolve_local(model: str, models_dir: Path, dtype: Any = None) -> tuple[Path | str, Path | None]:
    """(what to load with from_pretrained, the GGUF it came from or None), converting a GGUF once.

    A GGUF is cached in the dtype it will run in (fp32 when None), one cache per dtype."""
    gguf: Path | None = None
    name = model
    if model.startswith(PACKAGED_PREFIX):
        name = model[len(PACKAGED_PREFIX) :]
        gguf = packaged_gguf(name, models_dir)
    elif model.endswith(".gguf"):
        gguf = Path(model).expanduser()
        if not gguf.is_file():
            raise ModelNotFound(model, "no such .gguf file")
        name = gguf.stem
    elif Path(model).expanduser().is_dir():
        return Path(model).expanduser(), None
    else:
        return model, None  # a hub id: loaded with local_files_only below
    import torch

    stored = _storage_dtype(dtype)
    suffix = "" if stored == torch.float32 else "-" + str(stored).removeprefix("torch.")
    target = models_dir / f"{name}-{file_key(gguf, salt=f'v{CACHE_FORMAT}')}{suffix}"
    if not (target / "lectern.json").is_file():
        _convert_gguf(gguf, target, stored)
    return target, gguf


def build_local(settings: LLMSettings, models_dir: Path) -> LocalChatModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = _resolve_dtype(settings.dtype, device)
    name, why = settings.model, ""
    if name == AUTO:
        name, why = choose_packaged(installed(), Hardware.here(cuda=device == "cuda"))
    source, gguf = resolve_local(name, models_dir, dtype)
    if device == "cpu":
        torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    load: dict[str, Any] = {"dtype": dtype}
    if device == "cuda":
        load["device_map"] = "auto"
    try:
        if isinstance(source, Path):
            model = AutoModelForCausalLM.from_pretrained(str(source), **load)
            tok = _load_tokenizer(source, gguf)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, **load)
            tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as error:
        raise ModelNotFound(
            settings.model, f"not a folder, .gguf, packaged model or cached hub id ({error})"
        ) from error
    if device != "cuda":
        model = cast(Any, model).to(device)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    window = settings.context_window or int(getattr(model.config, "max_position_embeddings", 2048))
    return LocalChatModel(
        model_name=name,
        chosen_because=why,
        hf_model=model,
        tokenizer=tok,
        context_window=window,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        repetition_penalty=settings.repetition_penalty,
        batch_size=settings.batch_size,
    )


# --------------------------------------------------------------------------- openai-compatible (httpx)


def estimate_tokens(text: str) -> int:
    """A conservative (over-)estimate when no tokenizer is at hand: one token per 3 UTF-8 bytes,
    at least one per word. BPE tokenizers average ~4 bytes per token on English prose."""
    return max(math.ceil(len(text.encode("utf-8")) / 3), len(text.split()))


class OpenAIChatModel(LecternChatModel):
    """Any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, LM Studio...) over plain httpx."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str
    model_name: str
    api_key: str | None = None
    temperature: float = 0.0
    timeout_s: float = 120.0
    tokenizer: Any = Field(default=None, exclude=True, repr=False)

    @property
    def _llm_type(self) -> str:
        return "lectern-openai"

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")

    def get_num_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        return estimate_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Content tokens plus 4 per message and 3 for the reply's priming (OpenAI's own rule)."""
        return sum(self.get_num_tokens(m.text) + 4 for m in messages) + 3

    def _payload(
        self, messages: list[BaseMessage], stop: list[str] | None, stream: bool, **kw: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model_name,
            "messages": to_chat_dicts(messages),
            "temperature": float(kw.get("temperature", self.temperature)),
            "max_tokens": int(kw.get("max_new_tokens", self.max_new_tokens)),
            "stream": stream,
        }
        if stop:
            payload["stop"] = stop
        return payload

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        message = response.text.strip()
        try:
            body = response.json()
            error = body.get("error", body) if isinstance(body, dict) else body
            message = str(error.get("message", error) if isinstance(error, dict) else error)
        except ValueError:
            pass  # not JSON: keep the raw text as the server's message
        raise LLMServerError(self.url, response.status_code, message or response.reason_phrase)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                response = client.post(
                    self.url, json=self._payload(messages, stop, False, **kwargs), headers=self._headers()
                )
                self._raise_for(response)
                body = response.json()
        except httpx.TransportError as error:
            raise LLMUnavailable(self.url, f"{type(error).__name__}: {error}") from error
        text = body["choices"][0]["message"].get("content") or ""
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Server-sent events: `data: {json}` lines until `data: [DONE]`."""
        try:
            with (
                httpx.Client(timeout=self.timeout_s) as client,
                client.stream(
                    "POST",
                    self.url,
                    json=self._payload(messages, stop, True, **kwargs),
                    headers=self._headers(),
                ) as response,
            ):
                self._raise_for(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    choices = event.get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content") or ""
                    if piece:
                        chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                        if run_manager:
                            run_manager.on_llm_new_token(piece, chunk=chunk)
                        yield chunk
        except httpx.TransportError as error:
            raise LLMUnavailable(self.url, f"{type(error).__name__}: {error}") from error


def build_openai(settings: LLMSettings, models_dir: Path) -> OpenAIChatModel:
    tokenizer = None
    if settings.tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer, local_files_only=True)
        except OSError as error:
            raise ModelNotFound(settings.tokenizer, f"tokenizer not found locally ({error})") from error
    return OpenAIChatModel(
        base_url=settings.base_url or "http://127.0.0.1:8000",
        model_name=settings.model,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window or DEFAULT_OPENAI_WINDOW,
        timeout_s=settings.timeout_s,
        tokenizer=tokenizer,
    )


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


def build_llm(settings: LLMSettings, models_dir: Path) -> BaseChatModel:
    """The chat model `settings` ask for; packaged/GGUF models are cached under `models_dir`."""
    try:
        builder = LLM_BACKENDS[settings.backend]
    except KeyError:
        raise UnknownKey("LLM backend", settings.backend, list(LLM_BACKENDS)) from None
    return builder(settings, Path(models_dir))
