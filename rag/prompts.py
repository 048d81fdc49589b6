"""Prompt templates as named constants, with roles; tests/rag/test_prompts.py snapshots every one.

Variables: QA prompts take {sources} and {question}; CONDENSE_QUESTION takes {history} and
{question}; the summary prompts take {text} (and REFINE_STEP also {summary}).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from langchain_core.prompts import ChatPromptTemplate

from lectern.errors import UnknownKey
from lectern.rag.types import Context

NO_ANSWER = "The documents do not contain the answer."
_HOW_MUCH = re.compile(r"how (?:many|much|long|old|far|big|large|tall|high|often)\b")

# Tuned on 30 CMU S08 questions with Qwen2.5-Coder-0.5B (docs/ANSWERS.md): the earlier wording ("reply
# with exactly: ..." as the last rule, "answer in full sentences") made it abstain on 57% of the
# questions whose answer was in the sources; this one on 33%, finding the gold answer 43% of the time
# instead of 30%, while still abstaining on 57% of the questions whose article was hidden.
_QA_RULES = (
    "You answer questions from the numbered sources you are given, not from memory. Answer in one or "
    "two sentences using the words of the source, and put the source number in square brackets after "
    "each sentence, like [2]. Only if none of the sources answers the question, reply: "
    f"{NO_ANSWER}"
)

_QA_USER = "Sources:\n\n{sources}\n\nQuestion: {question}"
_QA_ASK = "\n\nAnswer in one or two sentences, citing the source numbers like [1]."

QA_ZERO_SHOT = ChatPromptTemplate.from_messages([("system", _QA_RULES), ("human", _QA_USER + _QA_ASK)])

_EXAMPLE_SOURCES = (
    "[1] (manual.pdf p.2) The pump must be serviced every 500 hours of operation.\n\n"
    "[2] (faq.md) Replacement filters are sold in packs of three."
)

QA_FEW_SHOT = ChatPromptTemplate.from_messages(
    [
        ("system", _QA_RULES),
        (
            "human",
            f"Sources:\n\n{_EXAMPLE_SOURCES}\n\nQuestion: How often is the pump serviced?" + _QA_ASK,
        ),
        ("ai", "The pump is serviced every 500 hours of operation [1]."),
        (
            "human",
            f"Sources:\n\n{_EXAMPLE_SOURCES}\n\nQuestion: Who manufactures the pump?" + _QA_ASK,
        ),
        ("ai", NO_ANSWER),
        ("human", _QA_USER + _QA_ASK),
    ]
)

QA_CHAIN_OF_THOUGHT = ChatPromptTemplate.from_messages(
    [
        ("system", _QA_RULES),
        (
            "human",
            _QA_USER
            + "\n\nFirst write 'Reasoning:' and think step by step about which sources are relevant. "
            "Then write 'Answer:' followed by the final answer with citations.",
        ),
    ]
)

QA_JSON = ChatPromptTemplate.from_messages(
    [
        ("system", _QA_RULES),
        (
            "human",
            _QA_USER + "\n\nReply with only a JSON object of the form "
            '{{"answer": "<the answer, with [n] citations>", "citations": [<source numbers>]}}. '
            f'If the sources do not contain the answer, use "{NO_ANSWER}" as the answer and an empty list.',
        ),
    ]
)

# The default since docs/ANSWERS.md's fourth run. Abstention is decided first by the evidence in the
# sources (rag.evidence), so the model is not offered a way out it would take on answerable
# questions; it is asked for one short sentence in the source's words (short to prefill and to
# write on a CPU), and lectern finds the sentence's source itself (rag.citations) when it cites none.
_CONCISE_RULES = (
    "Answer the question using only the numbered sources. Reply with one short sentence that uses "
    "the words of the source."
)
QA_CONCISE = ChatPromptTemplate.from_messages([("system", _CONCISE_RULES), ("human", _QA_USER)])

# The concise prompt with one worked exchange before the question, as earlier chat turns: sources
# holding two numbers and a date, of which the answer takes the one the question asks about.
_CONCISE_EXAMPLE_SOURCES = (
    "[1] (pump.pdf p.4: The pump) The pump was installed in 1998. It must be serviced every 500 hours "
    "of operation.\n\n"
    "[2] (filters.md: Filters) Replacement filters are sold in packs of three."
)
QA_CONCISE_EXAMPLE = ChatPromptTemplate.from_messages(
    [
        ("system", _CONCISE_RULES),
        (
            "human",
            f"Sources:\n\n{_CONCISE_EXAMPLE_SOURCES}\n\nQuestion: How often must the pump be serviced?",
        ),
        ("ai", "The pump must be serviced every 500 hours of operation. [1]"),
        ("human", _QA_USER),
    ]
)
CONCISE_VARIANTS = ("concise", "concise_example")
CONCISE_STOP = ("\n\n",)  # one sentence is asked for: a blank line means the model rambles on


# The retry when a concise answer fails the check (rag.verify): the exact words of a source, which
# lectern then finds in the sources itself. As the only prompt it does worse (17 of 57 answered S08
# questions right against 26 for the concise one); as the second try it replaces an answer that
# would be wrong anyway.
QA_EXTRACT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Find the answer to the question in the numbered sources. Reply with only the exact words "
            "from a source that answer it (a name, a date, a number or a short phrase).",
        ),
        ("human", _QA_USER),
    ]
)
EXTRACT_TOKENS = 32


def answer_budget(question: str) -> int:
    """New tokens a concise answer may take: a name, date or number needs few; a why or how more."""
    first = question.strip().lower().split(maxsplit=1)[:1]
    return (
        96
        if first
        and first[0] in ("why", "how", "describe", "explain")
        and not _HOW_MUCH.match(question.strip().lower())
        else 48
    )


QA_PROMPTS: dict[str, ChatPromptTemplate] = {
    "concise": QA_CONCISE,
    "concise_example": QA_CONCISE_EXAMPLE,
    "zero_shot": QA_ZERO_SHOT,
    "few_shot": QA_FEW_SHOT,
    "chain_of_thought": QA_CHAIN_OF_THOUGHT,
}

CONDENSE_QUESTION = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Rewrite the user's follow-up question as a standalone question that can be understood "
            "without the conversation. Keep names and details from the conversation that the question "
            "refers to. Reply with the question only; do not answer it.",
        ),
        ("human", "Conversation:\n{history}\n\nFollow-up question: {question}\n\nStandalone question:"),
    ]
)

_SUMMARY_SYSTEM = "You condense text faithfully and concisely. Use only the given text; do not add facts."

SUMMARIZE_STUFF = ChatPromptTemplate.from_messages(
    [("system", _SUMMARY_SYSTEM), ("human", "Summarize the following text.\n\n{text}\n\nSummary:")]
)

SUMMARIZE_MAP = ChatPromptTemplate.from_messages(
    [
        ("system", _SUMMARY_SYSTEM),
        ("human", "Summarize this part of a longer document, keeping its key facts.\n\n{text}\n\nSummary:"),
    ]
)

# Also used to collapse partial summaries that do not yet fit together.
SUMMARIZE_REDUCE = ChatPromptTemplate.from_messages(
    [
        ("system", _SUMMARY_SYSTEM),
        (
            "human",
            "These are summaries of consecutive parts of one text. Combine them into a single "
            "summary, removing repetition.\n\n{text}\n\nSummary:",
        ),
    ]
)

REFINE_INITIAL = ChatPromptTemplate.from_messages(
    [
        ("system", _SUMMARY_SYSTEM),
        ("human", "Summarize the beginning of a longer text.\n\n{text}\n\nSummary:"),
    ]
)

REFINE_STEP = ChatPromptTemplate.from_messages(
    [
        ("system", _SUMMARY_SYSTEM),
        (
            "human",
            "Here is a summary of a text so far:\n{summary}\n\nHere is the next part of the text:\n{text}\n\n"
            "Rewrite the summary so that it also covers the new part. If the new part adds nothing, "
            "repeat the summary unchanged.\n\nSummary:",
        ),
    ]
)

ALL_PROMPTS: dict[str, ChatPromptTemplate] = {
    "qa_concise": QA_CONCISE,
    "qa_concise_example": QA_CONCISE_EXAMPLE,
    "qa_extract": QA_EXTRACT,
    "qa_zero_shot": QA_ZERO_SHOT,
    "qa_few_shot": QA_FEW_SHOT,
    "qa_chain_of_thought": QA_CHAIN_OF_THOUGHT,
    "qa_json": QA_JSON,
    "condense_question": CONDENSE_QUESTION,
    "summarize_stuff": SUMMARIZE_STUFF,
    "summarize_map": SUMMARIZE_MAP,
    "summarize_reduce": SUMMARIZE_REDUCE,
    "refine_initial": REFINE_INITIAL,
    "refine_step": REFINE_STEP,
}


def qa_prompt(variant: str, *, structured: bool = False) -> ChatPromptTemplate:
    """The QA template for a variant (concise, zero_shot, few_shot, chain_of_thought); JSON when
    structured."""
    if variant not in QA_PROMPTS:
        raise UnknownKey("QA prompt variant", variant, list(QA_PROMPTS))
    return QA_JSON if structured else QA_PROMPTS[variant]


def format_source(context: Context) -> str:
    """`[1] (file p.3: title) text`: the form sources take in every QA prompt. The title tells a
    small model whom "he" or "it" in an excerpt refers to."""
    title = context.title.strip()
    label = f"{context.label}: {title}" if title and title != Path(context.source).name else context.label
    return f"[{context.number}] ({label}) {context.text}"


SOURCE_SEPARATOR = "\n\n"


def format_sources(contexts: Sequence[Context]) -> str:
    return SOURCE_SEPARATOR.join(format_source(c) for c in contexts)


AGENT_SYSTEM = (
    """You answer questions about the user's documents using tools.
Call tools to find the facts: list_documents to see what there is, search for passages, read for a
page, summarize for an overview. Passages come numbered [1], [2]...
When you know the answer, reply without a tool call: a short answer that cites the passages it
uses as [n]. If the passages do not hold the answer, say: """
    + NO_ANSWER
    + """
"""
)

AGENT_PLAN = """Which searches would find the facts this question needs? Write one short search per line, one for each person, place or thing the question asks about, at most three. Write only the searches.

Question: {question}"""

AGENT_FINAL = (
    "Answer the question now from the passages above, citing them as [n], without calling a tool. "
    "If they do not hold the answer, say: " + NO_ANSWER
)
