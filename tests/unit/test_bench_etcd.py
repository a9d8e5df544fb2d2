"""scripts/bench-etcd's figure from the output of `etcdctl check perf`: PASS or FAIL, the writes/s."""

from __future__ import annotations

import pytest

from cli.bench.etcd import parse

BAR = " 60 / 60 Boooooooooooooooooooooooooooooooooooooooo! 100.00% 1m0s\n"
FAILED_RUN = BAR + ("FAIL: Throughput too low: 2524 writes/s\nSlowest request took too long: 1.604224s\n"
                    "Stddev too high: 0.204551s\nFAIL\n")
PASSED_RUN = BAR + ("PASS: Throughput is 14001 writes/s\nPASS: Slowest request took 0.204441s\n"
                    "PASS: Stddev is 0.023631s\nPASS\n")


def test_a_failed_check_still_gives_its_figure() -> None:
    row = parse(FAILED_RUN, 1, "3.4.23", 3)
    assert row == {"setup": "etcd3-check-perf-xl", "writes_per_s": 2524.0, "members": 3, "etcd_version": "3.4.23",
                   "check_perf_passed": False, "failed_requests": 0, "slowest_request_s": 1.604224,
                   "stddev_s": 0.204551}


def test_a_passed_check() -> None:
    row = parse(PASSED_RUN, 0, "3.4.23", 3)
    assert (row["writes_per_s"], row["check_perf_passed"], row["slowest_request_s"], row["stddev_s"]) == \
        (14001.0, True, 0.204441, 0.023631)


def test_failed_requests_are_counted() -> None:
    text = BAR + ("FAIL: too many errors\nFAIL: ERROR(context deadline exceeded) -> 12\n"
                  "FAIL: ERROR(etcdserver: too many requests) -> 3\n") + FAILED_RUN.removeprefix(BAR)
    assert parse(text, 1, "3.4.23", 3)["failed_requests"] == 15


def test_no_figure_is_an_error() -> None:
    with pytest.raises(ValueError, match="no 'writes/s' figure"):
        parse("Error: context deadline exceeded\n", 1, "3.4.23", 3)
