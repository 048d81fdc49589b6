"""Every error lectern raises on purpose, in one place. Each type means one thing and carries the facts
(path, field, tokens, URL, reason); the edges (CLI, web UI, server) word them for people.

This module imports nothing of lectern's, so every layer (ingest, rag, app, the CLI) can use it.
"""

from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path
from typing import Any


class LecternError(Exception):
    """Base of every error lectern raises on purpose."""


def report_bug(exc: BaseException, context: str) -> str:
    """What every edge says about an error lectern did not raise on purpose (a bug): the full trace
    goes to a file (headed by `context`: the command line, the request), and the one line to show is
    returned: the error and where its trace is."""
    try:
        fd, name = tempfile.mkstemp(prefix="lectern-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{context}\n\n")
            fh.write("".join(traceback.format_exception(exc)))
        where = f"full trace in {name}"
    except OSError as write_error:
        where = f"the trace could not be written: {write_error.strerror}"
    summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return f"{summary} ({where}; please report it)"


class DocumentError(LecternError):
    """A single input file could not be used; ingestion of the others goes on."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")

    def __reduce__(self) -> tuple[type[DocumentError], tuple[str, str]]:
        """Picklable with its fields: parse workers send these across processes."""
        return (self.__class__, (self.path, self.detail))


class UnsupportedFormat(DocumentError):
    reason = "unsupported format"


class EmptyDocument(DocumentError):
    reason = "empty"


class CorruptDocument(DocumentError):
    reason = "corrupt"


class DecompressionBomb(DocumentError):
    """A file that inflates past lectern's budget when read (a zip or PDF stream bomb)."""

    reason = "decompression bomb"


class EncryptedDocument(DocumentError):
    reason = "encrypted"


class EncodingError(DocumentError):
    reason = "encoding"


class TooLarge(DocumentError):
    """Past a bound that keeps memory in check: a zip that unpacks too far, an image of too many
    pixels, a spreadsheet of too many rows."""

    reason = "too large"


class IndexMismatch(LecternError):
    """The collection was built with another embedder, dimension or format than asked for."""


class ProfileMismatch(IndexMismatch):
    """A collection keeps the embedder it was created with: another profile was asked for."""

    def __init__(self, collection: str, created: str, requested: str) -> None:
        self.collection = collection
        self.created = created
        self.requested = requested
        super().__init__(
            f"collection {collection!r} was created with profile {created!r}, not {requested!r}: "
            "the profile is fixed at creation; leave it unset or use a new collection"
        )


class ChunkingMismatch(LecternError):
    """Documents chunked unlike the collection's (its manifest records the chunking) would mix chunk
    sizes in one index and skew both BM25 and dense scores."""

    def __init__(self, where: str | Path, recorded: dict[str, Any], requested: dict[str, Any]) -> None:
        self.where = str(where)
        self.recorded = recorded
        self.requested = requested
        super().__init__(
            f"{self.where} was chunked with {_pairs(recorded)}; these settings ask for {_pairs(requested)}: "
            "use the collection's chunking or a new collection"
        )


class ChunkTooLarge(LecternError):
    """chunk_tokens does not fit the embedder's window: chunks would be truncated when embedded."""

    def __init__(self, chunk_tokens: int, room: int, window: int, title_tokens: int) -> None:
        self.chunk_tokens = chunk_tokens
        self.room = room
        super().__init__(
            f"chunk_tokens={chunk_tokens} does not fit the embedder's window: at most {room} "
            f"({window} word pieces less {title_tokens} for the title line)"
        )


