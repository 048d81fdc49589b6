"""The optional cross-encoder reranker, on a tiny randomly initialised BERT cross-encoder built in
the test (no cross-encoder ships in a wheel): it loads offline from a folder, reorders by its own
scores, and plugs into the retriever and the Workspace through `retrieval.reranker`."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document

from lectern.errors import ModelNotFound
from lectern.rag.rerank import CrossEncoderReranker

WORDS = [
    "the",
    "a",
    "pump",
    "is",
    "serviced",
    "every",
    "hours",
    "filters",
    "come",
    "in",
    "packs",
    "of",
    "three",
    "warranty",
    "lasts",
    "two",
    "years",
    "how",
    "often",
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("cross-encoder")
    vocab = folder / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "500", "?", "."]) + "\n"
    )
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


DOCS = [
    Document(page_content="Filters come in packs of three.", metadata={"chunk_id": "a", "score": 0.9}),
    Document(page_content="The pump is serviced every 500 hours.", metadata={"chunk_id": "b", "score": 0.8}),
    Document(page_content="The warranty lasts two years.", metadata={"chunk_id": "c", "score": 0.7}),
]


def test_reranks_by_its_own_scores_and_keeps_k(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(tiny_cross_encoder)
    question = "How often is the pump serviced?"
    scores = reranker.scores(question, [d.page_content for d in DOCS])
    assert len(scores) == 3 and len(set(scores)) == 3  # a random model still tells them apart
    top = reranker.rerank(question, DOCS, k=2)
    expected = sorted(range(3), key=lambda i: -scores[i])[:2]
    assert [d.metadata["chunk_id"] for d in top] == [DOCS[i].metadata["chunk_id"] for i in expected]
    assert [d.metadata["rerank_score"] for d in top] == [scores[i] for i in expected]
    assert top[0].metadata["score"] == DOCS[expected[0]].metadata["score"]  # retrieval score kept
    assert reranker.rerank(question, [], k=2) == []


def test_a_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="cross-encoder"):
        CrossEncoderReranker(tmp_path)


def test_workspace_retriever_reranks_more_candidates(tiny_cross_encoder: Path, settings: object) -> None:
    from lectern.rag.workspace import Workspace
    from tests.conftest import SAMPLE_DOCS, SAMPLE_EXCLUDE

    ws = Workspace(collection="rr", settings=settings)  # type: ignore[arg-type]
    ws.settings.ingest.exclude = list(SAMPLE_EXCLUDE)
    ws.ingest([SAMPLE_DOCS])
    plain = ws.retriever(k=8).invoke("Who designed the tower?")
    ws.settings.retrieval.reranker = str(tiny_cross_encoder)
    ws.settings.retrieval.rerank_candidates = 8
    reranked = ws.retriever(k=3).invoke("Who designed the tower?")
    assert len(reranked) == 3 and all("rerank_score" in d.metadata for d in reranked)
    # the three it kept are the best three of the same eight candidates, by the cross-encoder
    reranker = CrossEncoderReranker(tiny_cross_encoder)
    scores = reranker.scores("Who designed the tower?", [d.page_content for d in plain])
    best = sorted(range(len(plain)), key=lambda i: (-scores[i], i))[:3]
    assert [d.metadata["chunk_id"] for d in reranked] == [plain[i].metadata["chunk_id"] for i in best]
