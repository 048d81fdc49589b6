"""A sentence-transformers BERT (the packaged MiniLM) run by ONNX Runtime on the CPU, fp32 or int8.

The model is exported once per machine into the user's cache (Settings.models_dir, beside the
fast profile's static model): torch.onnx's TorchScript exporter, ONNX Runtime's BERT fusions
(attention, layer norms, GELU), then dynamic int8 quantization with per-channel weights. Mean
pooling and normalisation are inside the graph; the tokenizer, window and batching are the torch
path's, so both compute the same vectors (cosine 1.0 in fp32). Nothing is downloaded or pickled.
Needs the `onnx` extra (onnxruntime, onnx); torch only while exporting.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence, Set
from pathlib import Path
from typing import Any

import numpy as np

from lectern.errors import PrecisionUnavailable
from lectern.ingest.atomic import atomic_folder
from lectern.ingest.cpu_precision import cpu_info, in_child

ONNX_PRECISIONS = ("onnx-fp32", "onnx-int8")
MODEL_FILES = {"onnx-fp32": "model-fp32.onnx", "onnx-int8": "model-int8.onnx"}
DONE = "export.json"
EXPORTS: Counter[str] = Counter()
"""Models exported ("export") and sessions opened ("session") by this process: tests count these."""


def onnx_version() -> str | None:
    """onnxruntime's version, or None when the `onnx` extra is not installed (nothing is imported)."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return None


def require_onnx(precision: str) -> str:
    version = onnx_version()
    if version is None:
        raise PrecisionUnavailable(
            precision, "it needs ONNX Runtime, which is not installed: pip install 'lectern[onnx]'"
        )
    return version


def bert_shape(folder: Path) -> tuple[int, int] | None:
    """(attention heads, hidden size) of a BERT sentence-transformers folder with mean pooling and
    normalisation, the only shape exported here; None for any other model."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        kinds = {str(m["type"]).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
        pooling = json.loads((folder / kinds["Pooling"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True}
    if (
        set(kinds) != {"Transformer", "Pooling", "Normalize"}
        or kinds["Transformer"] != ""
        or modes != {"pooling_mode_mean_tokens"}
        or config.get("model_type") != "bert"
    ):
        return None
    return int(config["num_attention_heads"]), int(config["hidden_size"])


def export_folder(models_dir: Path, model_name: str, *, reduce_range: bool) -> Path:
    """Where a model's export lives: per model, per onnxruntime version (fusions are its own) and per
    int8 weight width. A cache shared by machines with and without VNNI (a home folder on a network
    drive) must not hand 8-bit weights to a CPU whose kernels saturate on them."""
    label, digest = model_name.split("@", 1) if "@" in model_name else (model_name, "0")
    version = (onnx_version() or "none").replace("+", "_")
    return models_dir / f"{label}-onnx-{digest}-ort{version}{'-int7' if reduce_range else ''}"


def needs_reduced_range(flags: Set[str]) -> bool:
    """Without VNNI, ONNX Runtime's AVX2 int8 kernels add pairs of u8*s8 products in int16, which
    saturates with 8-bit weights; 7-bit weights (reduce_range) cannot (ONNX Runtime's own advice)."""
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def exported(
    source: Path,
    models_dir: Path,
    model_name: str,
    window: int,
    announce: Callable[[str], None],
    reduce_range: bool | None = None,
) -> Path:
    """The folder with model-fp32.onnx and model-int8.onnx for `source`, exported on first use
    (int8 weights in 7 bits where the CPU needs it, unless `reduce_range` says; bench/ sets it).

    A file lock makes a second process wait for the first one's export instead of repeating it."""
    require_onnx("onnx-fp32")
    shape = bert_shape(source)
    if shape is None:
        raise PrecisionUnavailable("onnx", f"{source} is not a BERT model with mean pooling")
    if reduce_range is None:
        reduce_range = needs_reduced_range(cpu_info()[1])
    target = export_folder(models_dir, model_name, reduce_range=reduce_range)
    if (target / DONE).is_file():
        return target
    from filelock import FileLock

    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / DONE).is_file():
            return target
        announce(f"lectern: exporting the embedder to ONNX, once for this machine, in {target}")
        with atomic_folder(target, done=DONE) as tmp:
            # torch's exporter, ONNX Runtime's optimiser, then its quantiser, each in a process of
            # its own that exits before the next starts: in one process they held 1.5 GB at their
            # peak (more than the tutorial pipeline's whole ingest), and what a step frees stays
            # with its process (optimiser and quantiser together: 965 MB; apart: 656 and 493 MB)
            in_child(_export, source, tmp / "raw.onnx", window)
            in_child(_optimise, tmp / "raw.onnx", tmp / MODEL_FILES["onnx-fp32"], *shape)
            (tmp / "raw.onnx").unlink()
            in_child(_quantise, tmp / MODEL_FILES["onnx-fp32"], tmp / MODEL_FILES["onnx-int8"], reduce_range)
            info = {"source": model_name, "window": window, "onnxruntime": onnx_version()}
            info |= {"int8": {"per_channel": True, "reduce_range": reduce_range, "excluded": []}}
            (tmp / DONE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        EXPORTS["export"] += 1
    return target


def _export(source: Path, out: Path, window: int) -> None:
    """The BERT encoder with mean pooling and L2 normalisation, batch and length dynamic."""
    import torch
    from transformers import AutoModel

    from lectern.ingest.hf_logging import quiet

    quiet()
    # eager attention: the plain MatMul/Softmax pattern that ONNX Runtime's BERT fusion recognises
    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager", local_files_only=True)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert.eval()

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            types = torch.zeros_like(input_ids)
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=types)
            mask = attention_mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
            summed = (hidden.last_hidden_state * mask).sum(1)
            mean = summed / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    ids = torch.ones((2, min(window, 16)), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(),
            (ids, torch.ones_like(ids)),
            str(out),
            dynamo=False,  # the TorchScript exporter: needs no onnxscript, and its graph fuses fully
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
            opset_version=17,
        )


