"""Ask: a conversation over the collection, answers streamed with numbered, clickable citations.

The conversation id lives in the URL (?conversation=...), and its turns in the ChatSession's store,
so a reload shows the same conversation; follow-ups are rewritten by ChatSession with the history.
"""

from __future__ import annotations

import streamlit as st

from lectern.app import components, resources
from lectern.rag.chat import ConversationStore, Turn
from lectern.rag.qa import grounding_note
from lectern.rag.types import final_answer

ws = resources.workspace()
conversation = resources.sticky("conversation", resources.new_conversation_id())

top, mode, new = st.columns([5, 1, 1], vertical_alignment="bottom")
top.header(f"Ask · {ws.name}")
use_agent = mode.toggle("Agent", help="Let the model search, read and summarize in several steps.")
if new.button("New conversation"):
    resources.set_sticky("conversation", resources.new_conversation_id())
    st.rerun()

turns: list[Turn] = []
with components.shown_errors():
    turns = ConversationStore.for_data_dir(ws.settings.data_dir).load(conversation).turns

if not turns:
    st.caption("Ask a question about the documents in this collection; answers cite their sources.")
for turn in turns:
    with st.chat_message(turn.role):
        st.markdown(turn.content)
        if turn.role == "assistant":
            components.citations(turn.citations)

ready = ws.exists
if not ready:
    st.info("This collection has no documents yet: add some in the Library first.")
question = st.chat_input("Ask a question", disabled=not ready)
if question:
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"), components.shown_errors():
        resources.embedder(ws)
        resources.llm(ws)
        if use_agent:  # one question, not a turn of the conversation (the agent keeps no history)
            with st.spinner("The agent is working…"):
                result = ws.agent(llm=resources.llm(ws)).invoke(ws.check_question(question))
            for step in result.steps:
                if step.kind == "tool":
                    args = ", ".join(f"{k}={v!r}" for k, v in step.arguments.items())
                    with st.expander(f"Step {step.number}: {step.tool}({args})"):
                        st.caption(
                            f"{step.result_chars} characters, passages {step.chunks or 'none'}, "
                            f"{step.seconds:.2f}s" + (f"; error: {step.error}" if step.error else "")
                        )
            st.caption(f"{len(result.steps)} steps, {result.tokens} tokens, stopped by {result.stopped_by}")
            st.markdown(result.answer.answer)
            components.citations(result.answer.citations, result.answer.contexts)
            note = grounding_note(result.answer)
            if note:
                st.warning(note)
            st.stop()
        session = ws.chat_session()
        box = st.empty()
        box.markdown("_Searching the documents…_")
        written: list[str] = []

        def show(text: str) -> None:
            written.append(text)
            box.markdown("".join(written) + " ▌")

        answer = final_answer(session.stream_ask(conversation, question), show)
        box.markdown(answer.answer)
        if answer.rewritten_question:
            st.caption(f"Searched for: {answer.rewritten_question}")
        if answer.retried:
            again = "a second try failed too" if answer.abstained else "this is from the sources' own words"
            st.caption(f"The model's first answer {answer.retried}; {again}.")
        components.citations(answer.citations, answer.contexts)
        note = grounding_note(answer)
        if note:
            st.warning(note)
