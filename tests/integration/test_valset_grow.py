"""A chain that starts with one validator grows to two, as `ledgerd` processes under both engines:
the lone validator of a governed chain takes an observer's link (written by `ledgerd testnet
--observers 1`), the committee votes the observer in, and from the activation height both count
(under PBFT both seal; with the newcomer stopped, n = 2 and a quorum of 2 commit nothing and say
why). A chain without a committee can never change its set, so its lone validator runs no p2p.

Every child is killed by PID in a finally; waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.client import ClientError, LedgerClient
from tests.helpers import ports
from tests.integration.test_cli_node import CLI, ledgerd

pytestmark = pytest.mark.timeout(180)


class Pair:
    """node0 (the lone validator) and observer0 of a fresh one-validator testnet."""

    def __init__(self, root: Path, consensus: str, *extra: str) -> None:
        self.base = ports._pick(lambda b: [b, b + 1000, b + 100, b + 1100], 1101)[0]
        self.net = root / "net"
        made = ledgerd("testnet", "--validators", "1", "--observers", "1", "--out", str(self.net),
                       "--base-port", str(self.base), "--consensus", consensus, *extra)
        assert made.returncode == 0, made.stderr
        self.urls = [f"http://127.0.0.1:{self.base}", f"http://127.0.0.1:{self.base + 100}"]
        self.homes = [self.net / "node0", self.net / "observer0"]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, k: int) -> subprocess.Popen[bytes]:
        with (self.homes[k] / "node.log").open("ab") as log:
            proc = subprocess.Popen([*CLI, "start", "--home", str(self.homes[k])], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        ports.wait_for(lambda: self._up(k, proc), 30, f"node {k} to answer")
        return proc

    def _up(self, k: int, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"node {k} exited with {proc.returncode}")
        try:
            LedgerClient(self.urls[k], timeout_s=1.0).health()
        except ClientError:
            return False
        return True

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def status(self, k: int) -> dict[str, Any]:
        status: dict[str, Any] = LedgerClient(self.urls[k]).status()
        return status

    def run(self, *args: str) -> Any:
        result = ledgerd(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def send(self, k: int, amount: int = 1) -> dict[str, Any]:
        to = ledgerd("keys", "show", str(self.net / "accounts" / "account1.pem")).stdout.strip()
        answer: dict[str, Any] = self.run("tx", "transfer", "--key", str(self.net / "accounts" / "account0.pem"),
                                          "--to", to, "--amount", str(amount), "--node", self.urls[k], "--wait")
        return answer


@contextlib.contextmanager
def pair(root: Path, consensus: str, *extra: str) -> Iterator[Pair]:
    p = Pair(root, consensus, *extra)
    try:
        yield p
    finally:
        p.reap()


@pytest.mark.parametrize("consensus", ["pbft", "raft"])
def test_a_lone_validator_is_joined_by_a_second(tmp_path: Path, consensus: str) -> None:
    with pair(tmp_path, consensus) as p:
        p.start(0)
        newcomer = p.start(1)
        assert p.send(0)["status"] == "committed"
        ports.wait_for(lambda: p.status(1)["height"] >= 1, 30, "the observer to follow the lone validator")
        new_id = p.status(1)["node_id"]
        members = sorted(str(f) for f in (p.net / "committee").glob("member*.pem"))
        common = ("--node", p.urls[0])
        proposed = p.run("gov", "propose", "add-validator", "--node-id", new_id, "--p2p-url",
                         f"wss://127.0.0.1:{p.base + 1100}", "--name", "second", "--key", members[0], "--wait", *common)
        voted = p.run("gov", "vote", proposed["proposal"], "--approve", "--key", members[1], "--wait", *common)
        assert voted["status"] == "executed", voted
        effective = p.run("gov", "show", proposed["proposal"], *common)["effective_height"]
        for k in (0, 1):
            ports.wait_for(lambda k=k: [v["name"] for v in p.status(k)["validators"]] == ["node0", "second"]
                           and p.status(k)["height"] >= effective, 30, f"node {k} to show the set of two")
        assert p.status(1)["role"] == "validator"
        heights = [p.send(k)["height"] for k in (0, 1, 0)]
        assert min(heights) > effective
        if consensus == "pbft":  # n = 2, f = 0: every block from the activation height needs both seals
            block = LedgerClient(p.urls[0]).request("GET", f"/v1/blocks/{max(heights)}")
            assert {s["validator"] for s in block["certificate"]["seals"]} == {p.status(0)["node_id"], new_id}
        # Two validators, a quorum of two: with the newcomer gone nothing commits, and the node says why.
        newcomer.kill()
        newcomer.wait(timeout=30)
        stuck = ledgerd("tx", "transfer", "--key", str(p.net / "accounts" / "account0.pem"), "--to",
                        ledgerd("keys", "show", str(p.net / "accounts" / "account1.pem")).stdout.strip(),
                        "--amount", "1", "--node", p.urls[0], "--wait", "--timeout", "3")
        assert stuck.returncode == 1 and "not committed within" in stuck.stderr, stuck.stderr


def test_a_lone_validator_without_a_committee_runs_no_p2p(tmp_path: Path) -> None:
    """Its set can never change, so nobody could ever join it: no p2p port, and --peer-arg says so."""
    with pair(tmp_path, "pbft", "--committee", "0") as p:
        p.start(0)
        assert p.status(0)["p2p_url"] in (None, "")
        lone = ledgerd("status", "--node", p.urls[0], "--peer-arg")
        assert lone.returncode == 1 and "reports no p2p URL" in lone.stderr, lone.stderr
