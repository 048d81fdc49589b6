"""ingest.distill builds the fast profile's static model as model2vec's `distill` does, step by step:
the same vocabulary and tokenizer, the same piece vectors as transformers' BertModel, the same PCA
and SIF weights. (The whole table, built both ways on the real MiniLM, agreed to a cosine of
0.9999997 per row: docs/BENCHMARKS.md.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lectern.ingest import distill
from lectern.ingest.embed_base import packaged_minilm_path
from lectern.ingest.static_model import StaticTable

MINILM = packaged_minilm_path()


def _minilm_tokenizer() -> dict:
    return json.loads((MINILM / "tokenizer.json").read_text(encoding="utf-8"))


def test_the_tokenizer_is_the_one_model2vec_writes() -> None:
    """model2vec's own tokenizer surgery (skeletoken), as its distill_from_model runs it."""
    from model2vec.tokenizer import clean_and_create_vocabulary
    from skeletoken import TokenizerModel
    from transformers import AutoTokenizer

    original = TokenizerModel.from_transformers_tokenizer(AutoTokenizer.from_pretrained(str(MINILM)))
    model = original.prune_added_tokens().deep_copy()
    theirs = json.loads(
        clean_and_create_vocabulary(model, [], token_remove_regex=distill.UNUSED).to_tokenizer().to_str()
    )
    tokenizer = _minilm_tokenizer()
    vocabulary = distill.static_vocabulary(tokenizer)
    assert distill.static_tokenizer(tokenizer, vocabulary) == theirs
    assert len(vocabulary) == 30522 - 994 - 3  # less [unused0-993], [CLS], [SEP] and [MASK]
    assert vocabulary[:2] == [("[PAD]", 0), ("[UNK]", 100)]


def test_piece_vectors_are_bertmodels_mean_over_cls_piece_sep() -> None:
    import torch
    from transformers import AutoModel

    ids = [1996, 2003, 7592, 29612, 100, 0, 1012]
    ours = distill.piece_vectors(MINILM, ids, 101, 102)
    model = AutoModel.from_pretrained(str(MINILM)).eval()
    batch = torch.tensor([[101, i, 102] for i in ids])
    with torch.inference_mode():
        hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
    np.testing.assert_allclose(ours, hidden.mean(dim=1).numpy(), atol=2e-5)


def test_pca_and_sif_weights_are_model2vecs() -> None:
    from model2vec.distill.inference import apply_pca, compute_weights

    x = np.random.default_rng(0).standard_normal((500, 24)).astype(np.float32) * np.linspace(3, 0.1, 24)
    np.testing.assert_allclose(distill.pca(x, 8), apply_pca(x.copy(), 8), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(distill.sif_weights(500), compute_weights(500, 1e-4))
    # more dimensions than x has: all of them, rotated; at least as many as its rows: x as it is
    np.testing.assert_allclose(distill.pca(x, 30), apply_pca(x.copy(), 30), rtol=1e-4, atol=1e-4)
    assert distill.pca(x, 30).shape == (500, 24)
    few = x[:10]
    assert distill.pca(few, 16) is few and apply_pca(few.copy(), 16).shape == (10, 24)


def test_the_saved_folder_reads_with_the_lean_reader_and_with_model2vec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full build on a vocabulary cut to 600 pieces (the layout does not depend on its size)."""
    from model2vec import StaticModel

    full = distill.static_vocabulary
    monkeypatch.setattr(distill, "static_vocabulary", lambda tokenizer: full(tokenizer)[:600])
    distill.distil(MINILM, tmp_path / "m", pca_dims=16, progress=False)
    texts = ["a b c", "x, y; z!", "(1 + 2) = 3"]  # pieces among the first 600
    lean = StaticTable(tmp_path / "m")
    theirs = StaticModel.from_pretrained(str(tmp_path / "m")).encode(texts, max_length=None)
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    assert lean.dim == 16
    np.testing.assert_allclose(lean.encode(texts), theirs, atol=1e-3)  # model2vec averages in float16


def test_only_bert_wordpiece_is_distilled() -> None:
    tokenizer = _minilm_tokenizer()
    tokenizer["model"]["type"] = "BPE"
    with pytest.raises(ValueError, match="WordPiece"):
        distill.static_vocabulary(tokenizer)
