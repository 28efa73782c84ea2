"""The CPU as Linux describes it (``/proc/cpuinfo``): its model name and feature flags, read once.

Features are read at run time, never inferred from CPU names (machines here change between runs). Torch-free:
training's precision choice, the API's shared calibration and the benchmarks read the same values.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The first processor's model name and flags; ``platform``'s name and no flags where cpuinfo is unreadable."""
    name, flags = "", frozenset[str]()
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return name or platform.processor() or "unknown", flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    return cpu_info()[1]
