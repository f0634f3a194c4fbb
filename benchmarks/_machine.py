"""The machine description every benchmark report starts with (shared by the bench_* scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else whatever ``platform`` knows."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine(**versions: str) -> dict[str, Any]:
    """CPU, cores, memory, SIMD flags, platform, Python, load average and the given versions."""
    flags: set[str] = set()
    for line in _cpuinfo():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    try:
        memory_gb: float | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "versions": versions,
    }
