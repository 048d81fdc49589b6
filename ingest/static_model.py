"""A model2vec static model, read and run without importing model2vec.

A static model is a table with one vector per word piece and a tokenizer: a text's vector is the mean
of its pieces' rows. model2vec itself takes 1.2-1.5 s to import and load on 2 cores (its model-card and
hub modules come with it), as long as embedding a whole 677-page corpus takes once loaded; reading the
table with safetensors and tokenizing with `tokenizers` (both already loaded for chunking) takes
about 0.05 s. The vectors are model2vec's `encode(texts, max_length=None)`, normalised, except that the
mean is taken in float32 (model2vec rounds it to the table's float16): cosine to model2vec's >= 0.9999,
which a test checks. Folders in another layout load through model2vec (`load_static_model`).

`StaticEmbedder` is the fast profile's embedder over such a model; its model is MiniLM distilled
once per machine (`distilled_minilm`, ingest.distill).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lectern.errors import EmbedderNotFound
from lectern.ingest.atomic import atomic_folder, read_json
from lectern.ingest.cpu_precision import in_child
from lectern.ingest.embed_base import (
    LOADS,
    MINILM_WINDOW,
    OnFirstUse,
    model_name,
    normalise,
    packaged_minilm_path,
    say,
)
from lectern.ingest.wordpiece import HFTokenizer


class StaticEncoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 rows, one per text (zeros for a text with no known piece)."""
        ...


class StaticTable:
    """The plain model2vec layout: `model.safetensors` (`embeddings`, optional `weights` and
    `mapping` from vocabulary quantization) and `tokenizer.json`, as `StaticModel.save_pretrained`
    writes it."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        with safe_open(str(folder / "model.safetensors"), framework="numpy") as tensors:
            names = set(tensors.keys())
            # float32 once (30 MB for MiniLM's vocabulary): numpy converts float16 slowly, per gather
            self.table = tensors.get_tensor("embeddings").astype(np.float32)
            weights = tensors.get_tensor("weights") if "weights" in names else None
            self.weights = None if weights is None else weights.astype(np.float32)
            self.mapping = tensors.get_tensor("mapping") if "mapping" in names else None
        self.dim = int(self.table.shape[1])
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.no_padding()  # as model2vec does; its truncation (if any) is kept, as there
        self.unk_id = _unk_id(self._tokenizer)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return self.encode_ids([np.asarray(e.ids, dtype=np.int64) for e in encodings])

    def encode_ids(self, texts: Sequence[np.ndarray]) -> np.ndarray:
        """Texts already cut into this tokenizer's ids (a negative id: a piece the table lacks)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # one small gather per text stays in cache: 10x faster than one gather of the whole batch
        for i, ids in enumerate(texts):
            known = ids >= 0
            if self.unk_id is not None:  # model2vec drops unknown pieces: they carry no meaning
                known &= ids != self.unk_id
            ids = ids[known]
            if not len(ids):
                continue
            rows = self.table[ids if self.mapping is None else self.mapping[ids]]
            if self.weights is not None:
                rows = rows * self.weights[ids][:, None]
            out[i] = rows.mean(axis=0)
        return normalise(out)

    def ids_from(self, tokenizer_file: str) -> np.ndarray:
        """For each id of another tokenizer, this tokenizer's id of the same piece, or -1: how a
        chunker's pieces (MiniLM's tokenizer, for the fast profile) are embedded without cutting the
        text again. model2vec's distillation drops MiniLM's unused and special pieces and renumbers
        the rest; the cut is the same."""
        from tokenizers import Tokenizer

        other = Tokenizer.from_file(tokenizer_file).get_vocab(with_added_tokens=True)
        own = self._tokenizer.get_vocab(with_added_tokens=True)
        out = np.full(max(other.values(), default=-1) + 1, -1, dtype=np.int64)
        for piece, i in other.items():
            out[i] = own.get(piece, -1)
        return out


