"""A chain that lost its quorum says so: a 4-validator cluster of real `ledgerd start` processes on
127.0.0.1, two of them killed. Then `ledgerd tx ... --wait` fails with one line that says the
transaction was accepted, not committed, and why (the chain has not committed for N s and only 2 of
the 3 validators needed are connected); `ledgerd status` and /metrics show the same; and once the
two validators are back, the waiting transaction commits and the status says ok again.

Before the fault, the status names its fields for what they are: PBFT's engine reports the height it
is deciding as `working_height` (one above the committed `height`), and `p2p_url` is the URL the
other nodes' [peers] list for this node, not the bind address.

Every child is killed by PID in a finally, whatever happens; waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.client import ClientError, LedgerClient
from ledger import keys
from tests.helpers import ports

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
N = 4
START_TIMEOUT_S = 40.0
NODE_ENV = {"LEDGERD_STATUS_INTERVAL_S": "0.5", "LEDGERD_SYNC_LAG_GRACE_S": "1.0"}

pytestmark = pytest.mark.timeout(240)


class Cluster:
    def __init__(self, root: Path, consensus: str) -> None:
        self.root = root
        self.base = ports.free_base_port(N)
        result = subprocess.run(
            [*CLI, "testnet", "--validators", str(N), "--out", str(root / "net"), "--consensus", consensus,
             "--accounts", "2", "--base-port", str(self.base)],
            capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        self.homes = [root / "net" / f"node{k}" for k in range(N)]
        self.urls = [f"http://127.0.0.1:{self.base + k}" for k in range(N)]
        self.node_ids = [keys.PrivateKey.load(home / "node_key.pem").address for home in self.homes]
        self.accounts = root / "net" / "accounts"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, k: int) -> None:
        with (self.homes[k] / "node.log").open("ab") as log:
            proc = subprocess.Popen([*CLI, "start", "--home", str(self.homes[k])], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **NODE_ENV})
        self.procs[k] = proc
        self.started.append(proc)

    def wait_ready(self, k: int) -> None:
        def up() -> bool:
            assert self.procs[k].poll() is None, f"node{k} exited:\n{self.log_tail(k)}"
            try:
                LedgerClient(self.urls[k], 1.0).health()
            except ClientError:
                return False
            return True

        ports.wait_for(up, START_TIMEOUT_S, f"node{k} to answer", 0.1)

    def kill(self, k: int) -> None:
        os.kill(self.procs[k].pid, signal.SIGKILL)
        self.procs[k].wait(timeout=30)

    def reap(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def log_tail(self, k: int) -> str:
        try:
            return "\n".join((self.homes[k] / "node.log").read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def status(self, k: int) -> dict[str, Any]:
        return LedgerClient(self.urls[k], 5.0).status()

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)

    def metrics(self, k: int) -> dict[str, float]:
        with urllib.request.urlopen(self.urls[k] + "/metrics", timeout=5) as resp:  # noqa: S310
            lines = resp.read().decode().splitlines()
        return {line.split()[0]: float(line.split()[1]) for line in lines
                if line.startswith("ledgerd_") and " " in line and "{" not in line}


@pytest.fixture(params=["pbft", "raft"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, request.param)
    try:
        for k in range(N):
            c.start(k)
        for k in range(N):
            c.wait_ready(k)
        ports.wait_for(lambda: all(c.status(k)["liveness"]["validators_connected"] == N for k in range(N)),
                       START_TIMEOUT_S, "every node to connect to every other", 0.1)
        yield c
    finally:
        c.reap()


def test_killing_two_of_four_validators_shows_lost_quorum_in_the_cli_and_status(cluster: Cluster) -> None:
    consensus = cluster.status(0)["consensus"]
    account = str(cluster.accounts / "account0.pem")
    to = keys.PrivateKey.load(cluster.accounts / "account1.pem").address
    node0 = cluster.urls[0]

    def send(nonce: int) -> subprocess.CompletedProcess[str]:
        return cluster.cli("tx", "transfer", "--key", account, "--to", to, "--amount", "1", "--node", node0,
                           "--nonce", str(nonce), "--wait", "--timeout", "3")

    healthy = send(0)
    assert healthy.returncode == 0, healthy.stderr
    height = json.loads(healthy.stdout)["height"]
    ports.wait_for(lambda: all(cluster.status(k)["height"] >= height for k in range(N)), 20,
                   "every node to commit the first transfer", 0.1)

    # Status names its fields for what they are (issue 17, item 6).
    status = cluster.status(0)
    assert status["consensus_health"] == "ok"
    assert status["liveness"] == {**status["liveness"], "validators": 4, "max_faulty": 1, "quorum": 3,
                                  "validators_connected": 4}
    assert "height" not in status["engine"]
    if consensus == "pbft":
        assert status["engine"]["working_height"] == status["height"] + 1
    listed = {p["node_id"]: p["url"] for p in cluster.status(1)["peers"]}
    assert status["p2p_url"] == listed[cluster.node_ids[0]] == f"wss://127.0.0.1:{cluster.base + 1000}"
    assert status["p2p_bind"] == f"127.0.0.1:{cluster.base + 1000}"

    # Two of four down: more than f = 1, so no quorum of 3.
    cluster.kill(2)
    cluster.kill(3)
    ports.wait_for(lambda: cluster.status(0)["liveness"]["validators_connected"] == 2, 20,
                   "node0 to see that two validators are gone", 0.1)

    stalled = send(1)
    assert stalled.returncode == 1, (stalled.stdout, stalled.stderr)
    line = stalled.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert line.startswith("ledgerd: error: transaction "), line
    assert "accepted, not committed within 3 s; the chain has not committed for " in line, line
    assert "s and only 2 of the 3 validators needed are connected" in line, line
    assert "refused" not in line, line

    result = cluster.cli("status", "--node", node0)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["consensus_health"] == "stalled: only 2 of the 3 validators needed are connected"
    live = status["liveness"]
    assert (live["validators_connected"], live["quorum"]) == (2, 3)
    assert live["seconds_since_commit"] >= 3.0  # the last commit was before the kill and the 3 s wait
    assert "only 2 of the 3 validators needed are connected" in result.stderr
    # The engine keeps trying: its round or election timeouts since the last commit count up.
    ports.wait_for(lambda: cluster.status(0)["liveness"]["rounds_without_commit"] >= 1, 30,
                   "node0 to count rounds or elections without a commit", 0.2)
    metrics = cluster.metrics(0)
    assert metrics["ledgerd_validators_connected"] == 2 and metrics["ledgerd_quorum"] == 3
    assert metrics["ledgerd_consensus_ok"] == 0 and metrics["ledgerd_seconds_since_commit"] >= 3.0

    # What the README tells an operator to do: bring the validators back; the accepted transfer commits.
    for k in (2, 3):
        cluster.start(k)
    for k in (2, 3):
        cluster.wait_ready(k)
    ports.wait_for(lambda: cluster.status(0)["consensus_health"] == "ok", 60, "consensus to be ok again", 0.2)
    client = LedgerClient(node0, 5.0)
    sender = keys.PrivateKey.load(cluster.accounts / "account0.pem").address
    ports.wait_for(lambda: client.account(sender)["nonce"] == 2, 60,
                   "the transfer accepted while the chain was stalled to commit", 0.2)
    assert cluster.metrics(0)["ledgerd_consensus_ok"] == 1
