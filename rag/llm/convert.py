"""A GGUF file made into a transformers model folder once, and cached: `resolve_local(model, models_dir,
dtype)` -> the folder (and the GGUF it came from). docs/LLM.md has what was learned, the tokenizer
trap included: a tokenizer is kept only if it round-trips a probe text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lectern.errors import NotEnoughDisk
from lectern.ingest.atomic import atomic_folder, ensure_room, free_bytes, out_of_disk
from lectern.rag.models import (
    PACKAGED_PREFIX,
    file_key,
    gguf_elements,
    gguf_file,
)

CONVERSIONS = 0
"""How many GGUF -> safetensors conversions this process ran (tests prove the cache by this count)."""

CACHE_FORMAT = 3
"""Bumped when the layout of a converted model's folder changes, so old caches are not reused."""
_PROBE = "The quick brown fox jumps over the lazy dog. Paris, 1889: naïve café — 42%!"


def tokenizer_ok(tokenizer: Any) -> bool:
    """A round trip of a probe sentence gives it back, with no special token slipped between words
    (the known transformers trap: a tokenizer saved after a GGUF load inserted <|endoftext|>)."""
    ids = tokenizer.encode(_PROBE, add_special_tokens=False)
    special = set(tokenizer.all_special_ids or [])
    return tokenizer.decode(ids) == _PROBE and not any(i in special for i in ids)


def save_tokenizer(tok: Any, folder: Path) -> None:
    """Save the fast tokenizer's own tokenizer.json plus its special tokens and chat template.

    Not `save_pretrained`: after a GGUF load transformers 5.23 saves a CodeLlamaTokenizer config
    whose reload puts <|endoftext|> between words; the raw tokenizers JSON round-trips exactly.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    meta = {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    meta["chat_template"] = tok.chat_template
    (folder / "lectern_tokenizer.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_saved_tokenizer(folder: Path) -> Any:
    """The tokenizer `save_tokenizer` wrote (a plain PreTrainedTokenizerFast, ~0.1 s)."""
    from transformers import PreTrainedTokenizerFast

    meta = json.loads((folder / "lectern_tokenizer.json").read_text(encoding="utf-8"))
    template = meta.pop("chat_template", None)
    specials = {k: v for k, v in meta.items() if isinstance(v, str)}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **specials)
    tok.chat_template = template
    return tok


def _convert_gguf(gguf: Path, target: Path, stored: Any) -> None:
    """Dequantize a GGUF once and save it as safetensors in `target` (temp dir renamed into place),
    in the `stored` dtype (see storage_dtype).

    The saved tokenizer is kept only if it encodes probe texts to the same ids and renders the same
    chat template as the GGUF-loaded one; else the manifest says to load the tokenizer from the GGUF.
    """
    global CONVERSIONS
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lectern.ingest.hf_logging import quiet

    quiet()
    # the room is checked before the minute of dequantizing: the tensors' sizes are in the header
    what = f"converting {gguf.name} ({stored_name(stored)})"
    needed = gguf_elements(gguf) * torch.empty((), dtype=stored).element_size()
    ensure_room(target.parent, needed, what)
    CONVERSIONS += 1
    with atomic_folder(target, done="lectern.json") as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers refuses to save a model loaded through its GGUF quantizer even though the
        # weights are already dequantized plain tensors; detach the quantizer to save them.
        packed = [type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()]
        if packed:
            raise RuntimeError(f"GGUF load kept packed layers ({packed[0]}); cannot cache them")
        setattr(model, "hf_quantizer", None)  # noqa: B010
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if stored != torch.float32:
            model.to(stored)
        try:
            model.save_pretrained(str(tmp))
        except Exception as error:
            if out_of_disk(error):  # another writer took the room meanwhile
                raise NotEnoughDisk(what, target.parent, needed, free_bytes(target.parent)) from error
            raise
        save_tokenizer(tok, tmp / "tokenizer")
        saved = load_saved_tokenizer(tmp / "tokenizer")
        chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": _PROBE}]
        same = (
            tokenizer_ok(saved)
            and all(saved.encode(t) == tok.encode(t) for t in (_PROBE, "Hello world.\n\n  x = 1"))
            and saved.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        )
        manifest = {
            "source": str(gguf),
            "tokenizer": "saved" if same else "gguf",
            "format": CACHE_FORMAT,
            "stored_dtype": stored_name(stored),
        }
        (tmp / "lectern.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def stored_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def storage_dtype(dtype: Any) -> Any:
    """The dtype a converted GGUF is cached in: the one it will run in.

    Stored in its compute dtype, the weights are memory-mapped as they are: Qwen 1.5B in bf16 loads
    in 5.4 s with a 3.8 GB peak RSS from a bf16 cache, against 13.0 s and 10.9 GB from an fp32 one
    (the mapped file plus a bf16 copy), and the cache is half the size (3.6 instead of 7.1 GB).
    Rounding to bf16 once at conversion is the rounding loading would do anyway (docs/LLM.md)."""
    import torch

    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


def load_tokenizer(folder: Path, gguf: Path | None) -> Any:
    from transformers import AutoTokenizer

    manifest = folder / "lectern.json"
    use_gguf = gguf is not None and (
        not manifest.is_file() or json.loads(manifest.read_text(encoding="utf-8"))["tokenizer"] != "saved"
    )
    if not use_gguf:
        sub = folder / "tokenizer"
        tok = load_saved_tokenizer(sub) if sub.is_dir() else AutoTokenizer.from_pretrained(str(folder))
        if tokenizer_ok(tok) or gguf is None:
            return tok
    assert gguf is not None
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def resolve_local(model: str, models_dir: Path, dtype: Any = None) -> tuple[Path | str, Path | None]:
    """(what to load with from_pretrained, the GGUF it came from or None), converting a GGUF once.

    A GGUF is cached in the dtype it will run in (fp32 when None), one cache per dtype."""
    gguf = gguf_file(model, models_dir)
    if gguf is None:
        path = Path(model).expanduser()
        return (path, None) if path.is_dir() else (model, None)  # a hub id: loaded with local_files_only
    name = model[len(PACKAGED_PREFIX) :] if model.startswith(PACKAGED_PREFIX) else gguf.stem
    import torch

    stored = storage_dtype(dtype)
    suffix = "" if stored == torch.float32 else "-" + stored_name(stored)
    target = models_dir / f"{name}-{file_key(gguf, salt=f'v{CACHE_FORMAT}')}{suffix}"
    if not (target / "lectern.json").is_file():
        _convert_gguf(gguf, target, stored)
    return target, gguf
