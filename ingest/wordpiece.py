"""Sub-word pieces, what the chunker counts and cuts by: an embedder's own tokenizer (`HFTokenizer`
over its tokenizer.json, the word pieces the model will see, so no chunk is truncated), or one piece
per word (`word_offsets`, the fake embedder's). BM25's words are another thing: ingest.bm25_terms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lectern.ingest.chunk import Pieces


class HFTokenizer:
    """Offsets from a fast (Rust) tokenizer.json: batched and parallel, no Python per token."""

    def __init__(self, file: Path | str) -> None:
        from tokenizers import Tokenizer

        self.file = str(file)
        self._tok = Tokenizer.from_file(self.file)
        self._tok.no_truncation()
        self._tok.no_padding()

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        out = []
        for enc in self._tok.encode_batch(list(texts), add_special_tokens=False):
            out.append([(s, e) for s, e in enc.offsets])
        return out

    def pieces(self, texts: Sequence[str]) -> list[Pieces]:
        """Offsets and ids from one pass: the fast profile embeds its chunks from these ids."""
        return [
            Pieces(list(enc.offsets), np.asarray(enc.ids, dtype=np.int64))
            for enc in self._tok.encode_batch(list(texts), add_special_tokens=False)
        ]


WORD = re.compile(r"\w+", re.UNICODE)  # a piece of the fake embedder's: a word it also hashes


def word_offsets(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """The fake embedder's tokenizer: one piece per word."""
    return [[m.span() for m in WORD.finditer(t)] for t in texts]
