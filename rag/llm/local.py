"""The local backend: a transformers causal LM on CPU or CUDA (`build_local`), with true batched
generation, streaming, stop strings checked on the generated text, and a repetition penalty on
the generated tokens only. torch and transformers are imported inside, when a model is built."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from lectern.errors import ModelNotFound, UnknownKey
from lectern.ingest.st_embed import cpu_has_native_bf16
from lectern.rag.llm.base import Interrupt, cut_at_stop
from lectern.rag.llm.convert import (
    load_tokenizer,
    resolve_local,
)
from lectern.rag.llm.structured import JsonConstraint, json_rows
from lectern.rag.llm.templated import TemplatedChatModel, usage
from lectern.rag.llm.tool_calls import tool_chat_dicts
from lectern.rag.models import (
    AUTO,
    Hardware,
    choose_packaged,
    installed,
)
from lectern.rag.settings import LLMSettings


class LocalChatModel(TemplatedChatModel):
    """A transformers causal LM on CPU or CUDA, with true batched generation for map steps."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    batch_size: int = 8
    hf_model: Any = Field(default=None, exclude=True, repr=False)
    tokenizer: Any = Field(default=None, exclude=True, repr=False)

    @property
    def _llm_type(self) -> str:
        return "lectern-local"

    # token counting with the model's own tokenizer
    def get_token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def _prompt_text(self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None) -> str:
        options: dict[str, Any] = {"tools": tools} if tools else {}  # only templates with tools get them
        text = self.tokenizer.apply_chat_template(
            tool_chat_dicts(messages), tokenize=False, add_generation_prompt=True, **options
        )
        return str(text)

    def _prompt_ids(
        self, messages: Sequence[BaseMessage], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        return list(self.tokenizer(self._prompt_text(messages, tools), add_special_tokens=False).input_ids)

    def _complete(self, prompt: str, stop: list[str] | None, **overrides: Any) -> tuple[str, UsageMetadata]:
        text = cut_at_stop(self._generate_texts([prompt], stop, **overrides)[0], stop)
        return text, usage(len(self.get_token_ids(prompt)), len(self.get_token_ids(text)) if text else 0)

    def _gen_kwargs(
        self,
        prompt_len: int | None = None,
        stop: Sequence[str] | None = None,
        *,
        interrupt: Interrupt | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        temperature = float(overrides.get("temperature", self.temperature))
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(overrides.get("max_new_tokens", self.max_new_tokens)),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self._eos_ids(),
        }
        criteria = []
        if stop and prompt_len is not None:  # end generation at a stop string, not only cut the text
            criteria.append(_stop_at_text(prompt_len, list(stop), self.tokenizer))
        if interrupt is not None:  # a stop asked (rag.llm.base.stoppable) ends it at the next token
            criteria.append(_until_asked(interrupt))
        if criteria:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        processors = []
        if self.repetition_penalty != 1.0 and prompt_len is not None:
            # Small models loop ("the tower the tower ...") without it. transformers' own penalty also
            # hits the prompt's tokens, which stops the model copying names from its sources.
            processors.append(_penalty_after(prompt_len, self.repetition_penalty))
        schema = overrides.get("response_schema", self.response_schema)
        if schema is not None and prompt_len is not None:  # JSON that validates (rag.llm.structured)
            processors.append(json_rows(self.json_constraint(schema), prompt_len))
        if processors:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList(processors)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def json_constraint(self, schema: dict[str, Any]) -> JsonConstraint:
        """A reply's constraint to JSON that validates against `schema` (rag.llm.structured)."""
        vocab = int(self.hf_model.get_output_embeddings().weight.shape[0])
        return JsonConstraint(schema, self.tokenizer, self._eos_ids(), vocab)

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
        interrupt = Interrupt.current()
        with torch.inference_mode():
            out = self.hf_model.generate(
                **enc, **self._gen_kwargs(enc["input_ids"].shape[1], stop, interrupt=interrupt, **overrides)
            )
        if interrupt is not None:
            interrupt.raise_if_asked()
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

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Token-by-token text from a TextIteratorStreamer fed by `generate` in a thread; with tools
        bound, the whole reply as one chunk (a tool call is only known once its block is closed)."""
        if kwargs.get("tools"):
            yield self._whole_reply(messages, stop, run_manager, **kwargs)
            return
        for piece in self.stream_text(self._prompt_text(messages), stop, **kwargs):
            yield self._chunk(piece, run_manager)

    def stream_text(self, prompt: str, stop: list[str] | None = None, **kwargs: Any) -> Iterator[str]:
        """The reply to `prompt` as written (no chat template), token by token, cut at a stop string."""
        import torch
        from transformers import TextIteratorStreamer

        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        enc = enc.to(self.hf_model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []
        interrupt = Interrupt.current()  # taken here: `generate` runs in a thread of its own

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.hf_model.generate(
                        **enc,
                        **self._gen_kwargs(enc["input_ids"].shape[1], stop, interrupt=interrupt, **kwargs),
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
                cut = cut_at_stop(emitted + piece, stop)
                if len(cut) < len(emitted) + len(piece):
                    piece = cut[len(emitted) :]
                    if piece:
                        yield piece
                    break
            emitted += piece
            yield piece
        thread.join()
        if failure:
            raise failure[0]
        if interrupt is not None:
            interrupt.raise_if_asked()

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
        if kwargs.get("tools"):  # tool replies are parsed one by one
            return [
                cast(AIMessage, self.invoke(x, config if isinstance(config, dict) else None, **kwargs))
                for x in inputs
            ]
        prompts = [self._prompt_text(self._convert_input(x).to_messages()) for x in inputs]
        stop = kwargs.pop("stop", None)
        try:
            texts = self.generate_many(prompts, stop=stop, **kwargs)
        except Exception as error:
            if not return_exceptions:
                raise
            return [error for _ in inputs]  # type: ignore[misc]
        return [AIMessage(content=cut_at_stop(t, stop)) for t in texts]

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
    from transformers import StoppingCriteria

    class StopAtText(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [any(s in text for s in stop) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopAtText()


def _until_asked(interrupt: Interrupt) -> Any:
    """End every row once a stop is asked (checked after each token; the caller raises Stopped)."""
    import torch
    from transformers import StoppingCriteria

    class UntilAsked(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), interrupt.asked(), dtype=torch.bool, device=input_ids.device
            )

    return UntilAsked()


def _penalty_after(prompt_len: int, penalty: float) -> Any:
    """A repetition penalty on the tokens generated so far only, not on the prompt's (the sources)."""
    import torch
    from transformers import LogitsProcessor

    class GeneratedRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            generated = input_ids[:, prompt_len:]
            if generated.shape[1] == 0:
                return scores
            picked = torch.gather(scores, 1, generated)
            picked = torch.where(picked < 0, picked * penalty, picked / penalty)
            return scores.scatter(1, generated, picked)  # type: ignore[return-value]

    return GeneratedRepetitionPenalty()


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


CPU_WINDOW = 4096
"""The window a local model gets on a CPU unless llm.context_window says otherwise: Qwen's native 32k
would let one prompt take minutes to prefill on two cores (a pasted 100k-character question was still
prefilling after 5 minutes); 4096 tokens hold the QA prompt many times over and a summary's batches."""


def context_window_for(native: int, device: str, configured: int | None) -> int:
    """The context window to use: the configured one, else the model's own, capped at CPU_WINDOW on a
    CPU (prefill time grows with the prompt; a GPU does not need the cap)."""
    if configured:
        return configured
    return native if device == "cuda" else min(native, CPU_WINDOW)


def build_local(settings: LLMSettings, models_dir: Path) -> LocalChatModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lectern.ingest.hf_logging import quiet

    quiet()  # no "Loading weights" bar on stderr
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
            tok = load_tokenizer(source, gguf)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, **load)
            tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as error:
        raise ModelNotFound(
            settings.model, f"not a folder, .gguf, packaged model or cached hub id ({error})"
        ) from error
    if device != "cuda":
        model = cast(Any, model).to(device)
    if settings.adapter:
        from lectern.rag.llm.adapters import attach

        model = attach(model, settings.adapter, name, merge=settings.merge_adapter)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    native = int(getattr(model.config, "max_position_embeddings", 2048))
    window = context_window_for(native, device, settings.context_window)
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
