"""What the pages share: settings, the current Workspace, heavy models loaded once, saved uploads.

Heavy models live in rag.model_cache.MODELS, the cache the CLI and the Python API use too (keyed by
what was loaded, bounded): the first page that needs one shows a spinner, every later rerun, tab
and page reuses it, and a new temperature on the Settings page loads nothing.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Protocol

import streamlit as st
from langchain_core.language_models import BaseChatModel

from lectern.errors import InvalidName, LecternError, SaveFailed
from lectern.ingest.atomic import atomic_write_bytes
from lectern.ingest.embed_base import Embedder
from lectern.rag.model_cache import MODELS
from lectern.rag.settings import Settings, load_settings
from lectern.rag.workspace import Workspace, check_name

LOG = logging.getLogger("lectern")
UPLOADS_DIR = "uploads"
REPLACED_DIR = ".replaced"  # in an uploads folder: the files uploads replaced, until their ingest ends
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_WS_KEY = "_lectern_workspace"
# Settings the environment pins: the UI says so, since a saved value cannot override them.
PINNED_ENV = ("LECTERN_DATA_DIR", "LECTERN_COLLECTION", "LECTERN_CACHE_DIR")
# Set by `lectern ui` (from --password-file or the environment): every session must give it first.
PASSWORD_ENV = "LECTERN_UI_PASSWORD"
_SIGNED_IN = "_lectern_signed_in"
NAME_MAX_BYTES = 200  # file systems allow 255 bytes a name; room for the temporary name's additions


class Upload(Protocol):
    """What st.file_uploader hands back (an UploadedFile), reduced to what saving needs."""

    name: str

    def getbuffer(self) -> memoryview: ...


# -- signing in ----------------------------------------------------------------------------------
def signed_in() -> bool:
    """True when no password is set, or this session gave it; else draws the sign-in form. The UI can
    read and ingest any file the server can, so `lectern ui` beyond loopback requires a password."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password or st.session_state.get(_SIGNED_IN):
        return True
    st.title("lectern")
    with st.form("sign-in"):
        given = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in", type="primary"):
            if hmac.compare_digest(given.encode("utf-8"), password.encode("utf-8")):
                st.session_state[_SIGNED_IN] = True
                st.rerun()
            st.error("Wrong password.", icon=":material/lock:")
    return False


# -- settings and the workspace ------------------------------------------------------------------
def settings() -> Settings:
    """Fresh every rerun: the Settings page or the CLI may have saved new values since."""
    return load_settings()


def env_overrides() -> dict[str, str]:
    """LECTERN_* variables that outrank settings.toml (besides data dir and collection)."""
    return {
        k: ("***" if "KEY" in k or "PASSWORD" in k else v)
        for k, v in sorted(os.environ.items())
        if k.startswith("LECTERN_") and k not in PINNED_ENV
    }


def sticky(key: str, default: str) -> str:
    """A value kept in session state and mirrored in the URL, so it survives page switches and reloads."""
    value = st.session_state.get(key) or st.query_params.get(key) or default
    st.session_state[key] = value
    if st.query_params.get(key) != value:
        st.query_params[key] = value
    return str(value)


def set_sticky(key: str, value: str) -> None:
    st.session_state[key] = value
    st.query_params[key] = value


def current_collection(default: str) -> str:
    name = sticky("collection", default)
    try:
        return check_name(name)
    except InvalidName:
        set_sticky("collection", default)
        return default


def new_conversation_id() -> str:
    return uuid.uuid4().hex[:12]


def open_workspace(collection: str, config: Settings) -> Workspace:
    """This rerun's Workspace; main.py closes it when the page is done (never held across reruns)."""
    ws = Workspace(collection=collection, settings=config)
    st.session_state[_WS_KEY] = ws
    return ws


def workspace() -> Workspace:
    """The Workspace main.py opened for this rerun."""
    ws = st.session_state.get(_WS_KEY)
    if not isinstance(ws, Workspace):
        ws = open_workspace(st.session_state.get("collection") or settings().collection, settings())
    return ws


def close_workspace() -> None:
    ws = st.session_state.pop(_WS_KEY, None)
    if isinstance(ws, Workspace):
        ws.close()


# -- heavy models, loaded once per process (rag.model_cache) --------------------------------------
def _loading(ready: bool, message: str) -> AbstractContextManager[object]:
    return nullcontext() if ready else st.spinner(message)


def embedder(ws: Workspace) -> Embedder:
    """Load the collection's embedder, with a spinner the first time; Workspace then reuses it."""
    with _loading(
        MODELS.has_embedder(ws.embed_settings(), ws.settings.models_dir), "Loading the embedding model…"
    ):
        return ws.embedder


