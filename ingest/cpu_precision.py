"""Which precision embeds fastest on this CPU: measured once per machine, kept in the user's cache.

The CPU's flags do not say it: a Xeon VM with avx512_bf16 and AMX ran MiniLM slower with bf16
autocast than in fp32, and ONNX Runtime's int8 kernels differ from CPU to CPU. So the first time
`ingest.embed.precision = "auto"` needs an answer on a CPU, a short micro-benchmark embeds the same
texts with each candidate (fp32 and bf16 torch, ONNX Runtime fp32 and int8 where installed),
interleaved, and keeps the fastest whose vectors stay close to fp32 torch's. torch's candidates run
in a process of their own, before ONNX Runtime's here (ingest.st_embed), so no process holds both. The answer is kept as
JSON in <cache>/cpu-precision.json, keyed by what it depends on: the CPU model and flags, torch's
and onnxruntime's versions, the kernel limits set in the environment, and the model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lectern.ingest.atomic import atomic_write_text, read_json

CPU_PRECISIONS = ("fp32", "bf16", "onnx-fp32", "onnx-int8")
CACHE_FILE = "cpu-precision.json"
MIN_MEAN_COSINE = 0.99  # to fp32 torch on the benchmark's texts; S08 retrieval measured the options
MIN_COSINE = 0.97
MARGIN = 0.9  # another precision replaces fp32 torch only when it takes under 90% of its time
ROUNDS = 5
MEASURED: Counter[str] = Counter()
"""Micro-benchmarks run by this process ("benchmark"): tests count these instead of timing."""

Runner = Callable[[list[str]], np.ndarray]
T = TypeVar("T")

_SENTENCES = [
    "The library keeps its older maps in a cool room on the second floor, away from the windows.",
    "Each map is catalogued by region, year and scale, and the catalogue is searchable by place name.",
    "Readers may ask for up to three items at a time, which are brought to the reading room within the hour.",
    "Photographs are allowed without flash, but tracing and the use of ink near the originals are not.",
    "Damaged sheets are repaired in the conservation workshop, where paper is washed, flattened and mended.",
    "Volunteers transcribe the handwritten notes in the margins, which often record who surveyed the land.",
    "A digital copy of every sheet printed before 1900 is available online at full resolution.",
    "Researchers who need the originals for more than a week should write to the curator in advance.",
    "School groups visit on Tuesday mornings, when a guide explains how the coastline was first measured.",
    "The reading room closes at five, and items still in use are kept aside for the next day on request.",
    "Gifts of maps and atlases are welcome, though the library cannot promise to keep every duplicate.",
    "Loans to other museums are agreed a year ahead and travel in sealed, climate-controlled crates.",
    "The oldest sheet, a hand-drawn chart of the estuary, is shown to the public only once a year.",
    "Staff answer written questions within ten working days and charge nothing for short searches.",
    "Large sheets are stored flat in shallow drawers; rolled maps are kept upright in acid-free tubes.",
]


def bench_texts(count: int = 16) -> list[str]:
    """One batch of passages of 135 to 185 word pieces (chunks are up to about 200, 180 on average
    in the R manuals), each a different order of sentences."""
    n = len(_SENTENCES)  # 15; 9 of them make about 190 pieces; the step 4 varies their order
    return [" ".join(_SENTENCES[(i + j * 4) % n] for j in range(9 - i % 3)) for i in range(count)]


@dataclass(frozen=True)
class Measurement:
    choice: str
    seconds: dict[str, float]  # the median round, per precision
    mean_cosine: dict[str, float]  # to fp32 torch, over the texts
    min_cosine: dict[str, float]


def pick(seconds: dict[str, float], mean_cosine: dict[str, float], min_cosine: dict[str, float]) -> str:
    """The fastest precision whose vectors pass the bar and that is clearly faster than fp32 torch,
    ONNX Runtime's first; else fp32 torch.

    ONNX Runtime goes first because its micro-benchmark foretold the whole ingest and bf16's did not:
    on this project's Xeon VM bf16 timed 3.0-3.6x fp32 here and ran no faster than fp32 in two whole
    processes, while int8 timed 1.7-2.4x and ran 2.0x (docs/BENCHMARKS.md); an ONNX process also
    holds no torch (about 480 MB against 1 GB). bf16 is chosen only where no ONNX option pays."""
    passing = {
        p: s
        for p, s in seconds.items()
        if p != "fp32"
        and mean_cosine.get(p, 0.0) >= MIN_MEAN_COSINE
        and min_cosine.get(p, 0.0) >= MIN_COSINE
        and s < MARGIN * seconds["fp32"]
    }
    onnx = {p: s for p, s in passing.items() if p.startswith("onnx")}
    for group in (onnx, passing):
        if group:
            return min(group, key=lambda p: group[p])
    return "fp32"


def measure(
    runners: dict[str, Runner], texts: Sequence[str] | None = None, rounds: int = ROUNDS
) -> Measurement:
    """Time each runner on the same texts (`time_runners`) and pick one. `runners` must hold "fp32"."""
    seconds, vectors = time_runners(runners, bench_texts() if texts is None else texts, rounds)
    return decide(seconds, vectors)


def time_runners(
    runners: Mapping[str, Runner], texts: Sequence[str], rounds: int = ROUNDS
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Each runner's median round and vectors on the same texts, interleaved (the order rotates each
    round, so load from other jobs falls on all alike), after one untimed call each: the median
    round counts, not the luckiest."""
    batch = list(texts)
    names = list(runners)
    if not names:
        return {}, {}
    vectors = {p: np.asarray(runners[p](batch), dtype=np.float32) for p in names}
    times: dict[str, list[float]] = {p: [] for p in names}
    for r in range(rounds):
        for p in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runners[p](batch)
            times[p].append(time.perf_counter() - t0)
    return {p: float(np.median(t)) for p, t in times.items()}, vectors