def _optimise(raw: Path, out: Path, heads: int, hidden: int) -> None:
    from onnxruntime.transformers import optimizer

    with _quiet():
        # opt_level 0: the BERT fusions alone, the same fused operators as level 1 (the session folds
        # the rest as it loads); level 1 imports torch to read its version: 1.06 GB against 0.66
        model = optimizer.optimize_model(
            str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0
        )
        model.save_model_to_file(str(out))


def _quantise(fp32: Path, out: Path, reduce_range: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,  # per-tensor weights: cosine to fp32 0.94 on R-manual chunks; per channel 0.994
            reduce_range=reduce_range,
            # the fused BERT operators are ONNX Runtime's own, which shape inference cannot type
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter and quantizer log to the root logger and print; the user sees the one line."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        root.setLevel(level)


def torch_threads() -> int:
    """The threads torch computes with: its own setting once imported, else its default (what
    OMP_NUM_THREADS says, or this process's cores)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxEncoder:
    """One ONNX Runtime session and the model's tokenizer; `encode` as SentenceTransformer's."""

    def __init__(
        self,
        folder: Path,
        tokenizer_file: Path,
        window: int,
        precision: str,
        threads: int | None = None,
        spin: bool = True,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch_threads()
        if not spin:  # idle threads sleep instead of spinning: one question, then the LLM's turn
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.precision = precision
        self.session = ort.InferenceSession(
            str(folder / MODEL_FILES[precision]), options, providers=["CPUExecutionProvider"]
        )
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.enable_truncation(window)
        self._tok.no_padding()
        EXPORTS["session"] += 1

    def encode(self, sentences: Sequence[str], batch_size: int = 8, **_: Any) -> np.ndarray:
        """Normalised float32 rows; batches of similar length, padded to their longest text."""
        encodings = self._tok.encode_batch_fast(list(sentences))  # ids only: no offsets to compute
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        out: np.ndarray | None = None
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            vectors = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if out is None:
                out = np.zeros((len(encodings), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)
