"""Conversational QA: follow-ups are rewritten into standalone questions, histories persist as JSON.

session = build_chat_chain(llm, retriever, ConversationStore.for_data_dir(settings.data_dir))
session.ask("pump", "How often is it serviced?")  # -> Answer
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from langchain_core.language_models import BaseChatModel
from langchain_core.retrievers import BaseRetriever
from pydantic import BaseModel, Field, ValidationError

from lectern.errors import CorruptConversation, InvalidName, LecternError
from lectern.ingest.atomic import atomic_write_text
from lectern.ingest.bm25_terms import fold
from lectern.rag.limits import check_question
from lectern.rag.prompts import CONDENSE_QUESTION, NO_ANSWER
from lectern.rag.qa import QAChain, build_qa_chain, question_of
from lectern.rag.types import Answer, Citation, answer_text, final_answer
from lectern.rag.window import ensure_fits, generation_kwargs, pack, prompt_tokens, trim_to_fit

CONVERSATIONS_DIR = "conversations"
_VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    citations: list[Citation] = Field(default_factory=list)
    rewritten_question: str | None = None  # on user turns: what was actually retrieved with
    error: str | None = None  # on assistant turns: why the question has no answer
    steps: list[str] = Field(default_factory=list)  # on an agent's answer: its steps, one line each


class Conversation(BaseModel):
    id: str
    created: str = ""
    updated: str = ""
    turns: list[Turn] = Field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_conversation_id(conversation_id: str) -> str:
    """Only [A-Za-z0-9_-]{1,64}: nothing that could leave the conversations folder."""
    if not isinstance(conversation_id, str) or not _VALID_ID.fullmatch(conversation_id):
        raise InvalidName(f"invalid conversation id {conversation_id!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return conversation_id


class ConversationStore:
    """One JSON file per conversation in `directory`, written by ingest.atomic (temp, fsync, rename).

    `append` re-reads the file under a lock, so two sessions on one conversation (two browser tabs, a
    tab and the CLI) both keep their turns instead of the last writer winning."""

    lock_timeout_s = 30.0

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def for_data_dir(cls, data_dir: str | Path) -> ConversationStore:
        return cls(Path(data_dir) / CONVERSATIONS_DIR)

    def path(self, conversation_id: str) -> Path:
        return self.directory / f"{check_conversation_id(conversation_id)}.json"

    def load(self, conversation_id: str) -> Conversation:
        """The stored conversation, or a new empty one."""
        path = self.path(conversation_id)
        if not path.is_file():
            return Conversation(id=conversation_id)
        try:
            return Conversation.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError) as err:
            raise CorruptConversation(path, str(err).splitlines()[0]) from err

    def save(self, conversation: Conversation) -> Path:
        path = self.path(conversation.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        conversation.updated = _now()
        conversation.created = conversation.created or conversation.updated
        data = json.dumps(conversation.model_dump(mode="json"), ensure_ascii=False, indent=1)
        atomic_write_text(path, data, perms=0o600)  # conversations stay private to their user
        return path

    def append(self, conversation_id: str, turns: list[Turn]) -> Conversation:
        """Add turns to the stored conversation (created if missing) and save it; returns it."""
        return self.update(conversation_id, lambda c: c.turns.extend(turns))

    def update(self, conversation_id: str, change: Callable[[Conversation], object]) -> Conversation:
        """Apply `change` to the stored conversation (created if missing) under its lock, and save it."""
        path = self.path(conversation_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.with_name(f".{conversation_id}.lock")), timeout=self.lock_timeout_s):
            conversation = self.load(conversation_id)
            change(conversation)
            self.save(conversation)
        return conversation

    @contextlib.contextmanager
    def asking(self, conversation_id: str, question: str) -> Iterator[Callable[[Turn, str | None], None]]:
        """Store the question now, before it is answered (a reload or a failure never loses it); the
        block calls `reply(turn, rewritten_question)` to put its answer right after it. A LecternError
        in the block (a stop too) stores why the question has no answer, and goes on."""
        at = len(self.append(conversation_id, [Turn(role="user", content=question)]).turns) - 1

        def reply(turn: Turn, rewritten: str | None = None) -> None:
            self.update(conversation_id, lambda c: answer_after(c, at, question, turn, rewritten))

        try:
            yield reply
        except LecternError as err:
            reply(Turn(role="assistant", content="", error=str(err)))
            raise

    def delete(self, conversation_id: str) -> bool:
        path = self.path(conversation_id)
        existed = path.is_file()
        path.unlink(missing_ok=True)
        return existed

    def list(self) -> list[str]:
        """Conversation ids, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if _VALID_ID.fullmatch(p.stem))


def answer_after(
    conversation: Conversation, at: int, question: str, reply: Turn, rewritten: str | None = None
) -> None:
    """Put `reply` right after its question, turn `at` (another session may have added turns since);
    the question and the reply both at the end if that turn is gone."""
    turns = conversation.turns
    if at < len(turns) and turns[at].role == "user" and turns[at].content == question:
        turns[at].rewritten_question = rewritten
        turns.insert(at + 1, reply)
    else:
        turns += [Turn(role="user", content=question, rewritten_question=rewritten), reply]