class EmbedderNotFound(LecternError):
    """The embedder asked for is not on this machine (a missing folder or packaged model)."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"embedder {model!r} not found: {detail}")


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


class PrecisionUnavailable(LecternError):
    """An embedding precision (ingest.embed.precision, or query_backend) that cannot run here: its
    package is not installed, or the model cannot run that way."""

    def __init__(self, precision: str, reason: str, setting: str = "ingest.embed.precision") -> None:
        self.precision = precision
        self.reason = reason
        self.setting = setting
        super().__init__(f"{setting} = {precision!r} cannot run: {reason}")


class CollectionNotFound(LecternError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none yet"
        super().__init__(f"no collection named {name!r} (known: {listed})")


class DocumentNotFound(LecternError):
    """A source asked for by name is not in the collection; `known` lists (some of) those that are."""

    SHOWN = 5

    def __init__(self, source: str, collection: str, known: list[str]) -> None:
        self.source = source
        self.collection = collection
        self.known = known
        listed = ", ".join(known[: self.SHOWN]) if known else "none yet"
        if len(known) > self.SHOWN:
            listed += f" and {len(known) - self.SHOWN} more"
        super().__init__(f"no document {source!r} in collection {collection!r} (known: {listed})")


class InvalidName(LecternError):
    """A collection or conversation name that could escape its folder."""


class UnknownKey(LecternError):
    """A registry lookup with a key it does not hold: the message lists the known ones."""

    def __init__(self, what: str, key: str, known: list[str]) -> None:
        self.key = key
        self.known = known
        super().__init__(f"unknown {what} {key!r}; known: {', '.join(sorted(known))}")


class SettingsError(LecternError):
    """A settings file or LECTERN_* variable lectern cannot read: where (file and line, or the
    variable), which key, and why."""

    def __init__(
        self, where: str | Path, reason: str, line: int | None = None, key: str | None = None
    ) -> None:
        self.where, self.reason, self.line, self.key = str(where), reason, line, key
        at = f", line {line}" if line else ""
        super().__init__(f"{self.where}{at}: {reason}")


class PortUnavailable(LecternError):
    """`serve` or `ui` cannot listen where asked: the port is in use, or the address is not this machine's."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host, self.port, self.reason = host, port, reason
        in_use = "is in use" if "in use" in reason.lower() else f"cannot be used: {reason}"
        super().__init__(f"port {port} on {host} {in_use} (choose another with --port)")


class StoreUnavailable(LecternError):
    """The store backend's database cannot be reached or opened (a Milvus URI, its token)."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"cannot open the Milvus database {uri}: {reason}")


class RunnerUnavailable(LecternError):
    """An ingestion runner that cannot run here: its package is missing, or its cluster unreachable."""

    def __init__(self, runner: str, reason: str) -> None:
        self.runner = runner
        self.reason = reason
        super().__init__(f"the {runner!r} ingest runner cannot run: {reason}")


class BackendUnavailable(LecternError):
    """An LLM backend that cannot run here: its package is missing or cannot load."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"the {backend!r} LLM backend cannot run: {reason}")


class IndexLocked(LecternError):
    """Another writer holds the collection's lock."""


class NotEnoughDisk(LecternError):
    """What lectern was about to write (a converted model, joined model parts) does not fit the disk
    it goes to; nothing was left behind half-written."""

    def __init__(self, what: str, folder: Path, needed: int | None, free: int) -> None:
        self.folder = folder
        self.needed = needed
        self.free = free
        room = f"is full ({free} bytes free)" if free < 1024 else f"has {_size(free)} free"
        if needed is None:  # found out by the write itself
            super().__init__(
                f"the disk filled up while {what}: {folder} {room}; what was "
                "written before is kept and that write was undone; free some space and run it again"
            )
            return
        super().__init__(
            f"{what} needs about {_size(needed)} in {folder}, which {room}; "
            "free some space, or set LECTERN_CACHE_DIR (cache_dir) to a folder on a larger disk"
        )


def _size(n: int) -> str:
    """Bytes in the largest unit that keeps a digit before the point ("0.00 GiB free" said nothing)."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# --- answering: models, prompts, conversations, evaluation ---


class ContextTooLong(LecternError):
    """A prompt does not fit the model's context window; `field` names the part that overflowed."""

    def __init__(self, tokens: int, window: int, field: str) -> None:
        self.tokens = tokens
        self.window = window
        self.field = field
        super().__init__(f"{field} needs {tokens} tokens but the model's context window is {window}")


class LLMUnavailable(LecternError):
    """The model server could not be reached (refused, timed out, DNS...)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the model server at {url}: {reason}")


class LLMServerError(LecternError):
    """The model server answered with an HTTP error; `message` is what the server said."""

    def __init__(self, url: str, status: int, message: str) -> None:
        self.url = url
        self.status = status
        self.message = message
        super().__init__(f"model server at {url} answered HTTP {status}: {message}")


class ToolsUnsupported(LecternError):
    """Tool calling was asked of a model whose chat template has no tools section (SmolLM2)."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r} cannot call tools: its chat template has no tools section; "
            "use a model that has one, such as packaged:qwen2.5-0.5b or packaged:qwen2.5-1.5b"
        )


