"""The long-haul report's arithmetic: throughput over the first and last 10% of the transactions,
memory growth over the last half, peaks, and throughput against chain length."""

from __future__ import annotations

import pytest

from cli.bench.growth import first_last, peak_rss, rss_growth_last_half, throughput_curve, time_at, tps_between


def sample(t: float, committed: int, *rss: float | None) -> dict[str, object]:
    return {"t_s": t, "committed": committed, "rss_mb": list(rss)}


# 1,000 transactions: the first 500 at 100 tx/s (5 s), the next 500 at 50 tx/s (10 s).
SAMPLES = [sample(0, 0, 100.0, 90.0), sample(5, 500, 120.0, 95.0), sample(10, 750, 130.0, None),
           sample(15, 1000, 150.0, 80.0)]


def test_time_at_interpolates_between_samples() -> None:
    assert time_at(SAMPLES, 0) == 0
    assert time_at(SAMPLES, 100) == 1.0
    assert time_at(SAMPLES, 875) == 12.5
    with pytest.raises(ValueError, match="never reach"):
        time_at(SAMPLES, 1001)


def test_first_and_last_ten_percent() -> None:
    first, last = first_last(SAMPLES)
    assert first == pytest.approx(100.0)
    assert last == pytest.approx(50.0)
    assert tps_between(SAMPLES, 0.0, 1.0) == pytest.approx(1000 / 15)
    assert first_last([sample(0, 0, 1.0)]) == (None, None)


def test_rss_growth_over_the_last_half_and_peak() -> None:
    # Half of 1,000 is reached at t=5: node0 120 -> 150, node1 95 -> 80.
    assert rss_growth_last_half(SAMPLES) == [30.0, -15.0]
    assert rss_growth_last_half([*SAMPLES[:-1], sample(15, 1000, 150.0, None)]) == [30.0, None]
    assert peak_rss(SAMPLES) == [150.0, 95.0]


def test_throughput_against_chain_length() -> None:
    assert throughput_curve(SAMPLES) == [(500, 100.0), (750, 50.0), (1000, 50.0)]
    assert throughput_curve([sample(0, 0), sample(0, 10)]) == []  # no time passed: no point
    assert throughput_curve(SAMPLES[:1]) == []


def test_the_curve_joins_short_intervals() -> None:
    assert throughput_curve(SAMPLES, 5) == [(500, 100.0), (750, 50.0), (1000, 50.0)]
    assert throughput_curve(SAMPLES, 6) == [(1000, 1000 / 15)]  # 0 -> 10, and the 5 s left join it
    lumps = [sample(0, 0), sample(10, 100), sample(20, 300), sample(23, 330)]
    # The 3 s remainder (20 -> 23) is joined to the interval before it: 10 -> 23.
    assert throughput_curve(lumps, 10) == [(100, 10.0), (330, 230 / 13)]