def answered(turns: list[Turn]) -> list[Turn]:
    """The questions with their answers: not one still being answered (another tab's), nor one that
    failed, which a rewrite must not take for history."""
    return [
        turn
        for i in range(len(turns) - 1)
        if turns[i].role == "user" and turns[i + 1].role == "assistant" and not turns[i + 1].error
        for turn in turns[i : i + 2]
    ]


def format_history(turns: list[Turn]) -> str:
    return "\n".join(f"{'User' if t.role == 'user' else 'Assistant'}: {t.content}" for t in turns)


class ChatSession:
    """Conversational QA over a retriever, with histories kept per conversation id in a store."""

    def __init__(
        self,
        llm: BaseChatModel,
        qa: QAChain,
        store: ConversationStore,
        *,
        rewrite_max_new_tokens: int = 64,
        max_question_tokens: int | None = None,
    ) -> None:
        self.llm = llm  # rewrites the follow-ups; `qa` answers them
        self.max_question_tokens = max_question_tokens  # answer.max_question_tokens (rag.limits)
        self.store = store
        self.rewrite_max_new_tokens = rewrite_max_new_tokens
        self.qa = qa

    def ask(self, conversation_id: str, question: str) -> Answer:
        """Answer a question in a conversation and record both turns."""
        return final_answer(self._run(conversation_id, question, stream=False))

    def stream_ask(self, conversation_id: str, question: str) -> Generator[str | Answer, None, None]:
        """Like ask, streaming: str chunks as the model writes, then the Answer (see QAChain.stream_answer)."""
        yield from self._run(conversation_id, question, stream=True)

    def history(self, conversation_id: str) -> list[Turn]:
        return self.store.load(conversation_id).turns

    def reset(self, conversation_id: str) -> bool:
        return self.store.delete(conversation_id)

    def condense(self, turns: list[Turn], question: str) -> str:
        """The follow-up rewritten as a standalone question; the question itself when there is no history."""
        history = self.fit_history(turns, question)
        if not history:
            return question
        messages = CONDENSE_QUESTION.format_messages(history=history, question=question)
        raw = self.llm.invoke(messages, **generation_kwargs(self.llm, self.rewrite_max_new_tokens)).text
        rewritten = clean_rewrite(raw)
        return question if not rewritten or is_refusal(rewritten) else rewritten

    def fit_history(self, turns: list[Turn], question: str) -> str:
        """The most recent turns that fit the window beside the rewrite prompt (oldest dropped first,
        the oldest one kept possibly cut short and marked with "…")."""
        llm = self.llm
        fixed = prompt_tokens(llm, CONDENSE_QUESTION, history="", question=question)
        budget = ensure_fits(llm, fixed, self.rewrite_max_new_tokens, field="question")

        def measure(newest_first: list[Turn]) -> int:
            history = format_history(newest_first[::-1])
            return prompt_tokens(llm, CONDENSE_QUESTION, history=history, question=question) - fixed

        def trim(turn: Turn, room: int) -> Turn | None:
            def cut(text: str) -> Turn:
                return turn.model_copy(update={"content": text + " …"})

            text = trim_to_fit(llm, turn.content, room, lambda t: format_history([cut(t)]))
            return None if text is None else cut(text)

        kept = pack(
            llm,
            turns[::-1],
            budget,
            render=lambda turn: format_history([turn]),
            separator="\n",
            trim=trim,
            measure=measure,
        )
        return format_history(kept[::-1])

    def _run(self, conversation_id: str, question: str, *, stream: bool) -> Iterator[str | Answer]:
        check_conversation_id(conversation_id)
        question = check_question(question_of(question), self.llm, self.max_question_tokens)
        history = answered(self.store.load(conversation_id).turns)
        with self.store.asking(conversation_id, question) as reply:
            standalone = self.condense(history, question)
            if stream:
                answer = yield from answer_text(self.qa.stream_answer(standalone))
            else:
                answer = self.qa.invoke(standalone)
            answer.question = question
            answer.rewritten_question = standalone if standalone != question else None
            reply(
                Turn(role="assistant", content=answer.answer, citations=answer.citations),
                answer.rewritten_question,
            )
        yield answer

    def list(self) -> list[str]:
        """The ids of the stored conversations."""
        return self.store.list()


def build_chat_chain(
    llm: BaseChatModel, retriever: BaseRetriever, store: ConversationStore, **options: Any
) -> ChatSession:
    """A ChatSession over a QA chain of `llm` and `retriever`; `options` are build_qa_chain's (k,
    variant, max_new_tokens...) and ChatSession's (rewrite_max_new_tokens, max_question_tokens)."""
    session = {k: options.pop(k) for k in ("rewrite_max_new_tokens", "max_question_tokens") if k in options}
    return ChatSession(llm, build_qa_chain(llm, retriever, **options), store, **session)


_REFUSALS = ("i don't know", "i do not know", "i'm sorry", "i am sorry", "sorry", NO_ANSWER.lower())


def is_refusal(text: str) -> bool:
    """A rewrite that refuses instead of rephrasing: the original question is used instead."""
    return fold(text).startswith(_REFUSALS)


def clean_rewrite(raw: str) -> str:
    """The model's rewrite without labels, quotes or anything after the first line."""
    text = raw.strip()
    text = re.sub(r"(?i)^\s*(standalone question|question)\s*:\s*", "", text)
    text = text.splitlines()[0].strip() if text else ""
    return text.strip("\"'` ").strip()