class ModelNotFound(LecternError):
    """The asked-for model is neither packaged, a folder, a .gguf file nor in the local HF cache."""

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        self.detail = detail
        super().__init__(f"model {model!r} not found: {detail}")


class CorruptModel(LecternError):
    """A packaged model's parts or joined file failed verification (checksum, size, GGUF header)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class BadAdapter(LecternError):
    """An adapter folder lectern cannot use (missing, not PEFT, not LoRA), or no adapter to switch."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"adapter {path}: {detail}")


class AdapterMismatch(LecternError):
    """A LoRA adapter was trained on another base model than the one being loaded."""

    def __init__(self, path: str, adapter_base: str, model: str, detail: str) -> None:
        self.path = path
        self.adapter_base = adapter_base
        self.model = model
        self.detail = detail
        if adapter_base == model:  # same name, other weights (another GGUF, a changed file)
            said = f"was trained on another model named {model!r} than the one loaded"
        else:
            said = f"was trained on {adapter_base!r}, not on the loaded model {model!r}"
        super().__init__(f"adapter {path} {said} ({detail})")


class TokenCountUnavailable(LecternError):
    """The model's token counter returned 0 for non-empty text (LangChain's offline default)."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"{model} cannot count tokens (get_num_tokens returned 0 for non-empty text); "
            "the backend must count with the model's own tokenizer"
        )


class NothingToSummarize(LecternError):
    def __init__(self) -> None:
        super().__init__("nothing to summarize: no text in the given documents")


class Stopped(LecternError):
    """A long run (an ingest, a summary, an answer) stopped on request: raised from its progress
    callback, so it stops at the next step it reports; an ingest keeps the files it had finished."""

    def __init__(self, what: str = "the run") -> None:
        super().__init__(f"{what} was stopped")


class Busy(LecternError):
    """The web UI runs one job at a time on a collection or conversation: a second is refused and the
    first kept (app.jobs)."""

    def __init__(self, label: str) -> None:
        self.label = label
        super().__init__(f"{label} is still running: wait for it to end, or stop it")


class CorruptConversation(LecternError):
    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class BadQADir(LecternError):
    """The --qa-dir folder is not laid out like the CMU dataset."""


# --- the API server (lectern serve) ---


class APIError(LecternError):
    """A request the server refuses, with its HTTP status and OpenAI's error fields (type, param, code)."""

    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        self.message = message
        self.param = param
        self.code = code
        self.status = status or self.status
        self.type = type or self.type
        super().__init__(message)


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"


class UnknownModel(APIError):
    status = 404
    type = "not_found_error"


class BodyTooLarge(APIError):
    status = 413


class ServerBusy(APIError):
    """The generation queue is full: the client should retry after `retry_after_s`."""

    status = 503
    type = "server_busy"

    def __init__(self, waiting: int, retry_after_s: float = 1.0) -> None:
        self.waiting = waiting
        self.retry_after_s = retry_after_s
        super().__init__(f"the server is busy ({waiting} requests waiting); retry later", code="server_busy")


class ShuttingDown(APIError):
    """The server is stopping (SIGTERM): what an open stream is told before its `[DONE]`."""

    status = 503
    type = "server_error"

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down; retry against a running one", code="server_shutting_down"
        )


# --- misuse of the CLI, the API and the web UI ---


class InvalidInput(LecternError, ValueError):
    """A value given to lectern (an option, an argument, a question) that it cannot use: `field` names
    it, `reason` says what is allowed."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {field} {shown}: {reason}")


class SaveFailed(LecternError):
    """A file the user handed over (an upload) could not be written; the others still are."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"cannot save {name!r}: {reason}")


class Exposed(LecternError):
    """A server (the web UI, `lectern serve`) asked to listen beyond loopback with neither its secret
    nor the explicit opt-out (lectern.exposure.check_exposure)."""

    def __init__(self, host: str, what: str, how: str, opt_out: str) -> None:
        self.host = host
        super().__init__(
            f"--host {host} exposes {what} beyond this machine: {how}, or pass {opt_out} to accept the risk"
        )
