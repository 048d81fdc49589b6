"""`lectern tune`: train a LoRA adapter on question/answer(/sources) pairs, in the QA prompt the chain
uses (prompts.QA_CONCISE with sources formatted as `[1] (label) text`), with the loss on the answer
tokens only, so the adapter learns the answer format and the citation habit, not the sources.

One example per step (no padding), AdamW, a small rank on the attention projections: SmolLM2 on two
CPU cores takes seconds per step. The folder written is peft's adapter plus lectern_adapter.json,
the identity of the base it was trained on (rag.llm.adapters checks it at load).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lectern.errors import InvalidInput
from lectern.ingest.atomic import atomic_folder
from lectern.rag.llm.adapters import CONFIG, IDENTITY, base_identity
from lectern.rag.llm.base import to_chat_dicts
from lectern.rag.prompts import QA_CONCISE, format_sources
from lectern.rag.settings import LLMSettings
from lectern.rag.types import Context

DEFAULT_TARGETS = ("q_proj", "v_proj")


@dataclass
class Pair:
    """One training example: a question, the answer wanted, and the sources shown with it."""

    question: str
    answer: str
    sources: list[Context] = field(default_factory=list)


@dataclass
class TuneReport:
    out: str
    base: str
    examples: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


def read_pairs(path: Path) -> list[Pair]:
    """JSON lines of {"question", "answer", "sources"?: [text | {"source", "page"?, "text"}]} (or one
    "source"); a bad line is an InvalidInput naming its number."""
    pairs: list[Pair] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question, answer = str(row["question"]).strip(), str(row["answer"]).strip()
        except (ValueError, KeyError, TypeError) as error:
            where = f"{path} line {number}"
            raise InvalidInput(where, line[:80], f"not a question/answer object ({error})") from error
        if not question or not answer:
            raise InvalidInput(f"{path} line {number}", line[:80], "empty question or answer")
        given = row.get("sources", [row["source"]] if "source" in row else [])
        sources = [_context(i, s) for i, s in enumerate(given if isinstance(given, list) else [given], 1)]
        pairs.append(Pair(question, answer, sources))
    if not pairs:
        raise InvalidInput("--data", str(path), "no question/answer pairs")
    return pairs


def _context(number: int, source: Any) -> Context:
    if isinstance(source, dict):
        return Context(
            number=number,
            chunk_id="",
            source=str(source.get("source", "source")),
            page=source.get("page"),
            title=str(source.get("title", "")),
            text=str(source.get("text", "")),
        )
    return Context(number=number, chunk_id="", source=f"source {number}", text=str(source))


def encode_pair(llm: Any, pair: Pair) -> tuple[list[int], list[int]]:
    """(input ids, labels): the chat-templated QA prompt, then the answer and the template's end of
    turn; labels are -100 on the prompt, so only the answer is learned."""
    messages = QA_CONCISE.format_messages(sources=format_sources(pair.sources), question=pair.question)
    prompt = llm._prompt_text(messages)
    full = str(
        llm.tokenizer.apply_chat_template(
            [*to_chat_dicts(messages), {"role": "assistant", "content": pair.answer}], tokenize=False
        )
    )
    # the assistant turn as the template writes it; a template that rewrites earlier turns when an
    # answer follows falls back to the answer and the EOS token
    target = full[len(prompt) :] if full.startswith(prompt) else pair.answer + (llm.tokenizer.eos_token or "")
    prompt_ids = llm.tokenizer(prompt, add_special_tokens=False).input_ids
    target_ids = llm.tokenizer(target.rstrip("\n"), add_special_tokens=False).input_ids
    return list(prompt_ids) + list(target_ids), [-100] * len(prompt_ids) + list(target_ids)


def train_lora(
    llm: Any,
    pairs: Sequence[Pair],
    out: Path,
    *,
    steps: int = 60,
    rank: int = 8,
    alpha: int | None = None,
    learning_rate: float = 1e-3,
    targets: Sequence[str] = DEFAULT_TARGETS,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> TuneReport:
    """Train a LoRA on `llm` (a LocalChatModel loaded without an adapter; its weights get LoRA layers
    injected, so do not reuse it) for `steps` single-example steps and save it in `out`."""
    import torch
    from peft import LoraConfig, get_peft_model

    if not pairs:
        raise InvalidInput("pairs", 0, "no training examples")
    torch.manual_seed(seed)
    identity = base_identity(llm.hf_model, llm.model_name)  # before LoRA layers are injected
    encoded = [encode_pair(llm, p) for p in pairs]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        lora_dropout=0.0,
        target_modules=list(targets),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(llm.hf_model, config)
    # peft records the folder the weights came from (a converted cache); name the model as asked for
    model.peft_config["default"].base_model_name_or_path = llm.model_name
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for param in trainable:  # LoRA weights in fp32 even on a bf16 base: stable small updates
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    order = list(range(len(encoded)))
    rng = random.Random(seed)
    losses: list[float] = []
    started = time.perf_counter()
    device = llm.hf_model.device
    for step in range(steps):
        if step % len(order) == 0:
            rng.shuffle(order)
        ids, labels = encoded[order[step % len(order)]]
        batch = torch.tensor([ids], device=device)
        loss = model(input_ids=batch, labels=torch.tensor([labels], device=device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
    model.eval()
    _save(model, Path(out), {**identity, "examples": len(pairs), "steps": steps, "rank": rank})
    return TuneReport(
        out=str(out),
        base=llm.model_name,
        examples=len(pairs),
        steps=steps,
        seconds=time.perf_counter() - started,
        first_loss=losses[0],
        last_loss=sum(losses[-len(order) :]) / min(len(order), len(losses)),
    )


def _save(model: Any, out: Path, record: dict[str, Any]) -> None:
    """Write the adapter into `out` whole or not at all; an adapter already there is replaced, any
    other non-empty folder is refused."""
    old: Path | None = None
    if out.exists() and any(out.iterdir()):
        if not (out / CONFIG).is_file():
            raise InvalidInput("--out", str(out), "exists and is not an adapter folder")
        old = out.with_name(f".{out.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
    elif out.exists():
        out.rmdir()
    with atomic_folder(out, done=IDENTITY) as tmp:
        model.save_pretrained(str(tmp), save_embedding_layers=False)  # no hub lookup of the base
        (tmp / IDENTITY).write_text(json.dumps(record, indent=1), encoding="utf-8")
        if old is not None:
            out.rename(old)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_base(settings: LLMSettings, models_dir: Path) -> Any:
    """The base model `settings` name, loaded fresh (not from the shared cache: training changes it),
    fp32 on CPU and bf16 on a GPU, without any adapter."""
    import torch

    from lectern.rag.llm.local import build_local

    if settings.backend not in ("local", "auto"):
        raise InvalidInput("llm.backend", settings.backend, "only the local backend can be tuned")
    on_gpu = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
    dtype = settings.dtype if settings.dtype != "auto" else ("auto" if on_gpu else "float32")
    base = settings.model_copy(update={"adapter": None, "merge_adapter": False, "dtype": dtype})
    return build_local(base, Path(models_dir))


def tune(settings: LLMSettings, models_dir: Path, data: Path, out: Path, **options: Any) -> TuneReport:
    """Train an adapter on the pairs in `data` for the base model `settings` name (load_base)."""
    if settings.backend not in ("local", "auto"):
        raise InvalidInput("llm.backend", settings.backend, "only the local backend can be tuned")
    pairs = read_pairs(data)
    return train_lora(load_base(settings, models_dir), pairs, out, **options)
