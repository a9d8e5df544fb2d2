"""The benchmark report's summary: medians per target setup, curve rows sorted by offered load."""

from __future__ import annotations

from cli.bench.plot import summary


def row(setup: str, tps: float, p99: float, offered: float = 0, cpu: float = 50.0) -> dict[str, object]:
    return {"setup": setup, "committed_tps": tps, "offered_tps": offered, "latency_ms_p50": p99 / 4,
            "node_cpu_ms_per_tx": 1000 / tps,
            "latency_ms_p95": p99 / 2, "latency_ms_p99": p99, "dropped": 0,
            "nodes": [{"cpu_percent": cpu, "peak_rss_mb": 100.0}, {"cpu_percent": cpu + 10, "peak_rss_mb": 120.0}]}


def test_target_setups_show_the_median_of_their_runs_and_every_run() -> None:
    text = summary([row("pbft4-max", 2100.0, 900), row("pbft4-max", 1900.0, 1100), row("pbft4-max", 2300.0, 950),
                    row("pbft4-curve", 990.0, 200, offered=1000), row("pbft4-curve", 250.0, 80, offered=250)])
    line = next(li for li in text.splitlines() if li.startswith("| pbft4-max "))
    assert "**2100.0** (2100.0, 1900.0, 2300.0)" in line
    assert "| 950.0 |" in line  # the median p99, not the mean
    assert line.endswith("| 55.0 | 0.476 | 120.0 |")  # median node CPU (%, ms per tx), highest peak RSS
    curve = [li for li in text.splitlines() if li.startswith("| pbft4-curve ")]
    assert [c.split("|")[2].strip() for c in curve] == ["250", "1000"]
    assert "pbft4-curve" not in text.split("| curve |")[0]
