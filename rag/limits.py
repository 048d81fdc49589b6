"""The limits on what a caller may ask for (how many chunks, how long a question), in one place.

The CLI, the Python API, the web UI and LangChain users of the retriever all pass through these
checks, so a bad value is one clear InvalidInput naming the field, never a TypeError deep inside or
a silent substitute (k=0 used to mean 5, k=-1 "all but the last").
"""

from __future__ import annotations

import numbers
from typing import Any

from lectern.errors import InvalidInput, TokenCountUnavailable

K_MAX = 100  # retrieval.k's ceiling: past it MMR and fusion cost more than any answer can use
CANDIDATES_MAX = 200  # what a reranker may ask the searcher for (retrieval.rerank_candidates)
QUESTION_TOKENS = 300  # answer.max_question_tokens's default: a question, not a document
CHARS_PER_TOKEN = 16  # no tokenizer makes a token longer: past this many characters, refuse uncounted


def check_count(value: Any, field: str, *, low: int = 1, high: int) -> int:
    """An int from `low` to `high` (bools and floats are refused, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(field, value, f"must be a whole number from {low} to {high}")
    if not low <= int(value) <= high:
        raise InvalidInput(field, value, f"must be from {low} to {high}")
    return int(value)


def check_k(k: Any, *, limit: int = K_MAX) -> int:
    """How many chunks to return: 1 to `limit` (retrieval.k's ceiling, 100)."""
    return check_count(k, "k", high=limit)


def check_page(value: Any, field: str) -> int | None:
    """A page filter: unset, or a page number from 1."""
    if value is None:
        return None
    return check_count(value, field, high=10**9)


def check_query(query: Any) -> str:
    """A search's query: text with something in it (an empty one returned arbitrary hits)."""
    if not isinstance(query, str):
        raise InvalidInput("query", query, "must be text")
    if not query.strip():
        raise InvalidInput("query", query, "it is empty: search for something")
    return query


def check_question(question: Any, llm: Any = None, max_tokens: int | None = None) -> str:
    """The question without surrounding space; refused when empty, or longer than `max_tokens` of
    `llm`'s tokenizer (answer.max_question_tokens): a long paste would take minutes to prefill."""
    if not isinstance(question, str):
        raise InvalidInput("question", question, "must be text")
    text = question.strip()
    if not text:
        raise InvalidInput("question", question, "it is empty: ask something")
    if max_tokens is None:
        return text
    advice = f"the limit is answer.max_question_tokens = {max_tokens}: shorten it or raise the setting"
    if len(text) > max_tokens * CHARS_PER_TOKEN:
        raise InvalidInput("question", text, f"{len(text)} characters, far too long ({advice})")
    if llm is not None:
        from lectern.rag.window import count_tokens

        try:
            tokens = count_tokens(llm, text)
        except TokenCountUnavailable:
            tokens = len(text) // 4  # no tokenizer: about four characters a token
        if tokens > max_tokens:
            raise InvalidInput("question", text, f"{tokens} tokens, too long ({advice})")
    return text
