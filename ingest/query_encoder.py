"""The question's vector, fast: one short text through the embedder's transformer on ONNX Runtime.

A question is one short sequence (10-30 word pieces), and for it the cost is per-operator overhead,
not arithmetic. Measured on MiniLM on this project's 2-core Xeon (bench/query_latency.py and
docs/BENCHMARKS.md): sentence-transformers' `encode` 13-19 ms a question, a bare torch forward pass
11 ms, ONNX Runtime 5.2 ms on one thread, with a cosine of 0.9999999 to torch's vector. bf16 autocast
makes one short question slower (14-20 ms), so no path here uses it.

The ONNX file is exported from the model folder's own weights (torch's exporter, no network, no
pickle) once per machine into the user's cache, beside the fast profile's static model, under a file
lock; every data dir and process then only opens it. Only a plain sentence-transformers stack is
exported: a Transformer, mean or CLS pooling, optionally Normalize. Anything else (another pooling,
a Dense layer) keeps the torch path, and so does a machine without onnxruntime (`lectern[onnx]`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lectern.errors import EmbedderNotFound
from lectern.ingest.atomic import atomic_folder

PLAIN_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)


def onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def plain_pooling(folder: Path) -> str | None:
    """ "mean" or "cls" when the folder is a Transformer + Pooling (+ Normalize) stack, else None."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        types = [m["type"] for m in modules]
        if types[:2] != list(PLAIN_MODULES[:2]) or not set(types[2:]) <= {PLAIN_MODULES[2]}:
            return None
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean"
    if modes == ["pooling_mode_cls_token"]:
        return "cls"
    return None


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def exported_onnx(folder: Path, models_dir: Path, name: str, announce: Callable[[str], None] = _say) -> Path:
    """The ONNX file of `folder`'s transformer (token ids and mask in, hidden states out), exported
    once into `models_dir` and reused by every process after; `name` is the embedder's identity
    name (folder and weights hash), so another model or changed weights export anew."""
    target = models_dir / f"onnx-{name.replace('@', '-')}"
    done = target / "model.onnx"
    if done.is_file():
        return done
    from filelock import FileLock

    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if done.is_file():  # exported by another process while this one waited
            return done
        announce(
            f"lectern: exporting {name.split('@')[0]} to ONNX for fast queries, once for this machine, in {target}"
        )
        with atomic_folder(target, done="model.onnx") as tmp:
            _export(folder, tmp / "model.onnx")
        EXPORTS.append(str(target))
    return done


EXPORTS: list[str] = []
"""Folders this process exported (tests count exports instead of timing them)."""


def _export(folder: Path, path: Path) -> None:
    import warnings

    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

    class Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: Any, mask: Any) -> Any:
            return self.inner(input_ids=ids, attention_mask=mask).last_hidden_state

    example = torch.ones((1, 8), dtype=torch.long)
    axes = {
        "ids": {0: "batch", 1: "tokens"},
        "mask": {0: "batch", 1: "tokens"},
        "hidden": {0: "batch", 1: "tokens"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and indexing notes
        torch.onnx.export(
            Hidden(model),
            (example, example),
            str(path),
            input_names=["ids", "mask"],
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,  # the TorchScript exporter: no onnxscript, and it handles HF models as traced
        )


class OnnxQueryEncoder:
    """One text at a time through an exported transformer: tokenize, run, pool, normalise."""

    def __init__(
        self, onnx_file: Path, tokenizer_file: Path, window: int, pooling: str, threads: int = 1
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(window)
        self.pooling = pooling

    def encode(self, text: str) -> np.ndarray:
        ids = np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)
        hidden = self.session.run(None, {"ids": ids, "mask": np.ones_like(ids)})[0][0]
        vector = hidden[0] if self.pooling == "cls" else hidden.mean(axis=0)
        vector = np.asarray(vector, dtype=np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


def onnx_query_encoder(
    folder: Path, models_dir: Path, name: str, window: int, threads: int, required: bool
) -> OnnxQueryEncoder | None:
    """The ONNX encoder of this model folder, or None where it cannot be had (no onnxruntime, not a
    plain stack, export failed): the caller then keeps torch. `required` (the setting says `onnx`)
    turns each of those into an error that names the setting and the reason."""

    def refuse(reason: str) -> None:
        if required:
            raise EmbedderNotFound(f"{folder.name} (ingest.embed.query_backend = onnx)", reason)
        return None

    if not onnx_available():
        return refuse("onnxruntime is not installed (pip install 'lectern[onnx]')")
    pooling = plain_pooling(folder)
    if pooling is None:
        return refuse(f"{folder} is not a Transformer + mean/CLS pooling model")
    try:
        onnx_file = exported_onnx(folder, models_dir, name)
        return OnnxQueryEncoder(onnx_file, folder / "tokenizer.json", window, pooling, threads)
    except Exception as exc:  # an architecture the exporter cannot trace: torch still answers
        if required:
            raise EmbedderNotFound(
                f"{folder.name} (ingest.embed.query_backend = onnx)", f"export failed: {exc}"
            ) from exc
        _say(f"lectern: no ONNX query encoder for {folder.name} ({type(exc).__name__}: {exc}); using torch")
        return None


def default_threads() -> int:
    return 1 if (os.cpu_count() or 1) <= 2 else 2
