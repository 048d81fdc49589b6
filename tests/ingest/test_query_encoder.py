"""A question's vector through ONNX Runtime: the same vector as torch's, exported once per machine,
and the torch model never loaded for questions alone; the plain-stack rule and the clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lectern.errors import EmbedderNotFound
from lectern.ingest import query_encoder
from lectern.ingest.embed import LOADS, SentenceTransformerEmbedder, packaged_minilm_path
from lectern.ingest.query_encoder import plain_pooling
from lectern.ingest.settings import EmbedSettings

QUESTIONS = [
    "Who was the first president of the United States?",
    "In what year did Alessandro Volta invent the battery?",
    "What does the word Ghana mean?",
    "x",
    "How is a sparse matrix stored in R, and which package provides it? " * 12,  # past the window
]


def write_stack(folder: Path, types: list[str], pooling: dict[str, bool]) -> Path:
    folder.mkdir()
    modules = [
        {"idx": i, "name": str(i), "path": f"{i}_M" if i else "", "type": t} for i, t in enumerate(types)
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_M").mkdir()
    (folder / "1_M" / "config.json").write_text(json.dumps(pooling))
    return folder


def test_plain_pooling(tmp_path: Path) -> None:
    assert plain_pooling(packaged_minilm_path()) == "mean"
    t, p, n = query_encoder.PLAIN_MODULES
    assert plain_pooling(write_stack(tmp_path / "cls", [t, p], {"pooling_mode_cls_token": True})) == "cls"
    dense = write_stack(
        tmp_path / "dense", [t, p, "sentence_transformers.models.Dense"], {"pooling_mode_mean_tokens": True}
    )
    assert plain_pooling(dense) is None
    both = write_stack(
        tmp_path / "both", [t, p, n], {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}
    )
    assert plain_pooling(both) is None
    assert plain_pooling(tmp_path / "missing") is None


def test_onnx_required_without_onnxruntime_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_encoder, "onnx_available", lambda: False)
    strict = SentenceTransformerEmbedder(
        packaged_minilm_path(), EmbedSettings(device="cpu", query_backend="onnx"), tmp_path
    )
    with pytest.raises(EmbedderNotFound, match=r"query_backend = onnx.*onnxruntime is not installed"):
        strict.embed_query("a question")
    auto = SentenceTransformerEmbedder(packaged_minilm_path(), EmbedSettings(device="cpu"), tmp_path)
    assert auto._query.get() is None  # auto falls back to torch, quietly
    assert not query_encoder.EXPORTS


@pytest.mark.e2e
def test_onnx_query_matches_torch_and_exports_once(tmp_path: Path) -> None:
    """Real MiniLM: the ONNX vector equals torch's fp32 vector (cosine >= 0.9999), also past the
    window; a second embedder on the same cache reuses the export; questions alone never load the
    torch model; `query_backend = torch` gives the same vector through the lean torch pass."""
    query_encoder.EXPORTS.clear()
    LOADS.clear()
    onnx = SentenceTransformerEmbedder(packaged_minilm_path(), EmbedSettings(device="cpu"), tmp_path)
    got = np.stack([onnx.embed_query(q) for q in QUESTIONS])
    assert len(query_encoder.EXPORTS) == 1 and LOADS["query-onnx"] == len(QUESTIONS)
    assert LOADS["sentence-transformers"] == 0  # no torch model for questions
    again = SentenceTransformerEmbedder(packaged_minilm_path(), EmbedSettings(device="cpu"), tmp_path)
    again.embed_query(QUESTIONS[0])
    assert len(query_encoder.EXPORTS) == 1  # the export is reused

    torch_settings = EmbedSettings(device="cpu", precision="fp32", query_backend="torch")
    lean = SentenceTransformerEmbedder(packaged_minilm_path(), torch_settings, tmp_path)
    reference = lean.embed(QUESTIONS)  # sentence-transformers' encode, fp32
    lean_vectors = np.stack([lean.embed_query(q) for q in QUESTIONS])
    assert LOADS["query-onnx"] == len(QUESTIONS) + 1  # the torch backend did not use ONNX
    assert np.all(np.sum(got * reference, axis=1) >= 0.9999)
    assert np.all(np.sum(lean_vectors * reference, axis=1) >= 0.9999)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5) and got.dtype == np.float32
