"""lectern's web UI: `lectern ui` runs `streamlit run app/main.py`.

This script draws the sidebar (collections) and runs the chosen page; each page calls the
Workspace API and renders. The Workspace is opened per rerun and closed at the end, so no
collection stays open across reruns and two tabs only ever meet at the store's file lock.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lectern.app import components, resources
from lectern.app.jobs import JOBS
from lectern.errors import StoreUnavailable
from lectern.rag.workspace import Workspace

_SEEN = "_lectern_generation"  # (collection, generation) this session's page last showed
VIEWS = Path(__file__).parent / "views"  # not pages/: that name turns on the old file-based navigation


@st.fragment(run_every=2.0)
def watch(collection: str) -> None:
    """Every open page, every two seconds: the jobs running in this server, and a rerun of the whole
    page when the collection's documents changed (an ingest ended, here or in another tab), so the
    sidebar, the Ask box and the document list follow the data without a reload."""
    if st.session_state.get(_SEEN) != (collection, JOBS.generation(collection)):
        st.rerun()  # the whole page, which records the generation it shows
    for job in JOBS.running():
        st.caption(f":material/progress_activity: {job.label} is running")


def main() -> None:
    """The page: sidebar and the chosen view. Called only when Streamlit runs this script: a parse
    worker (spawned while a job ingests) imports it as __mp_main__ and must run none of it (it did,
    in bare mode, logging "missing ScriptRunContext" about 40 times an ingest)."""
    st.set_page_config(page_title="lectern", page_icon="📚", layout="wide")
    if not resources.signed_in():  # a password is set (lectern ui --password-file): nothing before it
        st.stop()
    config = resources.settings()
    collection = resources.current_collection(config.collection)
    ws = resources.open_workspace(collection, config)
    st.session_state[_SEEN] = (collection, JOBS.generation(collection))

    try:
        with st.sidebar:
            st.title("lectern")
            try:
                known = ws.collections()
                reachable = True
            except StoreUnavailable as err:  # a Milvus server down: the Settings page must still open
                st.error(
                    f"{err}. Start it, or choose another store on the Settings page.", icon=":material/error:"
                )
                known, reachable = [], False
            options = known if collection in known else [*known, collection]
            chosen = st.selectbox(
                "Collection",
                options,
                index=options.index(collection),
                help="Each collection is its own index; pages work on the one chosen here.",
            )
            if chosen != collection:
                resources.set_sticky("collection", chosen)
                st.rerun()
            if reachable and not ws.exists:
                st.caption("Empty: add documents in the Library to create it.")
            with st.form("new-collection", clear_on_submit=True, border=False):
                name = st.text_input("New collection", placeholder="letters, digits, _ - .")
                if st.form_submit_button("Create") and name.strip():
                    with components.shown_errors() as outcome:
                        new = Workspace(collection=name.strip(), settings=config)
                        resources.embedder(new)
                        new.ingest([])  # an empty ingest creates the collection with its manifest
                    if not outcome.failed:
                        resources.set_sticky("collection", name.strip())
                        st.rerun()
            st.caption(f"Data: `{config.data_dir}` · store: {config.store.backend}")
            watch(collection)

        page = st.navigation(
            [
                st.Page(VIEWS / "library.py", title="Library", icon=":material/folder_open:", default=True),
                st.Page(VIEWS / "ask.py", title="Ask", icon=":material/chat:"),
                st.Page(VIEWS / "summarize.py", title="Summarize", icon=":material/summarize:"),
                st.Page(VIEWS / "settings.py", title="Settings", icon=":material/settings:"),
            ]
        )
        page.run()
    finally:
        resources.close_workspace()


if __name__ == "__main__":
    main()