class _Model2VecModel:
    """Any other folder model2vec can read, through model2vec itself."""

    def __init__(self, folder: Path) -> None:
        from model2vec import StaticModel

        self._model = StaticModel.from_pretrained(str(folder))
        self.dim = int(self._model.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(self._model.encode(list(texts), max_length=None, batch_size=4096))


def is_plain(folder: Path) -> bool:
    """model2vec's own layout, which StaticTable reads. An unreadable table is an EmbedderNotFound
    that names the file, not a stack trace from safetensors."""
    weights = folder / "model.safetensors"
    if not (weights.is_file() and (folder / "tokenizer.json").is_file()):
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as tensors:
            return "embeddings" in set(tensors.keys())
    except Exception as err:  # safetensors raises its own error types for a damaged header
        detail = f"cannot read {weights} ({err}); delete {folder} and it is built again on next use"
        raise EmbedderNotFound(str(folder), detail) from err


def load_static_model(folder: Path) -> StaticEncoder:
    """The lean reader for model2vec's own layout, model2vec for anything else."""
    return StaticTable(folder) if is_plain(folder) else _Model2VecModel(folder)


def _unk_id(tokenizer: Any) -> int | None:
    """The unknown piece's id, found as model2vec finds it (WordPiece, BPE, word level; Unigram)."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):
        return None if model.unk_token is None else tokenizer.token_to_id(model.unk_token)
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")
    return int(unk) if unk is not None else None


class StaticEmbedder:
    """A model2vec static model: one table lookup and a mean per text, about 100x faster than MiniLM.
    The table loads on the first `embed`; the dimension is in the folder's config.json."""

    def __init__(self, folder: Path, tokenizer_folder: Path) -> None:
        self.folder = folder
        self._tokenizer_file = tokenizer_folder / "tokenizer.json"
        self._tokenizer = OnFirstUse(lambda: HFTokenizer(self._tokenizer_file))
        self._model = OnFirstUse(self._load)
        dimension = read_json(folder / "config.json").get("hidden_dim")
        self._dimension = int(dimension) if isinstance(dimension, int) else int(self._model.get().dim)

    def _load(self) -> StaticEncoder:
        model = load_static_model(self.folder)
        LOADS["model2vec"] += 1
        return model

    @property
    def loaded(self) -> bool:
        return self._model.ready

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "model2vec", "name": model_name(self.folder), "normalize": True}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return MINILM_WINDOW - 2  # chunks keep MiniLM's size so both profiles cut alike

    @property
    def tokenizer_file(self) -> str | None:
        return str(self._tokenizer_file)

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return self._tokenizer.get().offsets(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._model.get().encode(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    @functools.cached_property
    def table_folder(self) -> str | None:
        """The folder a parse worker reads to embed chunks from the pieces it cut them with (one
        tokenizer pass instead of two), when the lean reader reads it (`static_model.is_plain`)."""
        return str(self.folder) if is_plain(self.folder) else None


def distilled_minilm(models_dir: Path, pca_dims: int = 256, announce: Callable[[str], None] = say) -> Path:
    """MiniLM distilled into a static model2vec-layout embedder (ingest.distill: about 15-20 s on 2
    cores, no data), built once in `models_dir`, the user-level cache that every data dir shares
    (Settings.models_dir).

    A file lock makes a second process wait for the first one's build instead of repeating it; while it
    builds, one line says so and a progress bar runs on stderr.
    """
    source = packaged_minilm_path()
    target = models_dir / f"minilm-m2v-{pca_dims}-{model_name(source).split('@')[1]}"
    if (target / "config.json").is_file():
        return target
    from filelock import FileLock

    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # built by another process while this one waited
            return target
        announce(f"lectern: building the fast profile's static model, once for this machine, in {target}")
        with atomic_folder(target, done="config.json") as tmp:
            # in a process of its own, so that the ingest that asked for the model does not keep
            # torch's memory to its end beside its parse workers
            in_child(_distill_into, source, pca_dims, tmp)
        LOADS["distill"] += 1
    return target


def _distill_into(source: Path, pca_dims: int, folder: Path) -> None:
    """ingest.distill of `source`, saved in `folder` (runs in a child: distilled_minilm)."""
    from lectern.ingest.distill import distil

    distil(source, folder, pca_dims)
