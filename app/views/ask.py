"""Ask: a conversation over the collection, answers streamed with numbered, clickable citations.

The conversation id lives in the URL (?conversation=...), and its turns in the ChatSession's store,
so a reload shows the same conversation; follow-ups are rewritten by ChatSession with the history.
An answer runs as a job of the server process (app.jobs), one at a time per conversation: the
question is stored before it is answered, and a reload or another page finds the answer still
being written.
"""

from __future__ import annotations

import streamlit as st

from lectern.app import components, resources
from lectern.app.jobs import JOBS, Job
from lectern.errors import Stopped
from lectern.rag.agent import Agent, AgentResult, Step
from lectern.rag.chat import ConversationStore, Turn
from lectern.rag.citations import without_markers
from lectern.rag.qa import grounding_note
from lectern.rag.types import Answer
from lectern.rag.verify import why_changed
from lectern.rag.workspace import Workspace

ws = resources.workspace()
conversation = resources.sticky("conversation", resources.new_conversation_id())
store = ConversationStore.for_data_dir(ws.settings.data_dir)

top, mode, new = st.columns([5, 1, 1], vertical_alignment="bottom")
top.header(f"Ask · {ws.name}")
use_agent = mode.toggle("Agent", help="Let the model search, read and summarize in several steps.")
if new.button("New conversation"):
    resources.set_sticky("conversation", resources.new_conversation_id())
    st.rerun()


def step_line(step: Step) -> str:
    """An agent's step in one line, numbered as the agent numbers them (from 1)."""
    took = f"{step.seconds:.2f} s" + (f"; error: {step.error}" if step.error else "")
    if step.kind == "model":
        return f"Step {step.number}: a model call ({step.tokens} tokens, {took})"
    args = ", ".join(f"{k}={v!r}" for k, v in step.arguments.items())
    found = f"passages {step.chunks}" if step.chunks else "no passages"
    return f"Step {step.number}: {step.tool}({args}): {found}, {took}"


def steps(lines: list[str]) -> None:
    with st.expander(f"The agent's {components.plural(len(lines), 'step')}"):
        for line in lines:
            st.caption(components.plain(line))


def answer_job(question: str, agent: bool, evidence: bool = True) -> bool:
    """Answer `question` in a job of the server process; False (and why, shown) when it cannot start:
    a second question while the first is answered waits for it instead of replacing it."""
    config, name, talk = ws.settings, ws.name, conversation

    def chat(job: Job) -> Answer:
        mine = Workspace(collection=name, settings=config)
        try:
            # "Ask anyway" overrules the checks that the documents are about the question's subject:
            # the gate's decline, and the withdrawal of an answer citing passages that do not name it
            session = mine.chat_session(**({} if evidence else {"evidence": False, "subject": False}))
            written: list[str] = []
            parts = session.stream_ask(talk, question)
            for part in parts:
                if isinstance(part, Answer):
                    return part
                written.append(part)
                try:
                    job.report("".join(written))
                except Stopped as stop:  # into the session, which stores why the question has no answer
                    parts.throw(stop)
            raise RuntimeError("the answer stream ended without an answer")
        finally:
            mine.close()

    def run_agent(job: Job) -> AgentResult:
        mine = Workspace(collection=name, settings=config)
        try:
            checked = mine.check_question(question)
            stopped: Stopped | None = None
            with store.asking(talk, checked) as reply:
                worker: Agent = mine.agent()
                job.report(worker)  # the page reads its steps as they are taken
                try:
                    result = worker.invoke(checked)
                except Stopped as stop:  # between steps or mid-generation: the steps done are kept
                    stopped = stop
                    lines = [step_line(s) for s in worker.steps]
                    reply(Turn(role="assistant", content="", error=str(stop), steps=lines), None)
                else:
                    lines = [step_line(s) for s in result.steps]
                    answer = result.answer
                    reply(
                        Turn(
                            role="assistant", content=answer.answer, citations=answer.citations, steps=lines
                        ),
                        None,
                    )
            if stopped is not None:
                raise stopped
            return result
        finally:
            mine.close()

    label = "The agent's answer to the previous question" if agent else "The answer to the previous question"
    with components.shown_errors() as outcome:
        JOBS.start("answer", talk, name, label, run_agent if agent else chat)
    return not outcome.failed


