"""The long-haul report's arithmetic over the samples (pure): throughput early against late,
memory growth, throughput against chain length.

A sample is a dict with `t_s` (seconds since the load started), `committed` (transactions committed
by then) and `rss_mb` (each node's resident memory then, None where unknown), in time order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def time_at(samples: Sequence[dict[str, Any]], committed: float) -> float:
    """When the committed count reached `committed`, interpolated linearly between samples."""
    if not samples:
        raise ValueError("no samples")
    previous = samples[0]
    if committed <= previous["committed"]:
        return float(previous["t_s"])
    for sample in samples[1:]:
        if sample["committed"] >= committed:
            span = sample["committed"] - previous["committed"]
            part = (committed - previous["committed"]) / span if span else 1.0
            return float(previous["t_s"] + part * (sample["t_s"] - previous["t_s"]))
        previous = sample
    raise ValueError(f"the samples never reach {committed} committed transactions")


def tps_between(samples: Sequence[dict[str, Any]], low: float, high: float) -> float | None:
    """Committed tx/s while the count went from fraction `low` to fraction `high` of the final count
    (0.0 to 0.1: the first 10% of the transactions)."""
    total = samples[-1]["committed"] if samples else 0
    if total <= 0:
        return None
    start, end = time_at(samples, low * total), time_at(samples, high * total)
    return (high - low) * total / (end - start) if end > start else None


def first_last(samples: Sequence[dict[str, Any]], fraction: float = 0.1) -> tuple[float | None, float | None]:
    """Throughput over the first and over the last `fraction` of the committed transactions."""
    return tps_between(samples, 0.0, fraction), tps_between(samples, 1.0 - fraction, 1.0)


def rss_at(samples: Sequence[dict[str, Any]], committed: float, node: int, key: str = "rss_mb") -> float | None:
    """Node `node`'s RSS (or the sample's `key`, such as "rss_anon_mb") at the first sample with at
    least `committed` transactions committed."""
    for sample in samples:
        if sample["committed"] >= committed:
            value = sample.get(key, [None] * (node + 1))[node]
            return None if value is None else float(value)
    return None


def rss_growth_last_half(samples: Sequence[dict[str, Any]], key: str = "rss_mb") -> list[float | None]:
    """Per node, MiB of resident memory (or `key`) gained from half the final committed count to
    the end (negative when it shrank; None where a reading is missing)."""
    if not samples:
        return []
    total = samples[-1]["committed"]
    out: list[float | None] = []
    for node in range(len(samples[-1]["rss_mb"])):
        middle, end = rss_at(samples, total / 2, node, key), rss_at(samples, total, node, key)
        out.append(None if middle is None or end is None else round(float(end) - middle, 1))
    return out


def peak_rss(samples: Sequence[dict[str, Any]]) -> list[float | None]:
    """Per node, the highest resident memory sampled."""
    if not samples:
        return []
    peaks: list[float | None] = []
    for node in range(len(samples[-1]["rss_mb"])):
        seen = [float(s["rss_mb"][node]) for s in samples
                if node < len(s["rss_mb"]) and s["rss_mb"][node] is not None]
        peaks.append(max(seen) if seen else None)
    return peaks


def throughput_curve(samples: Sequence[dict[str, Any]], span_s: float = 0.0) -> list[tuple[int, float]]:
    """Throughput against chain length: (committed at the end of an interval, committed tx/s over it),
    each interval joining consecutive samples until it spans at least `span_s` seconds (blocks commit
    in lumps, so a short interval shows a lump, not a rate). A short remainder at the end is joined
    to the last interval."""
    if len(samples) < 2:
        return []
    anchors = [0]
    for i in range(1, len(samples)):
        if samples[i]["t_s"] - samples[anchors[-1]]["t_s"] >= span_s:
            anchors.append(i)
    last = len(samples) - 1
    if anchors[-1] != last:
        if len(anchors) > 1:
            anchors[-1] = last
        else:
            anchors.append(last)
    points = []
    for a, b in zip(anchors, anchors[1:], strict=False):
        before, after = samples[a], samples[b]
        span = after["t_s"] - before["t_s"]
        if span > 0:
            points.append((int(after["committed"]), (after["committed"] - before["committed"]) / span))
    return points
