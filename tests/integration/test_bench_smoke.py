"""`ledgerd bench` end to end against a single-validator node in a subprocess: the JSON report line
parses, holds every documented key (the ceiling too), and shows committed transactions, here with
every transfer to a fresh account. No timing assertions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
KEYS = ("consensus", "validators", "tx_bytes", "offered_tps", "committed_tps", "latency_ms_p50",
        "latency_ms_p95", "latency_ms_p99", "duration_s", "cpu_cores", "nodes", "verify_per_s_per_core", "cores",
        "ceiling_tps", "share_of_ceiling", "fresh_accounts")


def test_bench_reports_committed_transactions(tmp_path: Path) -> None:
    made = subprocess.run([*CLI, "testnet", "--validators", "1", "--out", str(tmp_path / "net")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert made.returncode == 0, made.stderr
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen([*CLI, "start", "--home", str(tmp_path / "net" / "node0"), "--rest-port", "0",
                                 "--p2p-port", "0"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        url = None
        while url is None:
            assert node.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the node did not announce its URL:\n" + log.read_text()
            found = re.search(r"serving (http://\S+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        bench = subprocess.run([*CLI, "bench", "--nodes", url, "--duration", "3", "--rate", "100",
                                "--accounts", "4", "--keys", str(tmp_path / "net" / "accounts"),
                                "--pids", str(node.pid), "--fresh-accounts"],
                               capture_output=True, text=True, timeout=25, check=False)
    finally:
        node.kill()
        node.wait()
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout.strip().splitlines()[-1])
    assert set(KEYS) <= set(report)
    assert report["committed"] > 0 and report["committed_tps"] > 0
    assert report["consensus"] == "pbft" and report["validators"] == 1
    assert report["nodes"][0]["pid"] == node.pid and report["nodes"][0]["peak_rss_mb"] is not None
    # One validator checks each transaction once: its ceiling is every core's verification rate.
    assert report["verify_per_s_per_core"] > 0 and report["cores"] >= 1
    assert abs(report["ceiling_tps"] - report["cores"] * report["verify_per_s_per_core"]) <= 1
    assert report["share_of_ceiling"] is not None and report["fresh_accounts"] is True
    assert report["failed"] == 0  # transfers to accounts that did not exist are valid
