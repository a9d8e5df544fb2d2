"""`ledgerd bench --down K`: the last K nodes are stopped before the clock starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.bench.load import Counters
from cli.bench.report import figures, table
from cli.bench.run import _running, run_bench, stop_nodes
from cli.bench.setup import BenchError


def test_stop_nodes_returns_once_the_processes_have_exited() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        assert all(_running(p.pid) for p in procs)
        stop_nodes([p.pid for p in procs])
        assert not any(_running(p.pid) for p in procs)  # exited (zombies until reaped count as gone)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_down_needs_pids_and_a_node_left(tmp_path: Path) -> None:
    nodes = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    with pytest.raises(BenchError, match="--down 1 needs --pids"):
        run_bench(nodes, None, 1, 1, tmp_path, None, None, down=1)
    with pytest.raises(BenchError, match="--down 2 needs --pids"):
        run_bench(nodes, None, 1, 1, tmp_path, [1, 2], None, down=2)


def test_the_report_says_how_many_validators_were_down() -> None:
    f = figures(Counters(), consensus="pbft", validators=4, tx_bytes=390, offered_tps=None, duration_s=1,
                elapsed_s=1, cpu_cores=2, nodes=[], mode="closed-loop", validators_down=1)
    assert f["validators_down"] == 1
    assert "pbft / 4 (1 stopped)" in table(f)
