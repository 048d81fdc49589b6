"""Settings: the model, retrieval and generation knobs, saved to settings.toml in the data directory.

The CLI reads the same file, so a choice made here holds for `lectern ask` too. LECTERN_*
environment variables still outrank it; the page lists the ones that are set.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import streamlit as st

from lectern.app import components, resources
from lectern.errors import LecternError
from lectern.ingest.store_backends import open_backend
from lectern.rag.models import AUTO, installed
from lectern.rag.settings import (
    SETTINGS_FILE,
    Settings,
    StoreSettings,
    read_settings_file,
    write_settings,
)

KINDS = {
    "packaged": "Packaged local model",
    "folder": "Local model folder or .gguf",
    "openai": "OpenAI-compatible server",
    "fake": "Fake model (demo, no model)",
}
MODES = ["hybrid", "dense", "bm25"]


def described(section: str, name: str) -> str:
    """A setting's own description (Field(description=), what docs/SETTINGS.md prints), with its name:
    the Settings page says what the settings say, once."""
    field = Settings.model_fields[section].annotation.model_fields[name]  # type: ignore[union-attr]
    return f"{field.description} (`{section}.{name}`)"


STORES = {
    "faiss": "FAISS folders in the data directory",
    "milvus": "Milvus: an embedded milvus-lite file, or a server",
}
RANKERS = {"weighted": "Weighted (better on CMU S08 and S09)", "rrf": "Reciprocal rank"}
PROMPTS = {
    "concise": "One short sentence (recommended)",
    "concise_example": "One short sentence, after a worked example",
    "zero_shot": "One or two sentences, the model may decline",
    "few_shot": "With worked examples",
    "chain_of_thought": "Reason first, then answer (slower)",
}


def stored_in(store: StoreSettings, config: Settings) -> str:
    """Which collections the saved store holds, and the FAISS folders' (a folder listing; an unsaved
    Milvus is not opened here: milvus-lite starts a server)."""
    faiss = store.model_copy(update={"backend": "faiss"})
    places = [("faiss", faiss)] + ([("milvus", store)] if store.backend == "milvus" else [])
    said = []
    for name, settings in places:
        try:
            names = ", ".join(open_backend(settings, config.data_dir).names()) or "none"
        except LecternError as err:
            names = f"cannot be listed ({err})"
        said.append(f"{name} holds {names}")
    return "; ".join(said)


config = resources.settings()
llm = config.llm
st.header("Settings")

st.subheader("Model")
if llm.backend == "openai":
    current = "openai"
elif llm.backend == "fake":
    current = "fake"
else:
    current = "packaged" if llm.model.startswith("packaged:") else "folder"
kind = st.radio("Backend", list(KINDS), index=list(KINDS).index(current), format_func=KINDS.__getitem__)
updates: dict[str, Any] = {}
if kind == "packaged":
    packaged = [AUTO, *installed()]
    model = st.selectbox(
        "Model",
        packaged,
        index=packaged.index(llm.model) if llm.model in packaged else 0,
        help=described("llm", "model"),
    )
    updates = {"backend": "auto", "model": model}
elif kind == "folder":
    folder = st.text_input(
        "Model folder or .gguf file", value="" if llm.model.startswith("packaged:") else llm.model
    )
    updates = {"backend": "auto", "model": folder.strip()}
elif kind == "openai":
    url = st.text_input("Server URL", value=llm.base_url or "http://127.0.0.1:8000/v1")
    served = st.text_input("Model name", value=llm.model if llm.backend == "openai" else "")
    key = st.text_input(
        "API key",
        value=llm.api_key.get_secret_value() if llm.api_key else "",
        type="password",
        help="Stored in settings.toml in the data directory; leave empty for local servers.",
    )
    updates = {"backend": "openai", "base_url": url.strip(), "model": served.strip(), "api_key": key or None}
else:
    updates = {"backend": "fake"}

st.subheader("Retrieval and generation")
left, right = st.columns(2)
mode = left.radio(
    "Retrieval mode",
    MODES,
    index=MODES.index(config.retrieval.mode),
    horizontal=True,
    help=described("retrieval", "mode"),
)
k = left.number_input("Passages per answer (k)", min_value=1, max_value=100, value=config.retrieval.k)
temperature = right.slider("Temperature", 0.0, 2.0, float(llm.temperature), step=0.05)
max_tokens = right.number_input(
    "Max answer tokens", min_value=16, max_value=8192, value=llm.max_new_tokens, step=16
)
longest = right.number_input(
    "Longest question (tokens)",
    min_value=1,
    max_value=100_000,
    value=config.answer.max_question_tokens,
    help=described("answer", "max_question_tokens"),
)
prompt = left.selectbox(
    "Answer prompt",
    list(PROMPTS),
    index=list(PROMPTS).index(config.answer.prompt),
    format_func=PROMPTS.__getitem__,
    help="How the question and its passages are put to the model; docs/ANSWERS.md compares them.",
)
excerpts = right.toggle(
    "Show the model the best sentences only",
    value=config.answer.context == "sentences",
    help="The sentences of the passages that share the question's words, with their neighbours: "
    "shorter prompts, faster and more accurate answers from small models. Off: the whole passages.",
)
evidence = right.toggle(
    "Decline when the documents lack the question's subject",
    value=config.answer.evidence,
    help=described("answer", "evidence"),
)
drop_unsupported = right.toggle(
    "Leave out summary sentences the documents do not hold",
    value=config.summary.unsupported == "drop",
    help="Each summary sentence is checked against the passages summarized. Off: one that no "
    "passage holds is shown, marked; on: it is left out (and listed under the summary).",
)

if kind in ("packaged", "folder"):
    st.subheader("LoRA adapter")
    adapter = st.text_input(
        "Adapter folder (optional)",
        value=llm.adapter or "",
        help="A PEFT LoRA adapter for this model, e.g. one `lectern tune` trained; it must have been "
        "trained on this model, else answering says which model it was trained on.",
    )
    merge = st.toggle(
        "Merge the adapter into the weights when loading",
        value=llm.merge_adapter,
        help="Slightly faster answers; off keeps it apart from the base weights.",
    )
    updates.update(adapter=adapter.strip() or None, merge_adapter=bool(merge))

st.subheader("Where collections live")
store = config.store
backend = st.radio(
    "Store",
    list(STORES),
    index=list(STORES).index(store.backend),
    format_func=STORES.__getitem__,
    help="A collection stays in the store it was made in; `lectern migrate` copies one across "
    "without embedding again.",
)
store_updates: dict[str, Any] = {"backend": backend}
if backend != store.backend:
    st.info(
        f"Collections stay in the store they were made in: {stored_in(store, config)}. After saving, "
        f"the sidebar lists the collections of {backend} only. Copy one across without embedding again "
        f"with `lectern migrate --from {store.backend}:NAME --to {backend}:NAME`.",
        icon=":material/swap_horiz:",
    )
if backend == "milvus":
    uri = st.text_input(
        "Milvus URI",
        value=store.uri or "",
        help="Empty: milvus.db in the data directory (milvus-lite, no server to start). "
        "http://host:19530 for a Milvus server.",
    )
    token = st.text_input(
        "Milvus token",
        value=store.token.get_secret_value() if store.token else "",
        type="password",
        help="user:password or an API key, for a server; stored in settings.toml in the data directory.",
    )
    ranker = st.selectbox(
        "Hybrid fusion",
        list(RANKERS),
        index=list(RANKERS).index(store.ranker),
        format_func=RANKERS.__getitem__,
        help="How Milvus fuses its dense and BM25 results (docs/BENCHMARKS.md compares them).",
    )
    store_updates.update(uri=uri.strip() or None, token=token or None, ranker=ranker)

if st.button("Save settings", type="primary"):
    if kind != "fake" and not updates.get("model"):
        st.error("Choose a model first: the backend needs a model name or folder.", icon=":material/error:")
        st.stop()
    if backend == "milvus" and importlib.util.find_spec("pymilvus") is None:
        st.error(
            "The milvus store needs pymilvus and milvus-lite: pip install 'lectern[milvus]'.",
            icon=":material/error:",
        )
        st.stop()
    with components.shown_errors() as outcome:
        # what the file holds, with this page's values: never the environment's (LECTERN_*), which
        # would then outlive the variables that set them
        file = config.data_dir / SETTINGS_FILE
        data = read_settings_file(file) if file.is_file() else {}
        tables = {
            "llm": {**updates, "temperature": temperature, "max_new_tokens": int(max_tokens)},
            "retrieval": {"mode": mode, "k": int(k)},
            "store": store_updates,
            "answer": {
                "prompt": prompt,
                "context": "sentences" if excerpts else "chunks",
                "evidence": bool(evidence),
                "max_question_tokens": int(longest),
            },
            "summary": {"unsupported": "drop" if drop_unsupported else "mark"},
        }
        for table, values in tables.items():
            data[table] = {**data.get(table, {}), **values}
        Settings.model_validate({**data, "data_dir": config.data_dir})  # a bad value: one clear error
        path = write_settings(config.data_dir, data)
    if not outcome.failed:
        st.success(f"Saved to {path}; the CLI uses these settings too.")

st.caption(
    f"A setting a message names that is not on this page (such as ingest.parse_timeout_s) goes in "
    f"`{config.data_dir / SETTINGS_FILE}` under its table (`[ingest]` then `parse_timeout_s = 300`), "
    "or in the environment of `lectern ui` (`LECTERN_INGEST__PARSE_TIMEOUT_S=300`); the CLI reads both."
)

pinned = resources.env_overrides()
if pinned:
    st.warning(
        "These environment variables outrank the saved settings while this server runs: "
        + ", ".join(f"`{name}={value}`" for name, value in pinned.items())
    )
