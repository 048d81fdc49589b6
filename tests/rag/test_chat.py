"""Conversational QA: rewriting follow-ups, per-conversation persistence, safe ids, history trimming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lectern.errors import CorruptConversation, InvalidName, Stopped
from lectern.ingest import atomic
from lectern.rag.chat import ConversationStore, Turn, build_chat_chain, clean_rewrite
from lectern.rag.types import Answer
from tests.rag.test_qa import PLAIN
from tests.rag.test_window import ListRetriever, WindowFake, make_doc, words

DOCS = [make_doc(1, "The pump is serviced every 500 hours."), make_doc(2, "Filters come in threes.")]


def session(tmp_path: Path, script: list[str], window: int = 600) -> tuple:
    llm = WindowFake(context_window=window, script=list(script))
    retriever = ListRetriever(docs=list(DOCS))
    store = ConversationStore.for_data_dir(tmp_path)
    return build_chat_chain(llm, retriever, store, max_new_tokens=50, **PLAIN), llm, retriever


def test_first_question_is_not_rewritten_follow_up_is(tmp_path: Path) -> None:
    chat, llm, retriever = session(
        tmp_path,
        ["Every 500 hours [1].", "Standalone question: How often is the pump serviced?", "500 hours [1]."],
    )
    first = chat.ask("pump", "How often is the pump serviced?")
    assert first.rewritten_question is None and len(llm.prompts) == 1
    second = chat.ask("pump", "And how often again?")
    assert len(llm.prompts) == 3
    rewrite_prompt = llm.users[1]
    assert "User: How often is the pump serviced?" in rewrite_prompt
    assert "Assistant: Every 500 hours [1]." in rewrite_prompt
    assert "Follow-up question: And how often again?" in rewrite_prompt
    assert retriever.queries == ["How often is the pump serviced?", "How often is the pump serviced?"]
    assert second.question == "And how often again?"
    assert second.rewritten_question == "How often is the pump serviced?"
    assert [c.number for c in second.citations] == [1]


def test_history_persists_as_json_and_survives_a_new_session(tmp_path: Path) -> None:
    chat, _, _ = session(tmp_path, ["Every 500 hours [1]."])
    chat.ask("pump-1", "How often?")
    path = tmp_path / "conversations" / "pump-1.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["id"] == "pump-1"
    assert [t["role"] for t in data["turns"]] == ["user", "assistant"]
    assert data["turns"][1]["citations"][0]["chunk_id"] == "c1"
    assert list(path.parent.glob("*.tmp")) == []

    again, llm, _ = session(tmp_path, ["rewritten?", "ok [2]."])
    assert [t.content for t in again.history("pump-1")] == ["How often?", "Every 500 hours [1]."]
    again.ask("pump-1", "And filters?")
    assert len(again.history("pump-1")) == 4
    assert len(llm.prompts) == 2  # a rewrite happened: there was history


def test_two_sessions_on_one_conversation_both_keep_their_turns(tmp_path: Path) -> None:
    """A second session answers while the first is between loading the history and saving it (two
    browser tabs on one conversation): both exchanges are kept, none overwritten."""
    other, _, _ = session(tmp_path, ["Filters come in threes [2]."])

    class Interrupting(ListRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager):  # type: ignore[no-untyped-def]
            if not self.queries:
                other.ask("shared", "Filters?")
            return super()._get_relevant_documents(query, run_manager=run_manager)

    llm = WindowFake(context_window=600, script=["Every 500 hours [1]."])
    store = ConversationStore.for_data_dir(tmp_path)
    first = build_chat_chain(llm, Interrupting(docs=list(DOCS)), store, max_new_tokens=50, **PLAIN)
    first.ask("shared", "Pump?")
    contents = [t.content for t in store.load("shared").turns]
    # each question is kept as it is asked, and its answer put right after it
    assert contents == ["Pump?", "Every 500 hours [1].", "Filters?", "Filters come in threes [2]."]


def test_list_and_reset(tmp_path: Path) -> None:
    chat, _, _ = session(tmp_path, ["A [1].", "B [1]."])
    assert chat.list() == []
    chat.ask("b", "q1?")
    chat.ask("a", "q2?")
    assert chat.list() == ["a", "b"]
    assert chat.reset("a") is True and chat.reset("a") is False
    assert chat.list() == ["b"] and chat.history("a") == []


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", "a.b", "x" * 65, "..", "a b", "é"])
def test_ids_that_could_escape_are_rejected(tmp_path: Path, bad: str) -> None:
    chat, llm, _ = session(tmp_path, ["A [1]."])
    with pytest.raises(InvalidName):
        chat.ask(bad, "q?")
    with pytest.raises(InvalidName):
        chat.history(bad)
    assert llm.prompts == []
    assert not (tmp_path / "escape.json").exists()


def test_corrupt_file_is_a_typed_error(tmp_path: Path) -> None:
    store = ConversationStore.for_data_dir(tmp_path)
    store.directory.mkdir(parents=True)
    (store.directory / "x.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptConversation):
        store.load("x")


def test_long_history_is_trimmed_to_the_window_oldest_first(tmp_path: Path) -> None:
    llm_window = 300
    chat, llm, _ = session(tmp_path, [], window=llm_window)
    store = chat.store
    conversation = store.load("long")
    for i in range(10):
        conversation.turns.append(Turn(role="user", content=f"old{i} " + words(30, f"q{i}x")))
        conversation.turns.append(Turn(role="assistant", content=f"ans{i} " + words(30, f"a{i}x")))
    store.save(conversation)
    llm.script = ["What about it?", "Fine [1]."]
    chat.ask("long", "What about it?")  # WindowFake raises if any prompt overflows
    rewrite = llm.users[0]
    assert "ans9" in rewrite and "old0" not in rewrite
    assert rewrite.count(" …") == 1  # the oldest turn kept is cut short, and says so
    assert llm.get_num_tokens_from_messages(llm.prompts[0]) <= llm_window - chat.rewrite_max_new_tokens


def test_stream_ask_yields_text_then_answer_and_records_it(tmp_path: Path) -> None:
    chat, _, _ = session(tmp_path, ["Every 500 hours [1]."])
    parts = list(chat.stream_ask("s", "How often?"))
    assert "".join(p for p in parts[:-1] if isinstance(p, str)) == "Every 500 hours [1]."
    assert isinstance(parts[-1], Answer)
    assert [t.content for t in chat.history("s")] == ["How often?", "Every 500 hours [1]."]


def test_a_refused_rewrite_falls_back_to_the_question(tmp_path: Path) -> None:
    chat, _, retriever = session(tmp_path, ["A [1].", "I don't know based on the documents.", "B [2]."])
    chat.ask("r", "How often is the pump serviced?")
    answer = chat.ask("r", "And the filters?")
    assert retriever.queries[-1] == "And the filters?" and answer.rewritten_question is None


def test_clean_rewrite() -> None:
    assert clean_rewrite('Standalone question: "How often is it serviced?"\nBecause...') == (
        "How often is it serviced?"
    )
    assert clean_rewrite("   ") == ""


def test_a_conversation_is_saved_by_the_atomic_helper_with_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversation store had a hand-written temp-and-rename without fsync: it now uses ingest.atomic."""
    events: list[str] = []
    real_fsync, real_replace = atomic.os.fsync, atomic.os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (events.append(f"rename {Path(b).name}"), real_replace(a, b))[1]
    )
    store = ConversationStore.for_data_dir(tmp_path)
    store.append("c1", [Turn(role="user", content="hello")])
    assert events == ["fsync", "rename c1.json", "fsync"]
    assert (store.path("c1").stat().st_mode & 0o777) == 0o600


