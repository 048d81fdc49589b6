"""Summaries: the registry contract, map-reduce collapse and batching, refine order, progress, limits."""

from __future__ import annotations

import inspect
import re

import pytest
from langchain_core.documents import Document

from lectern.errors import ContextTooLong, UnknownKey
from lectern.rag.summarize import (
    SUMMARIZERS,
    NothingToSummarize,
    choose_method,
    map_reduce,
    pack_texts,
    refine,
    stuff,
    summarize,
)
from lectern.rag.types import SummaryResult
from tests.rag.test_window import WindowFake, make_doc, words

REDUCE_HEAD = "These are summaries"
REFINE_HEAD = "Here is a summary"


def chunks(n: int, size: int = 30) -> list[Document]:
    return [make_doc(i, f"chunk{i:02d} " + words(size - 1, f"c{i:02d}w")) for i in range(n)]


@pytest.mark.parametrize("method", sorted(SUMMARIZERS))
def test_every_summarizer_keeps_the_contract(method: str) -> None:
    summarizer = SUMMARIZERS[method]
    assert inspect.signature(summarizer) == inspect.signature(SUMMARIZERS["stuff"])
    llm = WindowFake(context_window=400)  # raises if any prompt + max_new_tokens overflow
    seen: list[tuple[int, int]] = []
    docs = chunks(4, 20)
    result = summarizer(llm, docs, max_new_tokens=40, progress=lambda d, t: seen.append((d, t)), scope="s")
    assert isinstance(result, SummaryResult)
    assert result.method == method and result.chunks == 4 and result.scope == "s"
    assert result.summary and result.steps == len(llm.prompts) >= 1
    assert seen[-1] == (result.steps, result.steps)
    forced = summarize(WindowFake(context_window=400), docs, method=method, max_new_tokens=40, token_max=30)
    assert forced.method == forced.requested == method


@pytest.mark.parametrize("method", ["refine", "map_reduce"])
def test_long_input_never_overflows(method: str) -> None:
    llm = WindowFake(context_window=150)
    docs = [*chunks(20, 40), make_doc(99, words(600, "huge"))]  # one chunk is four windows long
    result = SUMMARIZERS[method](llm, docs, max_new_tokens=30)
    assert result.steps == len(llm.prompts) > 21
    huge_seen = sum(u.count("huge") for u in llm.users)
    assert huge_seen >= 600  # the long chunk was split and every part was sent


def test_stuff_raises_when_the_text_does_not_fit() -> None:
    llm = WindowFake(context_window=150)
    with pytest.raises(ContextTooLong) as info:
        stuff(llm, chunks(10), max_new_tokens=30)
    assert info.value.field == "documents" and info.value.window == 150
    assert llm.prompts == []


def test_choose_method_and_auto() -> None:
    llm = WindowFake(context_window=300)
    assert choose_method(llm, chunks(2), max_new_tokens=30)[0] == "stuff"
    assert choose_method(llm, chunks(20), max_new_tokens=30)[0] == "map_reduce"
    assert summarize(llm, chunks(20), max_new_tokens=30).method == "map_reduce"
    assert summarize(llm, chunks(2), max_new_tokens=30).method == "stuff"


@pytest.mark.parametrize("method", ["refine", "map_reduce", "auto"])
def test_a_text_that_fits_the_window_is_one_call_whatever_was_asked(method: str) -> None:
    llm = WindowFake(context_window=400)
    result = summarize(llm, chunks(4, 20), method=method, max_new_tokens=40)
    asked = "auto" if method == "auto" else f"{method} asked"
    assert (result.method, result.requested, result.steps, len(llm.prompts)) == ("stuff", method, 1, 1)
    assert result.reason == f"stuff: the text fits the window in one call ({asked})"
    assert llm.users[0].startswith("Summarize the following text.")  # the stuff prompt was sent


def test_a_text_too_long_for_one_call_runs_the_method_asked_and_says_why() -> None:
    long = chunks(20, 40)
    refined = summarize(WindowFake(context_window=300), long, method="refine", max_new_tokens=30)
    assert refined.method == refined.requested == "refine" and refined.steps > 1
    assert refined.reason == "refine, as asked: the text does not fit the window in one call"
    auto = summarize(WindowFake(context_window=300), long, max_new_tokens=30)
    assert (auto.method, auto.requested) == ("map_reduce", "auto")
    assert auto.reason == "map_reduce: the text does not fit the window in one call (auto)"
    # a token_max below the text's length is the caller's limit on one call: the method asked runs
    small = summarize(
        WindowFake(context_window=400), chunks(4, 20), method="map_reduce", max_new_tokens=40, token_max=30
    )
    assert small.method == "map_reduce" and small.steps > 1
    assert (
        small.reason == "map_reduce, as asked: the text does not fit the window in one call of token_max 30"
    )
    asked = summarize(
        WindowFake(context_window=400), chunks(4, 20), method="stuff", max_new_tokens=40, token_max=30
    )
    assert (asked.method, asked.reason) == ("stuff", "stuff, as asked")


