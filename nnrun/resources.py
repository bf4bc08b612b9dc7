"""What this machine has to give: memory available now, and a byte count said in words.

Budgets elsewhere (a data file's arrays, a model and its optimizer state) are checked against
`available_memory()` before anything is allocated, so a request the machine cannot hold is a
message with figures instead of a MemoryError or an out-of-memory kill.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux `MemAvailable`, else free physical pages);
    None when the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    """`1536` -> `1.5 KiB`, `3.2e12` -> `2.9 TiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
