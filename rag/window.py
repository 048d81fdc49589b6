"""Context-window fitting: count tokens with the model's own counter and keep every prompt inside the window.

One packer (`pack`: the leading items that fit a budget, the next one trimmed) and one overflow check
(`ensure_fits`) serve the QA sources, the summary pieces and the chat history alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate

from lectern.errors import ContextTooLong, TokenCountUnavailable
from lectern.rag.prompts import SOURCE_SEPARATOR, format_source
from lectern.rag.types import Context

__all__ = [
    "ContextTooLong",
    "TokenCountUnavailable",
    "context_window",
    "count_messages",
    "count_tokens",
    "ensure_fits",
    "fit_contexts",
    "fit_documents",
    "generation_kwargs",
    "pack",
    "prompt_tokens",
    "split_to_tokens",
    "tokens_left",
    "trim_to_fit",
    "trim_to_tokens",
]

DEFAULT_CONTEXT_WINDOW = 2048
MESSAGE_OVERHEAD = 4  # chat-template role markers per message, beyond the "Role: " prefix counted
MIN_TRIMMED_TOKENS = 8  # a trimmed source shorter than this is dropped instead
MAX_CHARS_PER_TOKEN = 32  # bounds the binary search: no prefix of more than this per token is tried
SHRINK_ROUNDS = 5  # pack: tries at a smaller budget before dropping items from the end

T = TypeVar("T")


def context_window(llm: Any) -> int:
    """The model's context window in tokens (`llm.context_window`, else 2048)."""
    window = getattr(llm, "context_window", None)
    return int(window) if window else DEFAULT_CONTEXT_WINDOW


def generation_kwargs(llm: Any, max_new_tokens: int) -> dict[str, Any]:
    """`max_new_tokens=` for lectern's backends (they accept it per call), nothing for other models."""
    return {"max_new_tokens": max_new_tokens} if hasattr(llm, "max_new_tokens") else {}


def count_tokens(llm: BaseChatModel, text: str) -> int:
    """Tokens of `text` by the model's counter; refuses a counter that says 0 for real text."""
    if not text:
        return 0
    n = llm.get_num_tokens(text)
    if n == 0 and text.strip():
        raise TokenCountUnavailable(type(llm).__name__)
    return n


def count_messages(llm: BaseChatModel, messages: Sequence[BaseMessage]) -> int:
    """Tokens of a chat prompt, with a small per-message allowance for the chat template."""
    n = llm.get_num_tokens_from_messages(list(messages))
    if n == 0 and any(str(m.content).strip() for m in messages):
        raise TokenCountUnavailable(type(llm).__name__)
    return n + MESSAGE_OVERHEAD * len(messages)


def prompt_tokens(llm: BaseChatModel, template: ChatPromptTemplate, **variables: Any) -> int:
    return count_messages(llm, template.format_messages(**variables))


def _largest_prefix(text: str, fits: Callable[[str], bool]) -> str:
    """The longest prefix of `text` that `fits`, cut back to a word boundary when one is near."""
    if fits(text):
        return text
    lo, hi = 0, len(text)  # fits(text[:lo]) holds, fits(text[:hi]) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(text[:mid]):
            lo = mid
        else:
            hi = mid
    prefix = text[:lo]
    space = max(prefix.rfind(" "), prefix.rfind("\n"))
    if space > len(prefix) // 2:
        prefix = prefix[:space]
    return prefix.rstrip()


def trim_to_tokens(llm: BaseChatModel, text: str, max_tokens: int) -> str:
    """The longest prefix of `text` (at a word boundary) that counts at most `max_tokens`."""
    if max_tokens <= 0:
        return ""
    return _largest_prefix(
        text[: max_tokens * MAX_CHARS_PER_TOKEN], lambda t: count_tokens(llm, t) <= max_tokens
    )


def split_to_tokens(llm: BaseChatModel, text: str, max_tokens: int) -> list[str]:
    """Cut `text` into consecutive pieces of at most `max_tokens` each (word boundaries when possible)."""
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        head = trim_to_tokens(llm, rest, max_tokens)
        if not head:  # a single unsplittable character over the limit: take it anyway
            head = rest[:1]
        pieces.append(head)
        rest = rest[len(head) :].strip()
    return pieces


def tokens_left(llm: Any, used: int, max_new_tokens: int) -> int:
    """Tokens of the window still free once a prompt of `used` tokens and `max_new_tokens` of output are in."""
    return context_window(llm) - max_new_tokens - used


def ensure_fits(llm: Any, used: int, max_new_tokens: int, field: str) -> int:
    """tokens_left, refusing a prompt that leaves no room for the output: ContextTooLong naming `field`."""
    left = tokens_left(llm, used, max_new_tokens)
    if left < 0:
        raise ContextTooLong(tokens=used + max_new_tokens, window=context_window(llm), field=field)
    return left


