"""The fast profile's static model: MiniLM distilled into one vector per word piece.

    distil(minilm_folder, out_folder, pca_dims=256)   # about 15-20 s on 2 cores, once per machine

model2vec's recipe (its `distill` with the defaults lectern used): every piece of MiniLM's vocabulary,
less the unused and special ones, goes through the transformer alone as `[CLS] piece [SEP]`; the mean
of the three output vectors is the piece's vector; PCA takes them to `pca_dims`, and each row is
scaled by a SIF weight from its rank (ids follow frequency, Zipf's law); the table is kept in float16.
The folder is model2vec's own layout (static_model.StaticTable reads it, and so does model2vec).

model2vec runs the transformer through transformers, and its tokenizer surgery through skeletoken,
which imports transformers too: about 950 MB at the build's peak, as much as the whole tutorial
pipeline. Here the six BERT layers are a few lines of torch over the safetensors weights, and the
tokenizer is edited as JSON: the table is model2vec's to a cosine of 0.9999 (tests/ingest/
test_distill.py compares each step with model2vec's), at about half the memory.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 256  # pieces per forward pass, as model2vec
SIF = 1e-4  # model2vec's default SIF coefficient
UNUSED = re.compile(r"\[unused\d+\]")  # model2vec's default token_remove_pattern


def static_vocabulary(tokenizer: dict[str, Any]) -> list[tuple[str, int]]:
    """(piece, MiniLM id) for every piece the static model keeps, in id order: all but the unused
    ones and the special tokens other than padding and the unknown piece (which model2vec keeps
    because its tokenizer still uses them)."""
    model = tokenizer["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"only a WordPiece tokenizer can be distilled here, not {model.get('type')}")
    keep_special = {model.get("unk_token"), _pad_token(tokenizer)}
    special = {t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    pieces = sorted(model["vocab"].items(), key=lambda item: item[1])
    return [
        (piece, i)
        for piece, i in pieces
        if not UNUSED.fullmatch(piece) and (piece not in special or piece in keep_special)
    ]


def _pad_token(tokenizer: dict[str, Any]) -> str:
    return str((tokenizer.get("padding") or {}).get("pad_token", "[PAD]"))


def static_tokenizer(tokenizer: dict[str, Any], vocabulary: list[tuple[str, int]]) -> dict[str, Any]:
    """MiniLM's tokenizer.json for the static vocabulary, renumbered, as model2vec writes it: no
    post-processor (no [CLS]/[SEP] around a text), only the added tokens it kept, model2vec's
    truncation and padding settings."""
    renumbered = {piece: new for new, (piece, _) in enumerate(vocabulary)}
    added = []
    for token in tokenizer.get("added_tokens", []):
        if token["content"] in renumbered:
            fields = {
                k: token[k] for k in ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
            }
            added.append({"id": renumbered[token["content"]], **fields})
    pad = _pad_token(tokenizer)
    return {
        "version": tokenizer.get("version", "1.0"),
        "truncation": {"direction": "Right", "max_length": 512, "strategy": "LongestFirst", "stride": 0},
        "padding": {
            "strategy": {"Fixed": 0},
            "direction": "Right",
            "pad_to_multiple_of": None,
            "pad_id": renumbered.get(pad, 0),
            "pad_type_id": 0,
            "pad_token": pad,
        },
        "added_tokens": added,
        "normalizer": tokenizer.get("normalizer"),
        "pre_tokenizer": tokenizer.get("pre_tokenizer"),
        "post_processor": None,
        "decoder": tokenizer.get("decoder"),
        "model": {**tokenizer["model"], "vocab": renumbered},
    }


def piece_vectors(
    source: Path, ids: list[int], cls: int, sep: int, progress: Callable[[int], None] | None = None
) -> np.ndarray:
    """The mean of BERT's last hidden states over `[CLS] piece [SEP]`, for each piece id: float32 rows."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    weights = {
        k.removeprefix("bert."): v.float() for k, v in load_file(str(source / "model.safetensors")).items()
    }
    bert = _Bert(weights, config)
    out = np.empty((len(ids), int(config["hidden_size"])), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), BATCH):
            batch = torch.tensor([[cls, i, sep] for i in ids[start : start + BATCH]], dtype=torch.long)
            out[start : start + len(batch)] = bert(batch).mean(dim=1).numpy()
            if progress is not None:
                progress(len(batch))
    return np.nan_to_num(out)


class _Bert:
    """BertModel's forward pass (post-norm layers, GELU, absolute positions, token type 0, no padding)."""

    def __init__(self, w: dict[str, Any], config: dict[str, Any]) -> None:
        if (
            config.get("hidden_act", "gelu") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError("only BERT with GELU and absolute positions can be distilled here")
        self.w = w
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))

    def _linear(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _norm(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F

        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def __call__(self, ids: Any) -> Any:
        import torch
        import torch.nn.functional as F

        w, (batch, length) = self.w, ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        size = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, length, self.heads, size).transpose(1, 2)

            q, k, v = (heads(self._linear(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(size)
            context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, -1)
            x = self._norm(
                self._linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm"
            )
            hidden = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(self._linear(hidden, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        return x


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """model2vec's PCA: eigenvectors of the covariance, largest first, each component's sign chosen
    so that its largest score is positive. More dimensions than `x` has: all of them (a rotation);
    at least as many as its rows: `x` as it is."""
    dims = min(dims, x.shape[1])
    if dims >= x.shape[0]:
        return x
    centred = x - x.mean(axis=0)
    cov = (centred.T @ centred) / (x.shape[0] - 1)
    _, vectors = np.linalg.eigh(cov)
    components = vectors[:, ::-1][:, :dims].T
    scores = centred @ components.T
    largest = np.argmax(np.abs(scores), axis=0)
    return scores * np.sign(scores[largest, range(scores.shape[1])])


def sif_weights(n: int, coefficient: float = SIF) -> np.ndarray:
    """A weight per rank: frequent pieces (low ids) weigh less, as in SIF; frequencies from Zipf's law."""
    inv_rank = 1 / np.arange(2, n + 2)
    return coefficient / (coefficient + inv_rank / inv_rank.sum())


def distil(source: Path, folder: Path, pca_dims: int = 256, progress: bool = True) -> None:
    """Distil the BERT sentence-transformer in `source` into a static model saved in `folder`."""
    from safetensors.numpy import save_file

    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = static_vocabulary(tokenizer)
    vocab = tokenizer["model"]["vocab"]
    bar = _bar(len(vocabulary)) if progress else None
    try:
        vectors = piece_vectors(
            source, [i for _, i in vocabulary], vocab["[CLS]"], vocab["[SEP]"], bar.update if bar else None
        )
    finally:
        if bar is not None:
            bar.close()
    table = (pca(vectors, pca_dims) * sif_weights(len(vectors))[:, None]).astype(np.float16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": table}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text(
        json.dumps(static_tokenizer(tokenizer, vocabulary)), encoding="utf-8"
    )
    config = {
        "model_type": "model2vec",
        "architectures": ["StaticModel"],
        "tokenizer_name": str(source),
        "apply_pca": pca_dims,
        "sif_coefficient": SIF,
        "hidden_dim": int(table.shape[1]),
        "seq_length": 1000000,
        "normalize": True,
        "pooling": "mean",
        "max_length": 512,
        "embedding_dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=4), encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"},
        {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=4), encoding="utf-8")


def _bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="Encoding word pieces", unit=" pieces")