def decide(seconds: dict[str, float], vectors: dict[str, np.ndarray]) -> Measurement:
    """The Measurement of timed precisions: each one's cosine to fp32 torch's vectors, then `pick`."""
    reference = vectors["fp32"]
    cosines = {p: np.sum(v * reference, axis=1) for p, v in vectors.items()}
    mean = {p: float(c.mean()) for p, c in cosines.items()}
    low = {p: float(c.min()) for p, c in cosines.items()}
    return Measurement(pick(seconds, mean, low), seconds, mean, low)


def in_child(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a new process that exits afterwards, its result or error returned here. The
    once-per-machine steps run so (the ONNX export, torch's half of the benchmark): what a process
    frees stays mostly with it, and torch alone holds about 450 MB that an ONNX ingest never needs."""
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """This CPU's model name and flags, from /proc/cpuinfo ("" and none where it cannot be read)."""
    model, flags = "", frozenset[str]()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def machine(model_name: str) -> dict[str, str]:
    """What the choice depends on, read without importing torch or onnxruntime."""
    model, cpu_flags = cpu_info()
    flags = " ".join(sorted(cpu_flags))
    return {
        "cpu": model or os.uname().machine,
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime") if _version("onnx") != "none" else "none",
        # the kernel limits torch and oneDNN read (bench/ingest_speed.py emulates an AVX2 CPU so)
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "model": model_name,
    }


def machine_key(fields: dict[str, str]) -> str:
    """The cache key of a machine described by `fields` (what a measurement depends on)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def remember(cache_dir: Path, model_name: str, choice: str) -> None:
    """Record a choice for this machine without measuring (the test suite's cache says fp32)."""
    file = cache_dir / CACHE_FILE
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = read_json(file)
    data[machine_key(machine(model_name))] = {
        "machine": machine(model_name),
        "choice": choice,
        "measured": None,
    }
    atomic_write_text(file, json.dumps(data, indent=2, sort_keys=True))


def once_per_machine(
    file: Path,
    fields: dict[str, str],
    measure: Callable[[], dict[str, Any]],
    announce: Callable[[str], None],
    what: str,
    valid: Callable[[dict[str, Any]], bool] = lambda entry: True,
) -> dict[str, Any]:
    """The measurement kept in JSON `file` for the machine `fields` describe (where `valid`), or
    `measure()` run now and kept there (with the date and the load average: other jobs skew
    timings). A file lock makes a second process wait for the first one's measurement instead of
    repeating it."""
    key = machine_key(fields)
    entry = read_json(file).get(key)
    if isinstance(entry, dict) and valid(entry):
        return entry
    from filelock import FileLock

    file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(file) + ".lock"):
        entry = read_json(file).get(key)
        if isinstance(entry, dict) and valid(entry):
            return entry
        announce(f"lectern: measuring {what}, once for this machine")
        entry = {"machine": fields, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        entry["load_average"] = round(os.getloadavg()[0], 2)
        entry |= measure()
        MEASURED["benchmark"] += 1
        data = read_json(file)
        data[key] = entry
        atomic_write_text(file, json.dumps(data, indent=2, sort_keys=True))
    return entry


def chosen_precision(
    model_name: str,
    cache_dir: Path,
    run_benchmark: Callable[[], Measurement],
    announce: Callable[[str], None],
) -> str:
    """This machine's precision for the model: from the cache, or measured now and cached."""
    file = cache_dir / CACHE_FILE

    def run() -> dict[str, Any]:
        result = run_benchmark()
        seconds = ", ".join(f"{p} {s:.2f} s" for p, s in result.seconds.items())
        announce(f"lectern: embedding in {result.choice} on this CPU ({seconds}; kept in {file})")
        return asdict(result)

    entry = once_per_machine(
        file,
        machine(model_name),
        run,
        announce,
        "which precision embeds fastest on this CPU",
        valid=lambda entry: entry.get("choice") in CPU_PRECISIONS,
    )
    return str(entry["choice"])
