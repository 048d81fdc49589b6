"""Typed errors of the answering layer: they carry the facts (tokens, URL, reason); the edges word them."""

from __future__ import annotations

from ingest.errors import LecternError


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
