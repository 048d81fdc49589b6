"""The real-model tests of tests/ingest/test_query_encoder.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lectern.ingest import onnx_embed
from lectern.ingest.embed_base import LOADS
from tests.ingest.test_query_encoder import embedder

QUESTIONS = [
    "Who was the first president of the United States?",
    "In what year did Alessandro Volta invent the battery?",
    "What does the word Ghana mean?",
    "x",
    "How is a sparse matrix stored in R, and which package provides it? " * 12,  # past the window
]


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
