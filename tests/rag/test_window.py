"""Context-window fitting, plus the strict fake model and fixed retriever the chain tests share."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from pydantic import Field

from lectern.errors import ContextTooLong
from lectern.rag.fake import FakeChatModel
from lectern.rag.prompts import QA_ZERO_SHOT, format_sources
from lectern.rag.types import Context
from lectern.rag.window import (
    DEFAULT_CONTEXT_WINDOW,
    MIN_TRIMMED_TOKENS,
    TokenCountUnavailable,
    context_window,
    count_messages,
    count_tokens,
    ensure_fits,
    fit_contexts,
    fit_documents,
    pack,
    split_to_tokens,
    tokens_left,
    trim_to_fit,
    trim_to_tokens,
)


class WindowFake(BaseChatModel):
    """Counts whitespace words; raises if a prompt plus the asked max_new_tokens exceed its window.

    Replies: the next scripted one, else `reply(user_text)`, else for QA prompts "From the sources [1].",
    for other prompts the first `summary_words` words after the instruction line. Records every prompt.
    """

    context_window: int = 200
    max_new_tokens: int = 0  # present, so the chains pass max_new_tokens per call
    script: list[str] = Field(default_factory=list)
    reply: Callable[[str], str] | None = None
    summary_words: int = 10
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    batches: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "window-fake"

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return sum(len(m.text.split()) for m in messages)

    @property
    def users(self) -> list[str]:
        """The last user message of every prompt, in call order."""
        return [p[-1].text for p in self.prompts]

    def respond(self, messages: list[BaseMessage], max_new_tokens: int) -> str:
        used = self.get_num_tokens_from_messages(messages)
        if used + max_new_tokens > self.context_window:
            raise AssertionError(
                f"{used} prompt + {max_new_tokens} new tokens > window {self.context_window}"
            )
        self.prompts.append(list(messages))
        if self.script:
            return self.script.pop(0)
        user = messages[-1].text
        if self.reply is not None:
            return self.reply(user)
        if "Sources:" in user:
            return "From the sources [1]."
        body = user.partition("\n")[2].rsplit("Summary:", 1)[0]
        return " ".join(body.split()[: self.summary_words])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.respond(messages, int(kwargs.get("max_new_tokens", 0)))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        text = self.respond(messages, int(kwargs.get("max_new_tokens", 0)))
        for word in re.findall(r"\S+\s*", text):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))

    def batch(  # type: ignore[override]
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[AIMessage]:
        self.batches.append(len(inputs))
        reserve = int(kwargs.get("max_new_tokens", 0))
        return [
            AIMessage(content=self.respond(self._convert_input(x).to_messages(), reserve)) for x in inputs
        ]


class ListRetriever(BaseRetriever):
    """Returns fixed documents (in rank order) and records the queries it was asked."""

    docs: list[Document] = Field(default_factory=list)
    queries: list[str] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.queries.append(query)
        return list(self.docs)


def make_doc(i: int, text: str, score: float = 0.9, page: int | None = 1) -> Document:
    return Document(
        page_content=text,
        metadata={
            "chunk_id": f"c{i}",
            "source": f"/docs/file{i}.pdf",
            "page": page,
            "heading": None,
            "title": f"File {i}",
            "start": 0,
            "end": len(text),
            "score": score,
        },
    )


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def contexts(*sizes: int) -> list[Context]:
    return [Context.from_document(i, make_doc(i, words(n, f"s{i}x"))) for i, n in enumerate(sizes, start=1)]


class ZeroCounter(WindowFake):
    def get_num_tokens(self, text: str) -> int:
        return 0

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        return 0


def test_context_window_default_and_attribute() -> None:
    assert context_window(object()) == DEFAULT_CONTEXT_WINDOW == 2048
    assert context_window(WindowFake(context_window=123)) == 123


def test_a_counter_that_says_zero_is_refused() -> None:
    llm = ZeroCounter()
    assert count_tokens(llm, "") == 0
    with pytest.raises(TokenCountUnavailable, match="cannot count tokens"):
        count_tokens(llm, "some words")
    with pytest.raises(TokenCountUnavailable):
        count_messages(llm, QA_ZERO_SHOT.format_messages(sources="x", question="y"))


def test_everything_fits_nothing_changes() -> None:
    llm = WindowFake(context_window=500)
    given = contexts(10, 10, 10)
    kept = fit_contexts(llm, QA_ZERO_SHOT, "what?", given, max_new_tokens=50)
    assert kept == given
    assert not any(c.trimmed for c in kept)


def test_keeps_whole_sources_in_rank_order_trims_the_next_and_drops_the_rest() -> None:
    llm = WindowFake(context_window=300)
    given = contexts(60, 60, 60, 60, 60)
    kept = fit_contexts(llm, QA_ZERO_SHOT, "what is it?", given, max_new_tokens=50)
    assert [c.number for c in kept] == [1, 2, 3]
    assert kept[:2] == given[:2]
    last = kept[-1]
    assert last.trimmed and given[2].text.startswith(last.text) and len(last.text) < len(given[2].text)
    prompt = QA_ZERO_SHOT.format_messages(sources=format_sources(kept), question="what is it?")
    used = count_messages(llm, prompt)
    assert used <= 300 - 50
    assert used > 300 - 50 - 10  # the trimmed source filled the budget, not just a word of it


def test_fit_documents_marks_the_trimmed_one() -> None:
    llm = WindowFake(context_window=300)
    docs = [make_doc(i, words(100, f"d{i}x")) for i in range(1, 4)]
    kept = fit_documents(llm, QA_ZERO_SHOT, "q?", docs, max_new_tokens=50)
    assert len(kept) == 2
    assert kept[0].page_content == docs[0].page_content and "trimmed" not in kept[0].metadata
    assert kept[1].metadata["trimmed"] is True and kept[1].metadata["chunk_id"] == "c2"


def test_a_question_that_alone_overflows_raises() -> None:
    llm = WindowFake(context_window=100)
    with pytest.raises(ContextTooLong) as info:
        fit_contexts(llm, QA_ZERO_SHOT, words(200), contexts(5), max_new_tokens=20)
    assert info.value.field == "question" and info.value.window == 100 and info.value.tokens > 200


class CharCounting(WindowFake):
    counted_chars: int = 0

    def get_num_tokens(self, text: str) -> int:
        self.counted_chars += len(text)
        return len(text.split())


def test_splitting_a_huge_text_only_tokenizes_near_each_cut() -> None:
    llm = CharCounting()
    text = words(50_000)
    pieces = split_to_tokens(llm, text, 100)
    assert len(pieces) == 500 and " ".join(pieces) == text
    assert llm.counted_chars < 60 * len(text)  # not the whole remaining text at every probe


def test_trim_and_split_by_tokens() -> None:
    llm = WindowFake()
    text = words(95)
    head = trim_to_tokens(llm, text, 10)
    assert head == words(10)
    pieces = split_to_tokens(llm, text, 10)
    assert len(pieces) == 10
    assert all(count_tokens(llm, p) <= 10 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert trim_to_tokens(llm, text, 0) == ""


# --- the one packer and the one overflow check, shared by QA, summaries and chat history ---


def test_ensure_fits_returns_the_room_left_and_names_the_overflowing_field() -> None:
    llm = FakeChatModel(context_window=100)
    assert tokens_left(llm, 70, 20) == 10
    assert ensure_fits(llm, 80, 20, field="question") == 0
    assert tokens_left(llm, 81, 20) == -1
    with pytest.raises(ContextTooLong) as info:
        ensure_fits(llm, 81, 20, field="history")
    assert (info.value.tokens, info.value.window, info.value.field) == (101, 100, "history")


def test_pack_keeps_leading_items_and_counts_the_separator_between_them() -> None:
    llm = FakeChatModel()
    items = [words(3, "a"), words(3, "b"), words(3, "c")]
    assert pack(llm, items, 9) == items
    assert pack(llm, items, 8) == items[:2]  # no trim: the first that does not fit ends the pack
    # a separator of one token between two items: 3 + 1 + 3 fits 7, the third would need 11
    assert pack(llm, items, 10, separator=" | ") == items[:2]
    assert pack(llm, items, 11, separator=" | ") == items
    assert pack(llm, [words(5)], 4) == []


def test_pack_trims_the_first_item_that_does_not_fit_to_the_room_left() -> None:
    llm = FakeChatModel()
    rooms: list[int] = []

    def trim(item: str, room: int) -> str | None:
        rooms.append(room)
        return trim_to_fit(llm, item, room)

    items = [words(10, "a"), words(30, "b"), words(10, "c")]
    kept = pack(llm, items, 25, separator=" | ", trim=trim)
    assert rooms == [25 - 10 - 1]  # only the overflowing item, once, with the separator paid for
    assert kept == [items[0], words(14, "b")]
    assert pack(llm, items, 15, trim=trim) == [items[0]]  # 5 tokens left: too little to keep a piece


def test_pack_renders_items_to_count_them() -> None:
    llm = FakeChatModel()
    items = [1, 2, 3]
    assert pack(llm, items, 6, render=lambda n: words(n)) == [1, 2, 3]
    assert pack(llm, items, 5, render=lambda n: words(n)) == [1, 2]


def test_pack_shrinks_when_the_whole_counts_more_than_its_parts() -> None:
    llm = FakeChatModel()
    items = [words(4, t) for t in "abcdef"]
    calls: list[int] = []

    def measure(kept: list[str]) -> int:  # a tokenizer that adds a token at every join
        calls.append(len(kept))
        return sum(count_tokens(llm, k) for k in kept) + max(len(kept) - 1, 0)

    kept = pack(llm, items, 16, measure=measure)
    assert kept == items[:3] and measure(kept) <= 16
    assert calls[0] == 4  # the first pack (4 items, 19 tokens) was measured and shrunk


def test_pack_drops_from_the_end_when_shrinking_does_not_converge() -> None:
    llm = FakeChatModel()
    items = [words(2, t) for t in "abcd"]
    measured: list[int] = []

    def measure(kept: list[str]) -> int:  # one token over whenever two or more items are joined
        measured.append(len(kept))
        return 11 if len(kept) >= 2 else 2 * len(kept)

    assert pack(llm, items, 10, measure=measure) == items[:1]
    assert measured == [4, 4, 4, 3, 3, 3, 2, 1]  # five packs at budgets 10..6, then two drops


def test_trim_to_fit_counts_the_rendered_form_and_refuses_a_sliver() -> None:
    llm = FakeChatModel()
    text = words(50)
    assert trim_to_fit(llm, text, 12) == words(12)
    assert trim_to_fit(llm, text, 12, render=lambda t: f"label: {t} …") == words(10)
    assert trim_to_fit(llm, text, MIN_TRIMMED_TOKENS - 1) is None
    assert trim_to_fit(llm, text, 20, render=lambda t: words(17) + " " + t) is None  # 3 words left
