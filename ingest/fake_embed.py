"""The fake embedder shipped for tests and the model-free demo (`ingest.embed.model = "fake"`): a
deterministic hashed bag of words, chunked one piece per word (ingest.wordpiece.word_offsets)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lectern.ingest.embed_base import normalise
from lectern.ingest.wordpiece import WORD, word_offsets


class FakeEmbedder:
    """Deterministic hashed bag of words: texts sharing words get close vectors. For unit tests."""

    def __init__(self, dimension: int = 64, max_tokens: int = 254) -> None:
        self._dimension = dimension
        self._max_tokens = max_tokens
        self.calls = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "fake", "name": f"fake-{self._dimension}", "normalize": True}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer_file(self) -> str | None:
        return None

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return word_offsets(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self._dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return normalise(out)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
