"""Run a command as on a CPU with AVX2 but no AVX-512, AVX-VNNI, AMX or bf16, on a CPU that has them.

    .venv/bin/python -m bench.avx2_only -- .venv/bin/python -m bench.ingest_speed --rounds 2

Builds bench/avx2_only.c with gcc (once, into bench/out/) and preloads it into the command and every
process it starts: CPUID and /proc/cpuinfo then report an AVX2-only CPU, so ONNX Runtime, torch,
numpy and lectern itself pick the kernels and settings they pick on one (int8 weights in 7 bits,
fp32 instead of bf16...), while the instructions run at this CPU's speed. Needs Linux and the
`cpuid_fault` CPU flag (most Intel CPUs since 2012, and their VMs); says so and exits 2 without it.

ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, which earlier runs used, hold only torch to AVX2:
ONNX Runtime kept its VNNI int8 kernels, and lectern read the real flags.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_suffix(".c")
LIBRARY = Path(__file__).parent / "out" / "avx2_only.so"


def cpuid_can_fault() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return any(line.startswith("flags") and "cpuid_fault" in line.split() for line in fh)
    except OSError:
        return False


def library() -> Path:
    """The preload library, built from bench/avx2_only.c when missing or older than its source."""
    if not LIBRARY.is_file() or LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
        LIBRARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(LIBRARY), str(SOURCE)], check=True
        )
    return LIBRARY


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (os.environ) with the library preloaded."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(p for p in (str(library()), env.get("LD_PRELOAD", "")) if p)
    return env


def active() -> bool:
    """Whether this process runs under the preload (for benchmark reports)."""
    return LIBRARY.name in os.environ.get("LD_PRELOAD", "")


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    if not cpuid_can_fault():
        print("avx2_only: this CPU cannot make CPUID fault (no cpuid_fault flag)", file=sys.stderr)
        return 2
    return subprocess.run(command, env=environment()).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
