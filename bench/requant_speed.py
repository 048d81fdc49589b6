"""Would another 4-bit type make a packaged GGUF answer faster on llama.cpp? The model requantized
once into each --types (llama.cpp's llama_model_quantize, allowing requantization), then every file
timed by the probe `packaged:auto` uses (rag.llm.llamacpp.typical_answer_seconds: a 256-token
prefill and 8 decode steps), the files in turn each round so that the machine's load hits them
alike. Prints the CPU and its flags, each round, and each file's best.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.requant_speed --model packaged:qwen2.5-0.5b --types q4_0 q8_0 iq4_nl

`--ffn-only q4_0` also writes a copy with only the feed-forward gate and up matrices requantized
(the larger part of a layer's arithmetic) and every other tensor as it was, with the gguf package.

Speed only: what a second quantization costs in answers is measured with bench.answer_quality
--model <the written .gguf> (docs/LLM.md).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

FTYPES = {
    "f32": 0,
    "f16": 1,
    "bf16": 32,
    "q4_0": 2,
    "q8_0": 7,
    "q3_k_m": 12,
    "q4_k_m": 15,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq4_nl": 25,
}
"""llama.cpp's LLAMA_FTYPE_* numbers of the types offered (f32, f16 and bf16: the weights dequantized,
for llama.cpp's float GEMM kernels in prefill)."""


def requantize(llama_cpp: Any, source: Path, kind: str, folder: Path, threads: int) -> Path:
    """`source` written as type `kind` into `folder` (kept there: a second run reuses it)."""
    target = folder / f"{source.stem}-{kind}.gguf"
    if not target.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = FTYPES[kind], True, threads
        start = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
        if rc != 0:
            raise SystemExit(f"llama_model_quantize to {kind} failed ({rc})")
        print(f"{kind}: written in {time.perf_counter() - start:.1f} s, {target.stat().st_size >> 20} MiB")
    return target


def requantize_ffn(source: Path, kind: str, folder: Path) -> Path:
    """`source` with its ffn_gate and ffn_up tensors requantized to `kind` (gguf.quants), the rest
    and the metadata copied as they are (kept in `folder`: a second run reuses it)."""
    import gguf
    import numpy as np
    from gguf import GGUFValueType, quants

    target = folder / f"{source.stem}-ffn-{kind}.gguf"
    if target.is_file():
        return target
    qtype = gguf.GGMLQuantizationType[kind.upper()]
    start = time.perf_counter()
    reader = gguf.GGUFReader(source)

    def text(field: Any, i: int) -> str:
        return str(bytes(field.parts[i]), "utf-8")

    arch = reader.fields["general.architecture"]
    writer = gguf.GGUFWriter(target, arch=text(arch, arch.data[0]))
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind_of = field.types[0]
        if kind_of == GGUFValueType.ARRAY:
            item = field.types[-1]
            if item == GGUFValueType.STRING:
                value: Any = [text(field, i) for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(name, value, kind_of, sub_type=item)
        elif kind_of == GGUFValueType.STRING:
            writer.add_key_value(name, text(field, field.data[0]), kind_of)
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind_of)
    for tensor in reader.tensors:
        if tensor.name.endswith(("ffn_gate.weight", "ffn_up.weight")) and tensor.tensor_type != qtype:
            shape = [int(n) for n in reversed(tensor.shape.tolist())]
            values = quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
            writer.add_tensor(tensor.name, quants.quantize(values, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"ffn-{kind}: written in {time.perf_counter() - start:.1f} s, {target.stat().st_size >> 20} MiB")
    return target


def main() -> None:
    from bench.serve import machine
    from lectern.rag.llm.llamacpp import physical_cores, typical_answer_seconds
    from lectern.rag.llm.llamacpp_import import import_llama_cpp
    from lectern.rag.models import gguf_file
    from lectern.rag.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="packaged:qwen2.5-0.5b")
    ap.add_argument("--types", nargs="*", default=["q4_0", "q8_0"], choices=sorted(FTYPES))
    ap.add_argument("--ffn-only", nargs="*", default=[], choices=["q4_0", "q8_0"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lectern-requant")
    args = ap.parse_args()
    llama_cpp = import_llama_cpp()
    threads = physical_cores()
    source = gguf_file(args.model, load_settings().models_dir)
    if source is None:
        raise SystemExit(f"{args.model} is not a GGUF model")
    args.out.mkdir(parents=True, exist_ok=True)
    files = (
        {"as packaged": source}
        | {k: requantize(llama_cpp, source, k, args.out, threads) for k in args.types}
        | {f"ffn {k}": requantize_ffn(source, k, args.out) for k in args.ffn_only}
    )
    print(f"machine: {machine()}; {threads} threads; load average {os.getloadavg()[0]:.1f}")
    best: dict[str, dict[str, float]] = {}
    for round_ in range(1, args.rounds + 1):
        for name, path in files.items():
            probe = typical_answer_seconds(llama_cpp, path, threads)
            print(f"round {round_} {name}: {probe} (load {os.getloadavg()[0]:.1f})", flush=True)
            kept = best.setdefault(name, probe)
            if probe["prefill_tokens_per_s"] > kept["prefill_tokens_per_s"]:
                best[name] = probe
    print("\n| file | prefill tokens/s (best) | decode s/token | typical answer s | MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, probe in best.items():
        size = files[name].stat().st_size >> 20
        print(
            f"| {name} | {probe['prefill_tokens_per_s']} | {probe['decode_s_per_token']} | {probe['answer_s']} | {size} |"
        )


if __name__ == "__main__":
    main()