def test_unknown_method_and_empty_input() -> None:
    with pytest.raises(UnknownKey, match="map_reduce, refine, stuff"):
        summarize(WindowFake(), chunks(1), method="nope")
    with pytest.raises(NothingToSummarize):
        summarize(WindowFake(), [Document(page_content="  ")], method="refine")


def test_map_reduce_batches_the_map_and_collapses_more_than_once() -> None:
    llm = WindowFake(context_window=400, summary_words=10)
    seen: list[tuple[int, int]] = []
    result = map_reduce(
        llm,
        chunks(12),
        token_max=30,
        max_new_tokens=40,
        batch_size=5,
        progress=lambda d, t: seen.append((d, t)),
    )
    users = llm.users
    maps = [u for u in users if u.startswith("Summarize this part")]
    assert len(maps) == 12
    assert llm.batches[:3] == [5, 5, 2]  # the map step: one llm.batch call per group of 5
    # 12 summaries of 10 words > 30: groups of 3 -> 4 summaries (40 > 30) -> 2 (20 <= 30) -> reduce
    collapse_batches = llm.batches[3:]
    assert collapse_batches == [4, 2]
    reduces = [u for u in users if u.startswith(REDUCE_HEAD)]
    assert len(reduces) == 4 + 2 + 1
    assert all(llm.get_num_tokens(u.split("\n\n", 1)[1].rsplit("Summary:", 1)[0]) <= 30 for u in reduces)
    assert result.steps == 12 + 7 == len(users)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and all(d <= t for d, t in seen)
    assert seen[-1] == (19, 19)
    assert result.summary.startswith("chunk00")


def test_map_reduce_packs_chunks_up_to_token_max_and_skips_collapse_when_they_fit() -> None:
    llm = WindowFake(context_window=400, summary_words=5)
    result = map_reduce(llm, chunks(4), token_max=60, max_new_tokens=40, batch_size=8)
    assert llm.batches == [2]  # two pieces of two 30-word chunks each, one batch
    assert result.steps == 3 and llm.users[-1].startswith(REDUCE_HEAD)
    one = WindowFake(context_window=400, summary_words=5)
    single = map_reduce(one, chunks(2), max_new_tokens=40)
    assert single.steps == 1 and single.summary == "chunk00 c00w0 c00w1 c00w2 c00w3"  # no reduce of one


def test_refine_sees_the_chunks_in_document_order() -> None:
    so_far = "c00w0 c00w1 c00w2 c00w3"  # words of the first chunk: the passages read hold it
    llm = WindowFake(context_window=150, reply=lambda user: so_far)
    seen: list[tuple[int, int]] = []
    result = refine(llm, chunks(12), max_new_tokens=20, progress=lambda d, t: seen.append((d, t)))
    users = llm.users
    assert not users[0].startswith(REFINE_HEAD) and all(u.startswith(REFINE_HEAD) for u in users[1:])
    order = [int(m) for u in users for m in re.findall(r"chunk(\d\d)", u)]
    assert order == list(range(12))
    assert result.steps == len(users) > 2
    assert seen == [(i, result.steps) for i in range(0, result.steps + 1)]  # the total up front
    assert so_far in users[1] and result.withheld == []


def test_refine_keeps_the_running_summary_within_its_allowance() -> None:
    long = " ".join(["chunk00 " + words(29, "c00w")] * 7)  # 210 words, all the first chunk's
    llm = WindowFake(context_window=150, reply=lambda user: long)
    result = refine(llm, chunks(6), max_new_tokens=20)  # the fake's summaries are far too long
    assert result.steps == len(llm.prompts) >= 2 and result.withheld == []
    assert all(0 < u.count("c00w") <= 20 for u in llm.users[1:])


def test_pack_texts_groups_in_order_and_splits_a_text_longer_than_the_budget() -> None:
    llm = WindowFake()
    texts = [words(10, "a"), words(10, "b"), words(45, "c"), words(5, "d")]
    groups = pack_texts(llm, texts, 20)
    assert [[i for i, _ in g] for g in groups] == [[0, 1], [2], [2], [2, 3]]  # where each part comes from
    pieces = ["\n\n".join(part for _, part in g) for g in groups]
    assert [llm.get_num_tokens(p) for p in pieces] == [20, 20, 20, 10]
    assert pieces[0] == texts[0] + "\n\n" + texts[1]
    assert " ".join(" ".join(pieces).split()) == " ".join(texts)  # every word once, in order
    with pytest.raises(ContextTooLong):
        pack_texts(llm, texts, 10)  # under 16 tokens a piece: too small to summarize anything
