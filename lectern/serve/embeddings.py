"""/v1/embeddings: the ingestion embedder over strings or token ids, as floats or base64."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import numpy as np

from lectern.errors import (
    APIError,
)
from lectern.serve.protocol import (
    EmbeddingRequest,
)

if TYPE_CHECKING:
    from lectern.serve.server import Server


def embed(server: Server, body: EmbeddingRequest) -> dict[str, Any]:
    """The ingestion embedder over strings or token ids (the embedder's own tokenizer's ids)."""
    embedder = server.embedder()
    raw = body.input
    items: list[Any] = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    texts = [item if isinstance(item, str) else _decode(embedder, item) for item in items]
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise APIError(f"this embedder has {embedder.dimension} dimensions, not {body.dimensions}",
                       param="dimensions")  # fmt: skip
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32) if texts else np.zeros((0, 0), np.float32)
    tokens = sum(len(o) for o in embedder.offsets(texts))
    data = []
    for i, vector in enumerate(vectors):
        value: Any = (
            base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else [float(x) for x in vector]
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _decode(embedder: Any, ids: list[int]) -> str:
    file = embedder.tokenizer_file
    if not file:
        return " ".join(str(i) for i in ids)  # the fake embedder has no tokenizer: ids as words
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(file)
    if any(i < 0 or i >= tokenizer.get_vocab_size() for i in ids):
        raise APIError(f"token ids must be below the embedder's vocabulary size {tokenizer.get_vocab_size()}",
                       param="input")  # fmt: skip
    return str(tokenizer.decode(ids))
