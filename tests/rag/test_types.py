"""The answer-stream helpers the CLI, chat and the Ask page share: text chunks, then the Answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lectern.rag.types import Answer, answer_text, final_answer


def stream(*chunks: str) -> Iterator[str | Answer]:
    yield from chunks
    yield Answer(question="q", answer="".join(chunks).strip())


def test_final_answer_hands_each_chunk_on_in_order_and_returns_the_answer() -> None:
    seen: list[str] = []
    answer = final_answer(stream("Every ", "500 ", "hours [1]."), seen.append)
    assert seen == ["Every ", "500 ", "hours [1]."]
    assert answer.answer == "Every 500 hours [1]."
    assert final_answer(stream("quiet")).answer == "quiet"  # no callback: the chunks are just consumed


def test_answer_text_re_yields_the_chunks_and_returns_the_answer() -> None:
    def relay() -> Iterator[str]:
        answer = yield from answer_text(stream("a ", "b"))
        yield f"<{answer.answer}>"

    assert list(relay()) == ["a ", "b", "<a b>"]


def test_a_stream_without_an_answer_is_an_error_not_a_silent_none() -> None:
    with pytest.raises(RuntimeError, match="without an Answer"):
        final_answer(iter(["text only"]))
