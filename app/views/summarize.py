"""Summarize: one document, the whole collection or a query's passages, by a chosen method."""

from __future__ import annotations

import streamlit as st

from lectern.app import components, resources
from lectern.app.jobs import JOBS, Job
from lectern.rag.faithful import note as faithful_note
from lectern.rag.types import SummaryResult
from lectern.rag.workspace import Workspace

METHODS = ["auto", "stuff", "refine", "map_reduce"]
SCOPES = ["A document", "The whole collection", "A query"]

ws = resources.workspace()
st.header(f"Summarize · {ws.name}")

docs = []
with components.shown_errors():
    docs = ws.documents()
if not docs:
    st.info("This collection has no documents yet: add some in the Library first.")
    st.stop()

scope = st.radio("What to summarize", SCOPES, horizontal=True)
source: str | None = None
query: str | None = None
if scope == "A document":
    source = st.selectbox(
        "Document", [d.source for d in docs], format_func=components.file_name, key="summary-source"
    )
elif scope == "A query":
    query = st.text_input("Query", placeholder="the passages about…").strip() or None
method = st.selectbox(
    "Method",
    METHODS,
    key="summary-method",
    help="stuff: all at once; refine: passage by passage; map_reduce: summaries of summaries; "
    "auto: map_reduce when the text is too long for one call. A text that fits the model's window "
    "is summarized in one call (stuff) whatever the method.",
)

job = JOBS.get("summary", ws.name)
running = job is not None and job.running
if st.button("Summarize", type="primary", disabled=(scope == "A query" and not query) or running):
    config, name = ws.settings, ws.name

    def work(job: Job) -> SummaryResult:
        mine = Workspace(collection=name, settings=config)  # opened and closed in the job's thread
        try:
            return mine.summarize(source=source, query=query, method=method, progress=job.report)
        finally:
            mine.close()

    with components.shown_errors() as outcome:
        JOBS.start("summary", name, name, f"The summary of {name}", work)
    if not outcome.failed:
        st.rerun()

if job is not None and job.running:
    components.follow(job, components.summary_status)
elif job is not None and job.error:
    st.error(job.error, icon=":material/error:")
elif job is not None and job.state == "stopped":
    st.info("The summary was stopped.", icon=":material/info:")
elif job is not None and isinstance(job.result, SummaryResult):
    result: SummaryResult = job.result
    scope_name = result.scope
    if scope_name.startswith("document "):  # the file's name, not where the server keeps it
        scope_name = "document " + components.file_name(scope_name.removeprefix("document "))
    st.subheader(f"Summary of the {scope_name}")
    st.markdown(result.marked(flag=lambda text: ":red-background[" + text.replace("]", "\\]") + "] ⚠"))
    st.caption(
        f"{result.method} · {components.plural(result.chunks, 'passage')} · "
        f"{components.plural(result.steps, 'model call')}"
    )
    if result.reason:
        st.caption(result.reason)
    note = faithful_note(result)
    if note and result.unsupported:
        st.warning(note)
    elif note:
        st.caption(note)
    if result.dropped and result.unsupported:
        with st.expander("Left out: sentences the documents do not hold"):
            for sentence in result.unsupported:
                st.markdown(f"- {components.plain(sentence)}")
    components.citations(result.citations)
    markdown = (
        f"# Summary of the {scope_name}\n\n{result.marked()}\n\n"
        f"_Method: {result.method}; {components.plural(result.chunks, 'passage')}; "
        f"{components.plural(result.steps, 'model call')}. "
        f"{result.reason}. {note or ''}_\n"
    )
    st.download_button(
        "Download as Markdown",
        markdown,
        file_name=f"summary-{ws.name}.md",
        mime="text/markdown",
        on_click="ignore",
    )
