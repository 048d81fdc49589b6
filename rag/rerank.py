"""An optional cross-encoder reranker: read the question and each candidate passage together and
reorder the candidates by that score, keeping the best k.

    reranker = CrossEncoderReranker("/models/my-cross-encoder")       # a local folder, offline
    docs = reranker.rerank("Who designed the tower?", candidates, k=5)

No cross-encoder ships in a PyPI wheel here, so none is on by default: set `retrieval.reranker` to
a sentence-transformers CrossEncoder folder you have (for example ms-marco-MiniLM-L-6-v2, saved
once) and `retrieval.rerank_candidates` to how many hybrid hits it reorders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from lectern.errors import ModelNotFound


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder loaded from a local folder (never from a hub)."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelNotFound(str(path), "not a cross-encoder folder (no config.json)")
        from sentence_transformers import CrossEncoder

        from lectern.ingest.hf_logging import quiet

        quiet()

        self.path = folder
        self.batch_size = batch_size
        self.model: Any = CrossEncoder(str(folder), device=device, local_files_only=True)

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        pairs = [(question, p) for p in passages]
        raw = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(x) for x in raw]

    def rerank(self, question: str, docs: Sequence[Document], k: int) -> list[Document]:
        """The k best documents by the cross-encoder's score (ties keep the retrieval order); each
        keeps its retrieval score and gets `rerank_score`."""
        scored = self.scores(question, [d.page_content for d in docs])
        order = sorted(range(len(docs)), key=lambda i: (-scored[i], i))[:k]
        out = []
        for i in order:
            doc = docs[i]
            out.append(
                Document(
                    page_content=doc.page_content,
                    id=doc.id,
                    metadata={**doc.metadata, "rerank_score": scored[i]},
                )
            )
        return out
