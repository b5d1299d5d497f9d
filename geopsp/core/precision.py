"""Whether this CPU computes in bfloat16 in hardware: mixed precision on a CPU pays only then."""

from __future__ import annotations

import functools
import re
from pathlib import Path


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AMX-BF16 or AVX512-BF16).

    Read from ``/proc/cpuinfo``; elsewhere (not Linux, or unreadable) ``False``. Without these
    instructions oneDNN emulates bfloat16 and mixed precision is no faster than float32.
    """
    try:
        return has_bf16_flags(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def has_bf16_flags(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` text lists AMX-BF16 or AVX512-BF16."""
    return bool(bf16_flags(cpuinfo))


def bf16_flags(cpuinfo: str) -> list[str]:
    """The bfloat16 instructions (``amx_bf16``, ``avx512_bf16``) that ``/proc/cpuinfo`` text lists."""
    return [f for f in ("amx_bf16", "avx512_bf16") if re.search(rf"\b{f}\b", cpuinfo)]