def trim_to_fit(llm: BaseChatModel, text: str, room: int, render: Callable[[str], str] = str) -> str | None:
    """The longest prefix of `text` whose render(prefix) counts at most `room` tokens, or None when
    too little of it would fit to be worth keeping (under MIN_TRIMMED_TOKENS of room)."""
    if room < MIN_TRIMMED_TOKENS:
        return None
    prefix = _largest_prefix(
        text[: room * MAX_CHARS_PER_TOKEN], lambda t: count_tokens(llm, render(t)) <= room
    )
    if not prefix or count_tokens(llm, prefix) < MIN_TRIMMED_TOKENS // 2:
        return None
    return prefix


def pack(
    llm: BaseChatModel,
    items: Sequence[T],
    budget: int,
    *,
    render: Callable[[T], str] = str,
    separator: str = "",
    trim: Callable[[T, int], T | None] | None = None,
    measure: Callable[[list[T]], int] | None = None,
) -> list[T]:
    """The leading `items` that fit `budget` tokens: each counted as render(item), with `separator`
    between two. The first that does not fit is passed to trim(item, room) with the tokens left and
    kept if trim returns one; the rest are dropped.

    `measure(kept)`, when given, counts what the kept items really take in the prompt: counts of parts
    need not add up to the count of the whole (a tokenizer merges across joins), so the budget
    shrinks by the excess until the whole fits, and as a last resort items are dropped from the end.
    """
    sep = count_tokens(llm, separator)
    room = budget
    kept: list[T] = []
    for _ in range(SHRINK_ROUNDS):
        kept = _greedy(llm, items, room, render, sep, trim)
        if measure is None:
            return kept
        excess = measure(kept) - budget
        if excess <= 0:
            return kept
        room -= max(excess, 1)
    while kept and measure is not None and measure(kept) > budget:
        kept.pop()
    return kept


def _greedy(
    llm: BaseChatModel,
    items: Sequence[T],
    budget: int,
    render: Callable[[T], str],
    sep: int,
    trim: Callable[[T, int], T | None] | None,
) -> list[T]:
    kept: list[T] = []
    used = 0
    for item in items:
        gap = sep if kept else 0
        cost = count_tokens(llm, render(item)) + gap
        if used + cost <= budget:
            kept.append(item)
            used += cost
            continue
        if trim is not None and (cut := trim(item, budget - used - gap)) is not None:
            kept.append(cut)
        break
    return kept


def fit_contexts(
    llm: BaseChatModel,
    template: ChatPromptTemplate,
    question: str,
    contexts: Sequence[Context],
    *,
    max_new_tokens: int = 256,
    **variables: Any,
) -> list[Context]:
    """Keep whole sources in rank order while they fit, trim the next one to fit, drop the rest.

    The budget is the window minus the prompt without sources (template + question) minus
    `max_new_tokens` reserved for the answer. Raises ContextTooLong(field="question") when the
    question alone does not leave room for the answer.
    """
    fixed = prompt_tokens(llm, template, sources="", question=question, **variables)
    budget = ensure_fits(llm, fixed, max_new_tokens, field="question")

    def measure(kept: list[Context]) -> int:
        return prompt_tokens(llm, template, sources=_render(kept), question=question, **variables) - fixed

    def trim(ctx: Context, room: int) -> Context | None:
        text = trim_to_fit(llm, ctx.text, room, lambda t: format_source(ctx.model_copy(update={"text": t})))
        return None if text is None else ctx.model_copy(update={"text": text, "trimmed": True})

    return pack(
        llm, contexts, budget, render=format_source, separator=SOURCE_SEPARATOR, trim=trim, measure=measure
    )


def _render(contexts: Sequence[Context]) -> str:
    return SOURCE_SEPARATOR.join(format_source(c) for c in contexts)


def fit_documents(
    llm: BaseChatModel,
    template: ChatPromptTemplate,
    question: str,
    docs: Sequence[Document],
    *,
    max_new_tokens: int = 256,
    **variables: Any,
) -> list[Document]:
    """fit_contexts for Documents: the kept ones in rank order, the last possibly trimmed
    (`metadata["trimmed"] = True`)."""
    contexts = [Context.from_document(i, d) for i, d in enumerate(docs, start=1)]
    kept = fit_contexts(llm, template, question, contexts, max_new_tokens=max_new_tokens, **variables)
    out = []
    for ctx, doc in zip(kept, docs, strict=False):
        meta = dict(doc.metadata)
        if ctx.trimmed:
            meta["trimmed"] = True
        out.append(Document(page_content=ctx.text, metadata=meta))
    return out