def test_the_question_is_kept_before_it_is_answered_and_a_failure_says_why(tmp_path: Path) -> None:
    """A reload mid-answer showed no question: it was stored only with its answer. It is now stored
    first; an answer that fails (or is stopped) leaves the question and the reason, not nothing."""
    store = ConversationStore.for_data_dir(tmp_path)
    seen: list[list[str]] = []

    class Watching(ListRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager):  # type: ignore[no-untyped-def]
            seen.append([t.content for t in store.load("c").turns])
            return super()._get_relevant_documents(query, run_manager=run_manager)

    script = ["Every 500 hours [1].", "Standalone question: Filters?", "Filters come in threes [2]."]
    llm = WindowFake(context_window=600, script=script)
    chat = build_chat_chain(llm, Watching(docs=list(DOCS)), store, max_new_tokens=50, **PLAIN)
    chat.ask("c", "Pump?")
    assert seen == [["Pump?"]]  # stored before the search for its answer began
    assert [t.content for t in store.load("c").turns] == ["Pump?", "Every 500 hours [1]."]

    stream = chat.stream_ask("c", "Filters?")
    with pytest.raises(Stopped):
        next(stream)  # the question is stored, the answer under way
        stream.throw(Stopped("the answer"))
    turns = store.load("c").turns
    assert [(t.role, t.content, t.error) for t in turns[2:]] == [
        ("user", "Filters?", None),
        ("assistant", "", "the answer was stopped"),
    ]
