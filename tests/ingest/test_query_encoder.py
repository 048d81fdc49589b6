"""A question's vector through ONNX Runtime: the same vector as torch's, the export shared with the
document path and made once, the torch model never loaded for questions alone, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lectern.errors import PrecisionUnavailable
from lectern.ingest import onnx_embed
from lectern.ingest.embed_base import packaged_minilm_path
from lectern.ingest.settings import EmbedSettings
from lectern.ingest.st_embed import SentenceTransformerEmbedder


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
