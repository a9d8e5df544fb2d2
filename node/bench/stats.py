"""Latency percentiles and per-process CPU / peak-memory figures read from Linux's /proc."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class CpuSample:
    cpu_s: float  # user + system time the process has used so far
    wall_s: float


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def cpu_sample(pid: int, now_s: float) -> CpuSample | None:
    """The process's CPU time so far, or None when it is gone or this is not Linux."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may itself hold spaces.
    fields = text.rsplit(")", 1)[-1].split()
    try:
        utime, stime = int(fields[11]), int(fields[12])
    except (IndexError, ValueError):
        return None
    return CpuSample((utime + stime) / _clock_ticks(), now_s)


def cpu_percent(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """Percent of one core used between two samples (a busy 2-thread process can show up to 200)."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    return round(100.0 * (after.cpu_s - before.cpu_s) / (after.wall_s - before.wall_s), 1)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the resident-set high-water mark) in MiB, or None when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None
