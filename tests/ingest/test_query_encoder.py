"""A question's vector through ONNX Runtime: the same vector as torch's, the export shared with the
document path and made once, the torch model never loaded for questions alone, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lectern.errors import PrecisionUnavailable
from lectern.ingest import onnx_embed
from lectern.ingest.embed import LOADS, SentenceTransformerEmbedder, packaged_minilm_path
from lectern.ingest.settings import EmbedSettings

QUESTIONS = [
    "Who was the first president of the United States?",
    "In what year did Alessandro Volta invent the battery?",
    "What does the word Ghana mean?",
    "x",
    "How is a sparse matrix stored in R, and which package provides it? " * 12,  # past the window
]


def embedder(cache: Path | None, **settings: object) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(packaged_minilm_path(), EmbedSettings(device="cpu", **settings), cache)


def test_onnx_required_without_onnxruntime_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_embed, "onnx_version", lambda: None)
    with pytest.raises(PrecisionUnavailable, match=r"ingest.embed.query_backend = 'onnx'.*not installed"):
        embedder(tmp_path, query_backend="onnx").embed_query("a question")
    assert embedder(tmp_path)._query.get() is None  # auto falls back to torch, quietly
    with pytest.raises(PrecisionUnavailable, match="no user cache"):
        embedder(None, query_backend="onnx").embed_query("a question")


def test_a_model_that_is_not_a_bert_keeps_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_embed, "bert_shape", lambda folder: None)
    assert embedder(tmp_path)._query.get() is None
    with pytest.raises(PrecisionUnavailable, match="not a BERT model"):
        embedder(tmp_path, query_backend="onnx")._query.get()


@pytest.mark.e2e
def test_onnx_query_matches_torch_and_exports_once(tmp_path: Path) -> None:
    """Real MiniLM: the ONNX vector equals torch's fp32 vector (cosine >= 0.9999), also past the
    window; a second embedder on the same cache reuses the export; questions alone never load the
    torch model; `query_backend = torch` gives the same vector through the lean torch pass."""
    onnx_embed.EXPORTS.clear()
    LOADS.clear()
    fast = embedder(tmp_path, precision="fp32")
    got = np.stack([fast.embed_query(q) for q in QUESTIONS])
    assert onnx_embed.EXPORTS["export"] == 1 and LOADS["query-onnx"] == len(QUESTIONS)
    assert LOADS["sentence-transformers"] == 0  # no torch model for questions
    embedder(tmp_path, precision="fp32").embed_query(QUESTIONS[0])
    assert onnx_embed.EXPORTS["export"] == 1  # the export is reused

    lean = embedder(tmp_path, precision="fp32", query_backend="torch")
    reference = lean.embed(QUESTIONS)  # sentence-transformers' encode, fp32
    lean_vectors = np.stack([lean.embed_query(q) for q in QUESTIONS])
    assert LOADS["query-onnx"] == len(QUESTIONS) + 1  # the torch backend did not use ONNX
    assert np.all(np.sum(got * reference, axis=1) >= 0.9999)
    assert np.all(np.sum(lean_vectors * reference, axis=1) >= 0.9999)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5) and got.dtype == np.float32
