"""Library: add files (upload or a folder on the server), see the ingest report, list and delete documents."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lectern.app import components, resources

ws = resources.workspace()
st.header(f"Library · {ws.name}")


def run_ingest(paths: list[Path], force: bool) -> None:
    with components.shown_errors():
        resources.embedder(ws)
        st.session_state["report"] = ws.ingest(paths, progress=components.ingest_progress(), force=force)
    ws.close()  # the listing below must see what was just written


add_files, add_folder = st.tabs(["Upload files", "Folder on the server"])
with add_files:
    key = f"uploader-{st.session_state.get('uploads', 0)}"
    files = st.file_uploader(
        "Drop PDF, Word, PowerPoint, Excel, CSV, EPUB, image, text, Markdown or HTML files here",
        accept_multiple_files=True,
        key=key,
    )
    force_upload = st.checkbox("Re-index unchanged files", key="force-upload")
    if st.button("Ingest uploaded files", type="primary", disabled=not files):
        with components.shown_errors():
            saved, rejected = resources.save_uploads(files or [], ws.settings, ws.name)
            for err in rejected:
                st.error(str(err), icon=":material/error:")
            if saved:
                run_ingest(saved, force_upload)
            st.session_state["uploads"] = st.session_state.get("uploads", 0) + 1  # clears the uploader
with add_folder:
    folder = st.text_input("Folder or file path on the server", placeholder="/path/to/documents")
    force_folder = st.checkbox("Re-index unchanged files", key="force-folder")
    if st.button("Ingest folder", disabled=not folder.strip()):
        run_ingest([Path(folder.strip()).expanduser()], force_folder)

report = st.session_state.get("report")
if report is not None and report.collection == ws.name:
    st.subheader("Last ingest")
    components.ingest_report(report)

st.subheader("Documents")
with components.shown_errors():
    docs = ws.documents()
    if not docs:
        st.info("No documents yet: upload files or point to a folder above.")
    for doc in docs:
        name, fmt, pages, chunks, action = st.columns([5, 1, 1, 1, 1], vertical_alignment="center")
        name.markdown(f"**{components.file_name(doc.source)}**  \n`{doc.source}`")
        fmt.write(doc.format or "")
        pages.write(f"{doc.pages} pages")
        chunks.write(f"{doc.chunks} chunks")
        if action.button("Delete", key=f"delete-{doc.content_hash}-{doc.source}"):
            with components.shown_errors() as outcome:
                ws.delete([doc.source])
                resources.forget_upload(doc.source, ws.settings, ws.name)
            if not outcome.failed:
                st.toast(f"Deleted {components.file_name(doc.source)}")
                ws.close()
                st.rerun()