def answer_notes(answer: Answer, question: str) -> None:
    """What the stored turn does not keep: the search's rewrite, a retry, the passages (cited or
    given), how well the sources hold the answer, and an evidence gate's decline."""
    if answer.rewritten_question:
        st.caption(f"Searched for: {components.plain(answer.rewritten_question)}")
    why = why_changed(answer)
    if why:  # the model's words are shown nowhere else
        said = without_markers(answer.first_answer or "").strip()
        st.caption(f"The model's answer, “{components.plain(said)}”, {why}.")
    declined = answer.abstained_by == "evidence"
    if declined:
        st.info(
            "The model was not asked: the passages found do not seem to be about the question, so this "
            "answer was given without it (Settings: “Decline when the documents lack the question's "
            "subject”).",
            icon=":material/info:",
        )
        anyway = st.button("Ask anyway", help="Ask the model this once, with the passages below.")
        if anyway and answer_job(question, agent=False, evidence=False):
            st.rerun()
    components.citations(answer.citations, answer.contexts, asked=not declined)
    note = grounding_note(answer)
    if note:
        st.warning(note)


turns: list[Turn] = []
with components.shown_errors():
    turns = store.load(conversation).turns
job = JOBS.get("answer", conversation)
last = job.result if job is not None and not job.running else None
last_answer = last.answer if isinstance(last, AgentResult) else last

if not turns:
    st.caption("Ask a question about the documents in this collection; answers cite their sources.")
for i, turn in enumerate(turns):
    with st.chat_message(turn.role):
        if turn.role == "user":
            st.markdown(components.plain(turn.content))  # a pasted question is text, not Markdown
            continue
        if turn.steps:
            steps(turn.steps)
        if turn.error:
            st.error(turn.error, icon=":material/error:")
            continue
        st.markdown(turn.content)
        newest = i == len(turns) - 1
        if newest and isinstance(last_answer, Answer) and last_answer.answer == turn.content:
            answer_notes(last_answer, turns[i - 1].content)
        else:
            components.citations(turn.citations)

if job is not None and job.error and not (turns and turns[-1].error == job.error):
    st.error(job.error, icon=":material/error:")  # refused before the question was stored (too long…)


@st.fragment(run_every=1.0)
def answering(job: Job) -> None:
    """The answer being written, or the agent's steps so far, redrawn every second; the whole page
    runs again when the job ends (the answer is in the conversation by then)."""
    if not job.running:
        st.rerun()
    if isinstance(job.progress, str):
        st.markdown(job.progress + " ▌")
    elif isinstance(job.progress, Agent):
        for line in [step_line(s) for s in job.progress.steps]:
            st.caption(components.plain(line))
        at = f"The agent is at step {len(job.progress.steps) + 1}"
        st.caption(at + components.timing(job, 0))
    else:
        searching = "Searching the documents (a follow-up is first rewritten with the conversation)…"
        st.caption(searching + components.timing(job, 0))
    if st.button("Stop", key=f"stop-{job.id}", disabled=job.stopping, help="Stop at the next word or step."):
        job.stop()


if job is not None and job.running:
    with st.chat_message("assistant"):
        answering(job)

ready = ws.exists
if not ready:
    st.info("This collection has no documents yet: add some in the Library first.")
question = st.chat_input("Ask a question", disabled=not ready)
if question is not None:
    if not question.strip():
        st.warning("Type a question first: this one is blank.", icon=":material/edit:")
    elif answer_job(question, agent=use_agent):
        st.rerun()
