"""The real-model tests of tests/ingest/test_ray_runner.py: every test that loads a packaged model lives in
tests/integration/, whose conftest marks it e2e."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lectern.ingest.embed import build_embedder
from lectern.ingest.embed_base import Embedder
from lectern.ingest.faiss_store import Collection
from lectern.ingest.pipeline import ingest
from lectern.ingest.settings import EmbedSettings
from lectern.rag.retrieval import Searcher
from lectern.rag.settings import RetrievalSettings
from tests.ingest import test_ray_runner as unit
from tests.ingest.test_ray_runner import outcome, rows, settings, with_bad_files

ray_local = unit.ray_local  # the unit tests' fixture, shared


QUERIES = (
    "Who built the Marrow Point lighthouse?",
    "How long is the Brennock canal?",
    "What cheese is made in Kestrel Valley?",
    "How do I sync Quillmate notes?",
)


def vectors(col_path: Path) -> np.ndarray:
    col = Collection.open(col_path)
    try:
        blobs = col.db.execute("SELECT vector FROM chunks ORDER BY id").fetchall()
        return np.vstack([np.frombuffer(b, dtype=np.float32) for (b,) in blobs])
    finally:
        col.close()


def searches(col_path: Path, embedder: Embedder) -> list[list[str]]:
    col = Collection.open(col_path)
    try:
        searcher = Searcher(col, embedder, RetrievalSettings())
        return [[h.chunk.chunk_id for h in searcher.search(q, k=5)] for q in QUERIES]
    finally:
        col.close()


@pytest.mark.ray
@pytest.mark.e2e
def test_ray_matches_local_chunk_for_chunk_with_minilm(
    ray_local: None, tmp_path: Path, models_dir: Path
) -> None:
    """The accurate profile (MiniLM) on sample_docs plus two bad files: the same report, the same rows
    (ids, texts, contexts, BM25 terms), vectors within float noise and the same top 5 for each query."""
    docs = with_bad_files(tmp_path)
    embedder = build_embedder(EmbedSettings(profile="accurate"), models_dir)
    local = ingest([docs], tmp_path / "local", embedder, settings("local"))
    on_ray = ingest([docs], tmp_path / "ray", embedder, settings("ray"))

    assert outcome(on_ray) == outcome(local)
    assert outcome(local)["truncated.pdf"][0] == outcome(local)["binary.txt"][0] == "failed"
    assert len(local.added) == 4 and local.chunks > 0
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    gap = np.abs(vectors(tmp_path / "ray") - vectors(tmp_path / "local")).max()
    assert gap < 1e-5, gap  # the same batches (one file a call, the local slices): float noise at most
    assert searches(tmp_path / "ray", embedder) == searches(tmp_path / "local", embedder)