def llm(ws: Workspace) -> BaseChatModel:
    """Load the chat model, with a spinner when it is not loaded yet (a GGUF may be converted first)."""
    ready = MODELS.has_llm(ws.settings.llm, ws.settings.models_dir)
    with _loading(ready, "Loading the language model (the first use may convert it, up to a minute)…"):
        return ws.llm


# -- uploads -------------------------------------------------------------------------------------
def safe_filename(name: str) -> str:
    """The file's own name, no folders, nothing hidden or special: uploads cannot leave their folder."""
    if "\x00" in name:
        raise InvalidName(f"invalid file name {name!r}: it contains a NUL byte")
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = _UNSAFE.sub("_", base)
    if not base or base.startswith("."):
        raise InvalidName(f"invalid file name {name!r}: empty, '..' or hidden (leading dot)")
    if len(base.encode("utf-8")) > NAME_MAX_BYTES:
        stem, dot, ext = base.rpartition(".")
        if dot and len(ext.encode("utf-8")) <= 20:
            base = cut_to_bytes(stem, NAME_MAX_BYTES - 1 - len(ext.encode("utf-8"))) + dot + ext
        else:
            base = cut_to_bytes(base, NAME_MAX_BYTES)
    return base


def cut_to_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` whose UTF-8 form fits `limit` bytes, never half a character.
    (Cut by characters, 200 CJK characters made a 600-byte name the file system refused.)"""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def uploads_dir(config: Settings, collection: str) -> Path:
    return config.data_dir / UPLOADS_DIR / check_name(collection)


def save_uploads(
    files: Iterable[Upload], config: Settings, collection: str
) -> tuple[list[Path], list[LecternError]]:
    """Write uploaded files under <data_dir>/uploads/<collection>/. A name that cannot be used, or a
    file that cannot be written, comes back as one error; the rest of the batch is still saved. An
    upload that replaces a file (a document's, by the same name) moves it aside (`replaced_copy`)
    until forget_uploads knows whether the new one was ingested."""
    folder = uploads_dir(config, collection)
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    saved: list[Path] = []
    rejected: list[LecternError] = []
    for f in files:
        previous: Path | None = None
        try:
            target = (folder / safe_filename(f.name)).resolve()
            if target.parent != root:
                raise InvalidName(f"invalid file name {f.name!r}: it would be saved outside {root}")
            if target.is_file() and not replaced_copy(target).is_file():  # (kept: the batch's first)
                previous = replaced_copy(target)
                previous.parent.mkdir(exist_ok=True)
                os.replace(target, previous)
            atomic_write_bytes(target, bytes(f.getbuffer()))
        except InvalidName as err:
            rejected.append(err)
            continue
        except OSError as err:  # a name the file system refuses, a full disk: this file only
            if previous is not None and previous.is_file():
                os.replace(previous, target)  # the earlier file stays as it was
            rejected.append(SaveFailed(f.name, err.strerror or type(err).__name__))
            continue
        saved.append(target)
    return saved, rejected


def replaced_copy(path: Path) -> Path:
    """Where the file an upload replaced waits (<uploads>/.replaced/<name>) while the upload is ingested."""
    return path.parent / REPLACED_DIR / path.name


def forget_uploads(paths: Iterable[Path], ws: Workspace) -> None:
    """After an ingest of uploads: the uploads folder keeps only the files of documents. An upload the
    collection holds stays (the file it replaced goes); one it does not hold (failed, or not reached
    before a stop) is removed, or, where it replaced a document's file, that file is put back, so a
    failed replacement keeps the earlier document and its file."""
    from lectern.ingest.sources import file_hash

    paths = list(paths)
    if not paths:
        return
    try:
        known = {d.source: d.content_hash for d in ws.documents()}
    except LecternError as err:
        LOG.warning("uploads left in place: cannot list collection %r: %s", ws.name, err)
        return
    for path in paths:
        previous = replaced_copy(path)
        stored = known.get(str(path.resolve()))
        try:
            ingested = stored is not None and file_hash(path)[0] == stored
        except OSError:
            ingested = False
        if ingested:
            previous.unlink(missing_ok=True)
        elif previous.is_file() and stored is not None:
            os.replace(previous, path)  # the document still holds the earlier file's chunks
        else:
            path.unlink(missing_ok=True)
            previous.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            previous.parent.rmdir()  # when empty


def forget_upload(source: str, config: Settings, collection: str) -> None:
    """Remove the UI's own copy of an uploaded file once its document is deleted."""
    path = Path(source)
    if path.parent == uploads_dir(config, collection).resolve():
        path.unlink(missing_ok=True)
