"""Which CPU kernels decode, and how one machine runs another CPU's.

CTranslate2 picks its CPU kernels by instruction set and Intel MKL (its int8 matrix products) picks
its own, so int8 Whisper can say different things on different CPUs (#25).  Forcing both to a
lower set makes this machine compute what a CPU with only that set computes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

# CTranslate2's names (CT2_FORCE_CPU_ISA), each with the CPU flag it needs and MKL's name for it
# (MKL_ENABLE_INSTRUCTIONS; its plain AVX512 is AVX-512 without VNNI).
KERNELS = {"GENERIC": ("sse4_2", "SSE4_2"), "AVX": ("avx", "AVX"), "AVX2": ("avx2", "AVX2"),
           "AVX512": ("avx512bw", "AVX512")}


def supported_kernels(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The kernel sets this CPU can run (empty where its flags cannot be read)."""
    try:
        flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return []
    return [name for name, (flag, _) in KERNELS.items() if flag in flags]


def kernel_environment(kernel: str, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with CTranslate2 and MKL forced to ``kernel``."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel set {kernel!r}; one of {', '.join(KERNELS)}")
    env = dict(os.environ if base is None else base)
    env["CT2_FORCE_CPU_ISA"] = kernel
    env["MKL_ENABLE_INSTRUCTIONS"] = KERNELS[kernel][1]
    return env
