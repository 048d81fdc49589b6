"""bench/avx2_only: every process of a benchmark sees an AVX2-only CPU, and a real crash still crashes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from bench import avx2_only

pytestmark = pytest.mark.skipif(
    not (avx2_only.cpuid_can_fault() and shutil.which("gcc")),
    reason="needs a CPU with the cpuid_fault flag and gcc",
)

PROBE = """
import json, subprocess, sys
import torch
from numpy._core._multiarray_umath import __cpu_features__
from lectern.ingest.cpu_precision import cpu_info
from lectern.ingest.st_embed import cpu_has_native_bf16
from lectern.ingest.onnx_embed import needs_reduced_range
flags = cpu_info()[1]
child = subprocess.run(["grep", "-c", "avx512", "/proc/cpuinfo"], capture_output=True, text=True).stdout
print(json.dumps({
    "torch": torch.backends.cpu.get_cpu_capability(),
    "numpy": [__cpu_features__["AVX2"], __cpu_features__["AVX512F"]],
    "avx512_flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni"))),
    "avx2": "avx2" in flags,
    "bf16": cpu_has_native_bf16(),
    "seven_bit_int8": needs_reduced_range(flags),
    "grep_in_a_child": child.strip(),
}))
"""


def test_cpuid_and_cpuinfo_say_avx2_only_in_the_process_and_its_children() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=avx2_only.environment(), capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["torch"] == "AVX2"  # ATen reads CPUID
    assert seen["numpy"] == [True, False]  # so do numpy and OpenBLAS
    assert seen["avx512_flags"] == [] and seen["avx2"]  # lectern reads /proc/cpuinfo
    assert seen["bf16"] is False and seen["seven_bit_int8"] is True
    assert seen["grep_in_a_child"] == "0"  # an exec'd C program is masked too


def test_a_real_segmentation_fault_still_kills_the_process() -> None:
    crash = "import ctypes; ctypes.string_at(0)"
    done = subprocess.run([sys.executable, "-c", crash], env=avx2_only.environment(), capture_output=True)
    assert done.returncode == -11
