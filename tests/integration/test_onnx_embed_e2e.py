"""The real-model tests of tests/ingest/test_onnx_embed.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lectern.ingest import cpu_precision, onnx_embed
from lectern.ingest.embed_base import model_name
from tests.ingest.test_onnx_embed import MINILM, st


@pytest.mark.e2e
def test_real_minilm_through_onnx_runtime_matches_torch(tmp_path: Path) -> None:
    """Export once into a fresh user cache, then fp32 and int8 through ONNX Runtime against torch
    fp32 on real passages; a second embedder reuses the export."""
    pytest.importorskip("onnxruntime")
    texts = [*cpu_precision.bench_texts(4), "river otters", "What do the otters of Glenmore eat at dawn?"]
    torch_fp32 = st(tmp_path, precision="fp32").embed(texts)
    before = onnx_embed.EXPORTS["export"]
    vectors = {p: st(tmp_path, precision=p).embed(texts) for p in ("onnx-fp32", "onnx-int8")}
    assert onnx_embed.EXPORTS["export"] == before + 1
    cosine = {p: np.sum(v * torch_fp32, axis=1) for p, v in vectors.items()}
    assert cosine["onnx-fp32"].min() > 0.9999
    assert cosine["onnx-int8"].mean() > 0.99 and cosine["onnx-int8"].min() > 0.98
    assert np.allclose(np.linalg.norm(vectors["onnx-int8"], axis=1), 1.0, atol=1e-5)
    seven_bit = onnx_embed.needs_reduced_range(cpu_precision.cpu_info()[1])
    folder = onnx_embed.export_folder(tmp_path / "cache", model_name(MINILM), reduce_range=seven_bit)
    assert json.loads((folder / onnx_embed.DONE).read_text())["window"] == 256
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model-fp32.onnx", "model-int8.onnx"]
