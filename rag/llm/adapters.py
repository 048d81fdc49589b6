"""PEFT LoRA adapters on the local model: checked against the loaded base, attached unmerged (and
switchable by name without reloading the base) or merged into its weights at load.

An adapter folder is peft's own (adapter_config.json, adapter_model.safetensors) plus, when lectern
trained it (`lectern tune`, rag.llm.tune), `lectern_adapter.json`: the identity of the base it was
trained on. Loading checks that identity first (the same weights, whatever the dtype they run in),
then, for any adapter, that every module it targets exists in the loaded model with the shapes its
LoRA matrices expect. A mismatch raises AdapterMismatch naming both models. peft and torch are
imported inside the functions, so `import lectern.rag.llm` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lectern.errors import AdapterMismatch, BadAdapter

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
IDENTITY = "lectern_adapter.json"
"""lectern's record of the base an adapter was trained on (written by rag.llm.tune)."""
_FINGERPRINT_ROWS = 64


def base_identity(model: Any, name: str) -> dict[str, Any]:
    """Who a loaded base model is: its name, architecture sizes and a digest of its first embedding
    rows rounded to bf16, so the fp32 and bf16 caches of one GGUF are the same base and another
    model of the same shape is not."""
    import torch

    config = model.config
    rows = model.get_input_embeddings().weight[:_FINGERPRINT_ROWS].detach()
    data = rows.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()
    return {
        "model": name,
        "model_type": getattr(config, "model_type", ""),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "fingerprint": hashlib.sha256(data).hexdigest()[:32],
    }


def adapter_key(path: str | None) -> str | None:
    """What the model cache keys an adapter by: its resolved folder and when its weights changed, so
    retraining into the same folder loads the new weights."""
    if not path:
        return None
    folder = Path(path).expanduser().resolve()
    weights = folder / WEIGHTS
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    return f"{folder}@{stamp}"


def read_config(path: str | Path) -> dict[str, Any]:
    """peft's adapter_config.json of a LoRA adapter folder, or BadAdapter saying what is wrong."""
    folder = Path(path).expanduser()
    config_file = folder / CONFIG
    if not folder.is_dir():
        raise BadAdapter(str(path), "no such folder")
    if not config_file.is_file():
        raise BadAdapter(str(path), f"no {CONFIG} (not a PEFT adapter folder)")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BadAdapter(str(path), f"unreadable {CONFIG}: {error}") from error
    if config.get("peft_type") != "LORA":
        raise BadAdapter(str(path), f"peft_type {config.get('peft_type')!r}, only LORA is supported")
    if not (folder / WEIGHTS).is_file() and not (folder / "adapter_model.bin").is_file():
        raise BadAdapter(str(path), f"no {WEIGHTS}")
    return config


def check_adapter(model: Any, path: str | Path, name: str) -> dict[str, Any]:
    """Raise AdapterMismatch unless the adapter at `path` fits the loaded base `model` (called
    `name`); returns its peft config. Checks the recorded identity, then modules and shapes."""
    config = read_config(path)
    recorded_base = str(config.get("base_model_name_or_path") or "unknown")
    identity_file = Path(path).expanduser() / IDENTITY
    if identity_file.is_file():
        recorded = json.loads(identity_file.read_text(encoding="utf-8"))
        recorded_base = str(recorded.get("model") or recorded_base)
        here = base_identity(model, name)
        differs = [k for k in here if k != "model" and recorded.get(k) != here[k]]
        if differs:
            detail = ", ".join(f"{k} {recorded.get(k)!r} != {here[k]!r}" for k in differs)
            raise AdapterMismatch(str(path), recorded_base, name, detail)
    _check_shapes(model, Path(path).expanduser(), recorded_base, name)
    return config


def _check_shapes(model: Any, folder: Path, adapter_base: str, name: str) -> None:
    """Every lora_A / lora_B in the weights must sit on a Linear of the model with matching sizes."""
    weights = folder / WEIGHTS
    if not weights.is_file():
        return  # an old .bin adapter: peft itself reports a shape mismatch when it loads
    from safetensors import safe_open

    modules = dict(model.named_modules())
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
            target = modules.get(module_name)
            if target is None:
                raise AdapterMismatch(
                    str(folder), adapter_base, name, f"the model has no module {module_name}"
                )
            shape = tuple(handle.get_slice(key).get_shape())
            expect_in = getattr(target, "in_features", None)
            expect_out = getattr(target, "out_features", None)
            got = shape[1] if ".lora_A." in key else shape[0]
            want = expect_in if ".lora_A." in key else expect_out
            if want is not None and got != want:
                side = "input" if ".lora_A." in key else "output"
                raise AdapterMismatch(
                    str(folder), adapter_base, name, f"{module_name}: {side} size {got} != {want}"
                )


def attach(model: Any, path: str, name: str, *, merge: bool = False, adapter_name: str = "default") -> Any:
    """The base `model` with the adapter at `path` on it: a peft model whose adapters can be switched
    (unmerged), or the plain model with the LoRA folded into its weights (merge)."""
    from peft import PeftModel

    check_adapter(model, path, name)
    peft_model = PeftModel.from_pretrained(
        model, os.fspath(Path(path).expanduser()), adapter_name=adapter_name
    )
    peft_model.eval()
    return peft_model.merge_and_unload() if merge else peft_model


def add_adapter(llm: Any, path: str, adapter_name: str) -> None:
    """Load one more adapter onto a LocalChatModel loaded with one (unmerged), by name; the base
    weights are shared, not reloaded. Changes the model every copy of `llm` shares."""
    peft_model = _peft(llm)
    check_adapter(peft_model.get_base_model(), path, llm.model_name)
    peft_model.load_adapter(os.fspath(Path(path).expanduser()), adapter_name=adapter_name)
    peft_model.eval()


def use_adapter(llm: Any, adapter_name: str | None) -> None:
    """Answer with the named adapter, or with the bare base model when None (adapter layers off,
    nothing reloaded). Changes the model every copy of `llm` shares."""
    peft_model = _peft(llm)
    if adapter_name is None:
        peft_model.base_model.disable_adapter_layers()
        return
    if adapter_name not in peft_model.peft_config:
        from lectern.errors import UnknownKey

        raise UnknownKey("adapter", adapter_name, list(peft_model.peft_config))
    peft_model.base_model.enable_adapter_layers()
    peft_model.set_adapter(adapter_name)


def adapter_names(llm: Any) -> list[str]:
    """The adapters loaded on `llm` (empty for a model without, or with a merged one)."""
    config = getattr(llm.hf_model, "peft_config", None)
    return list(config) if isinstance(config, dict) else []


def _peft(llm: Any) -> Any:
    from peft import PeftModel

    if not isinstance(llm.hf_model, PeftModel):
        raise BadAdapter(
            llm.model_name, "the model was not loaded with an unmerged adapter (llm.adapter, merge off)"
        )
    return llm.hf_model
