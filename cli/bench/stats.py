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
    cpu_s: dict[int, float]  # user + system time used so far, per process (the node and its workers)
    wall_s: float


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError):
        return 100


def family(pid: int) -> list[int]:
    """`pid` and its live descendants (a node's signature worker processes), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except (OSError, ValueError):
                continue
    return found


def _cpu_s(pid: int) -> float | None:
    return stat_cpu_s(Path(f"/proc/{pid}/stat"))


def stat_cpu_s(stat: Path) -> float | None:
    """User + system CPU seconds from a /proc stat file (a process's, or a thread's under task/),
    or None when it is gone."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may itself hold spaces.
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _clock_ticks()
    except (IndexError, ValueError):
        return None


def cpu_sample(pid: int, now_s: float) -> CpuSample | None:
    """CPU time so far of the process and its descendants, or None when it is gone or not Linux."""
    times = {p: t for p in family(pid) if (t := _cpu_s(p)) is not None}
    return CpuSample(times, now_s) if pid in times else None


def cpu_used_s(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """CPU seconds the process and its workers used between two samples (a worker started
    meanwhile counts all its time)."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    return sum(t - before.cpu_s.get(p, 0.0) for p, t in after.cpu_s.items())


def cpu_percent(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """Percent of one core used between two samples by the process and its workers (a busy
    2-process node can show up to 200)."""
    used = cpu_used_s(before, after)
    if used is None or before is None or after is None:
        return None
    return round(100.0 * used / (after.wall_s - before.wall_s), 1)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (resident-set high-water mark) in MiB, summed over the process and its live workers
    (an upper bound: their peaks need not coincide), or None when unavailable."""
    return _status_mb(pid, "VmHWM")


def _status_mb(pid: int, field: str) -> float | None:
    """A kB field of /proc/PID/status in MiB, summed over the process and its live workers, or
    None when it is gone or not Linux."""
    total = None
    prefix = field + ":"
    for member in family(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(prefix):
                    total = (total or 0.0) + int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue
    return None if total is None else round(total, 1)


def rss_mb(pid: int) -> float | None:
    """VmRSS (resident memory now) in MiB, summed over the process and its live workers."""
    return _status_mb(pid, "VmRSS")


def rss_anon_mb(pid: int) -> float | None:
    """RssAnon in MiB (the resident part of the process's own memory, without files mapped from
    disk such as LevelDB's table files, whose pages the kernel can drop), summed likewise."""
    return _status_mb(pid, "RssAnon")
