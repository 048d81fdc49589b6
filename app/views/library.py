"""Library: add files (upload or a folder on the server), see the ingest report, list and delete documents."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lectern.app import components, resources
from lectern.app.jobs import JOBS, Job
from lectern.ingest.report import IngestReport
from lectern.rag.workspace import Workspace

ws = resources.workspace()
st.header(f"Library · {ws.name}")


def start_ingest(paths: list[Path], force: bool, uploaded: list[Path]) -> bool:
    """The ingest runs as a job of the server process (app.jobs): it goes on whatever this page does.
    False (and the reason shown) when it could not start."""
    config, name = ws.settings, ws.name

    def work(job: Job) -> IngestReport:
        mine = Workspace(collection=name, settings=config)  # opened and closed in the job's thread
        try:
            return mine.ingest(paths, progress=job.report, force=force)
        finally:
            resources.forget_uploads(uploaded, mine)  # failed or not reached: none left behind
            mine.close()

    with components.shown_errors() as outcome:
        JOBS.start("ingest", name, name, f"The ingest into {name}", work)
    return not outcome.failed


job = JOBS.get("ingest", ws.name)
running = job is not None and job.running
add_files, add_folder = st.tabs(["Upload files", "Folder on the server"])
with add_files:
    key = f"uploader-{st.session_state.get('uploads', 0)}"
    files = st.file_uploader(
        "Drop PDF, Word, PowerPoint, Excel, CSV, EPUB, image, text, Markdown or HTML files here",
        accept_multiple_files=True,
        key=key,
    )
    force_upload = st.checkbox("Re-index unchanged files", key="force-upload")
    if st.button("Ingest uploaded files", type="primary", disabled=not files or running):
        with components.shown_errors():
            saved, rejected = resources.save_uploads(files or [], ws.settings, ws.name)
            for err in rejected:
                st.error(str(err), icon=":material/error:")
            st.session_state["uploads"] = st.session_state.get("uploads", 0) + 1  # clears the uploader
            if saved and start_ingest(saved, force_upload, saved) and not rejected:
                st.rerun()
with add_folder:
    folder = st.text_input("Folder or file path on the server", placeholder="/path/to/documents")
    force_folder = st.checkbox("Re-index unchanged files", key="force-folder")
    clicked = st.button("Ingest folder", disabled=not folder.strip() or running)
    if clicked and start_ingest([Path(folder.strip()).expanduser()], force_folder, []):
        st.rerun()

job = JOBS.get("ingest", ws.name)
if job is not None and job.running:
    st.subheader("Ingesting")
    components.follow(job, components.ingest_status)
elif job is not None:
    st.subheader("Last ingest")
    if job.error:
        st.error(job.error, icon=":material/error:")
    if isinstance(job.result, IngestReport):
        components.ingest_report(job.result)

st.subheader("Documents")
with components.shown_errors():
    docs = ws.documents()
    if not docs:
        st.info("No documents yet: upload files or point to a folder above.")
    for doc in docs:
        name, fmt, pages, chunks, action = st.columns([5, 1, 1, 1, 1], vertical_alignment="center")
        name.markdown(f"**{components.file_name(doc.source)}**  \n`{doc.source}`")
        fmt.write(doc.format or "")
        pages.write(components.plural(doc.pages, "page"))
        chunks.write(components.plural(doc.chunks, "chunk"))
        busy = "Wait for the ingest to end" if running else None  # it holds the collection's lock
        if action.button(
            "Delete", key=f"delete-{doc.content_hash}-{doc.source}", disabled=running, help=busy
        ):
            with components.shown_errors() as outcome:
                ws.delete([doc.source])
                resources.forget_upload(doc.source, ws.settings, ws.name)
            if not outcome.failed:
                st.toast(f"Deleted {components.file_name(doc.source)}")
                JOBS.changed(ws.name)  # every open page of this collection refreshes
                ws.close()
                st.rerun()
