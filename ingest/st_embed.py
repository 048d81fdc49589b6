"""A sentence-transformers model as an embedder (the accurate profile's MiniLM, or any such folder),
in the precision that runs best here: fp16 on CUDA; on a CPU fp32 or bf16 autocast in torch, or ONNX
Runtime fp32 or int8 (ingest.onnx_embed), as set or as measured once per machine (ingest.cpu_precision)."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import threading
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lectern.errors import PrecisionUnavailable
from lectern.ingest.atomic import read_json
from lectern.ingest.embed_base import LOADS, MINILM_WINDOW, OnFirstUse, model_name, normalise, say
from lectern.ingest.onnx_embed import ONNX_PRECISIONS
from lectern.ingest.settings import EmbedSettings
from lectern.ingest.wordpiece import HFTokenizer

if TYPE_CHECKING:
    from lectern.ingest.cpu_precision import Measurement


def _time_torch(folder: Path, texts: list[str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """fp32 torch, and bf16 where this CPU and torch's kernels have it, timed on `texts`: runs in a
    process of its own (SentenceTransformerEmbedder._measure)."""
    from lectern.ingest import cpu_precision

    embedder = SentenceTransformerEmbedder(folder, EmbedSettings(precision="fp32"))
    fp32 = embedder._torch("cpu", "fp32")
    runners = {"fp32": functools.partial(embedder._encode, fp32)}
    if cpu_has_native_bf16():
        runners["bf16"] = functools.partial(embedder._encode, _LoadedST(fp32.model, "cpu", True, "bf16"))
    return cpu_precision.time_runners(runners, texts)


def cpu_has_native_bf16() -> bool:
    """bf16 autocast is 2.5x faster than fp32 where the CPU has bf16 instructions, 5x slower where not."""
    from lectern.ingest.cpu_precision import cpu_info

    flags = cpu_info()[1]
    if not flags & BF16_FLAGS:
        return False
    import torch

    return bf16_native(flags, torch.backends.cpu.get_cpu_capability())


BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def bf16_native(flags: Set[str], torch_capability: str) -> bool:
    """Both must agree: the CPU's flags, and the kernels torch runs (ATEN_CPU_CAPABILITY=avx2 keeps
    torch to AVX2 on any CPU, as on one without AVX-512: bench/ingest_speed.py measures that case so)."""
    return bool(flags & BF16_FLAGS) and torch_capability not in ("DEFAULT", "NO AVX", "AVX2")


def _device(setting: str) -> str:
    if setting != "auto":
        return setting
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        if "+cpu" in importlib.metadata.version("torch"):  # a CPU-only build: no need to import it
            return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class _LoadedST:
    model: Any  # sentence_transformers.SentenceTransformer, or an onnx_embed.OnnxEncoder
    device: str
    bf16: bool
    precision: str  # what runs: fp16 (CUDA), fp32, bf16, onnx-fp32 or onnx-int8


_PLAIN_MODULES = {"Transformer", "Pooling", "Normalize"}


def st_shape(folder: Path) -> tuple[int | None, int | None]:
    """(window, dimension) of a sentence-transformers folder read from its files, without loading it;
    None where the files do not say for sure (a Dense layer, several pooling modes...)."""
    window = read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    try:
        listed = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        listed = []
    modules = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    dimension = None
    pooling = next((m for m, kind in zip(modules, kinds, strict=True) if kind == "Pooling"), None)
    if kinds and set(kinds) <= _PLAIN_MODULES and pooling is not None:
        config = read_json(folder / str(pooling.get("path", "")) / "config.json")
        modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
        if len(modes) == 1 and isinstance(config.get("word_embedding_dimension"), int):
            dimension = config["word_embedding_dimension"]
    return (window if isinstance(window, int) else None), dimension


class SentenceTransformerEmbedder:
    """Any sentence-transformers folder: fp16 on CUDA; on a CPU the precision `ingest.embed.precision`
    names, or with `auto` the one measured fastest on this machine (ingest.cpu_precision): fp32 or
    bf16 autocast in torch, or ONNX Runtime fp32 or int8 (ingest.onnx_embed, the `onnx` extra).

    Measured on MiniLM: bf16 autocast kept cosine to fp32 above 0.999 and ran 2.5x faster on an EPYC
    with avx512_bf16, and slower on a Xeon VM with it; torch dynamic int8 quantization hurt the vectors
    (cosine down to 0.86), ONNX Runtime's per-channel int8 did not (docs/BENCHMARKS.md). The model
    loads on the first `embed`; its window and dimension come from the folder's files when they say.
    Without `models_dir` (the user cache that holds the measurement and the ONNX export), `auto`
    follows the CPU's flags instead.
    """

    def __init__(self, folder: Path, settings: EmbedSettings, models_dir: Path | None = None) -> None:
        self.folder = folder
        self.models_dir = models_dir
        self.batch_size = settings.batch_size
        self._settings = settings
        self._loaded = OnFirstUse(self._load)
        self._query = OnFirstUse(self._query_encoder)
        self._tokenizer = OnFirstUse(lambda: HFTokenizer(folder / "tokenizer.json"))
        window, dimension = st_shape(folder)
        if window is None or dimension is None:  # the files do not say: ask the model
            model = self._loaded.get().model
            window = int(model.max_seq_length or MINILM_WINDOW)
            dimension = int(model.get_embedding_dimension() or 0)
        self._window = window
        self._dimension = dimension
        self._embed_lock = threading.Lock()

    def _load(self) -> _LoadedST:
        device = _device(self._settings.device)
        precision = self._settings.precision
        if precision in ONNX_PRECISIONS:
            if device != "cpu":
                raise PrecisionUnavailable(precision, f"ONNX Runtime runs on the CPU here, not {device}")
            return self._onnx(precision)
        if device != "cpu":
            return self._torch(device, "fp16")
        if precision == "auto":
            return self._auto()
        return self._torch(device, precision)

    def _torch(self, device: str, precision: str) -> _LoadedST:
        from sentence_transformers import SentenceTransformer

        from lectern.ingest.hf_logging import quiet

        quiet()  # no load reports or progress bars on every start
        model = SentenceTransformer(str(self.folder), device=device, local_files_only=True)
        if precision == "fp16":
            model.half()
        LOADS["sentence-transformers"] += 1
        return _LoadedST(model, device, precision == "bf16", precision)

    def _onnx(self, precision: str) -> _LoadedST:
        from lectern.ingest import onnx_embed

        onnx_embed.require_onnx(precision)
        if self.models_dir is None:
            raise PrecisionUnavailable(precision, "no user cache to export the model into")
        folder = onnx_embed.exported(self.folder, self.models_dir, model_name(self.folder), self._window, say)
        encoder = onnx_embed.OnnxEncoder(folder, self.folder / "tokenizer.json", self._window, precision)
        LOADS["onnxruntime"] += 1
        return _LoadedST(encoder, "cpu", False, precision)

    def _auto(self) -> _LoadedST:
        """The precision measured fastest on this CPU (once per machine), or the flags' rule without
        a user cache. What the measurement loaded is kept when it won, and dropped otherwise."""
        if self.models_dir is None:
            return self._torch("cpu", "bf16" if cpu_has_native_bf16() else "fp32")
        from lectern.ingest.cpu_precision import chosen_precision

        loaded: dict[str, _LoadedST] = {}
        choice = chosen_precision(
            model_name(self.folder), self.models_dir, lambda: self._measure(loaded), say
        )
        if choice in loaded:
            return loaded[choice]
        if choice in ONNX_PRECISIONS:
            return self._onnx(choice)
        return self._torch("cpu", choice)

    def _measure(self, loaded: dict[str, _LoadedST]) -> Measurement:
        """Time each precision this machine can run on the same texts (ingest.cpu_precision): torch's
        in a process of its own first, then ONNX Runtime's here. Both in one process peaked at 1.1 GB,
        and an ingest that then ran in ONNX Runtime kept torch's 450 MB to its end."""
        from lectern.ingest import cpu_precision, onnx_embed

        texts = cpu_precision.bench_texts()
        seconds, vectors = cpu_precision.in_child(_time_torch, self.folder, texts)
        if onnx_embed.onnx_version() is not None and onnx_embed.bert_shape(self.folder) is not None:
            try:
                for precision in ONNX_PRECISIONS:
                    loaded[precision] = self._onnx(precision)
            except Exception as err:  # an export that fails leaves torch to run, and says why
                say(f"lectern: ONNX Runtime left out of the choice: {type(err).__name__}: {err}")
                loaded.clear()
        runners = {p: functools.partial(self._encode, loaded[p]) for p in loaded}
        onnx_seconds, onnx_vectors = cpu_precision.time_runners(runners, texts)
        return cpu_precision.decide(seconds | onnx_seconds, vectors | onnx_vectors)

    @property
    def loaded(self) -> bool:
        return self._loaded.ready

    @property
    def device(self) -> str:
        return self._loaded.get().device

    @property
    def bf16(self) -> bool:
        return self._loaded.get().bf16

    @property
    def precision(self) -> str:
        """What runs (loading the model): fp16, fp32, bf16, onnx-fp32 or onnx-int8."""
        return self._loaded.get().precision

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "sentence-transformers", "name": model_name(self.folder), "normalize": True}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._window - 2

    @property
    def tokenizer_file(self) -> str | None:
        return str(self.folder / "tokenizer.json")

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return self._tokenizer.get().offsets(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._embed_lock:  # one forward pass at a time: torch (or ONNX Runtime) uses every core
            return self._encode(self._loaded.get(), texts)

    def _encode(self, loaded: _LoadedST, texts: Sequence[str]) -> np.ndarray:
        autocast: Any = contextlib.nullcontext()
        if loaded.bf16:
            import torch

            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        with autocast:
            vectors = loaded.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return normalise(vectors)

    def _query_encoder(self) -> Any:
        """ONNX Runtime fp32 for one question, where the settings and the machine allow; None: torch.

        A question is one short sequence, where torch's per-operator overhead dominates: on this
        project's 2-core Xeon sentence-transformers' encode took 13-19 ms a question, a bare torch
        pass 11 ms, ONNX Runtime 5 ms on one thread, at a cosine of 0.9999999 to torch's vector
        (bench/query_latency.py). The export is the document path's (ingest.onnx_embed), once per
        machine; the fp32 graph is used whatever the documents' precision, as the most faithful."""
        backend = self._settings.query_backend
        if backend == "torch" or _device(self._settings.device) != "cpu":
            return None
        from lectern.ingest import onnx_embed

        reason = None
        if self.models_dir is None:
            reason = "no user cache to export the model into"
        elif onnx_embed.onnx_version() is None:
            reason = "ONNX Runtime is not installed (pip install 'lectern[onnx]')"
        elif onnx_embed.bert_shape(self.folder) is None:
            reason = f"{self.folder} is not a BERT model with mean pooling"
        else:
            try:
                name = model_name(self.folder)
                folder = onnx_embed.exported(self.folder, self.models_dir, name, self._window, say)
                tokenizer = self.folder / "tokenizer.json"
                threads = self._settings.query_threads or min(2, os.cpu_count() or 1)
                return onnx_embed.OnnxEncoder(
                    folder, tokenizer, self._window, "onnx-fp32", threads=threads, spin=False
                )
            except Exception as err:  # an export that fails leaves torch to answer, and says why
                reason = f"{type(err).__name__}: {err}"
                if backend == "auto":
                    say(f"lectern: questions embedded by torch: no ONNX encoder ({reason})")
        if backend == "onnx":
            raise PrecisionUnavailable(backend, reason, setting="ingest.embed.query_backend")
        return None

    def embed_query(self, text: str) -> np.ndarray:
        """One question: ONNX Runtime fp32 (`_query_encoder`), or else one fp32 torch pass without
        encode()'s batching and without bf16 autocast, which slows one short sequence down."""
        encoder = self._query.get()
        if encoder is not None:
            LOADS["query-onnx"] += 1
            return np.asarray(encoder.encode([text])[0], dtype=np.float32)
        loaded = self._loaded.get()
        if loaded.device != "cpu" or loaded.precision.startswith("onnx"):
            return self.embed([text])[0]
        import torch

        prepare = getattr(loaded.model, "preprocess", None) or loaded.model.tokenize
        features = prepare([text])
        with self._embed_lock, torch.inference_mode():
            vector = loaded.model(features)["sentence_embedding"]
        return normalise(vector.float().numpy())[0]
