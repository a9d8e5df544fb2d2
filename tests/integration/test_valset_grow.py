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
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ports
from tests.integration.test_governance_cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(180)


class Pair(Cluster):
    """node0 (the lone validator) and observer0 of a fresh one-validator testnet."""

    def __init__(self, root: Path, consensus: str, *extra: str) -> None:  # not super().__init__: one validator
        self.base = ports.free_base_port(1, observers=1)
        self.net = root / "net"
        self.cli("testnet", "--validators", "1", "--observers", "1", "--out", str(self.net),
                 "--base-port", str(self.base), "--consensus", consensus, *extra)
        self.homes = [self.net / "node0", self.net / "observer0"]
        self.urls = [f"http://127.0.0.1:{self.base}", f"http://127.0.0.1:{self.base + 100}"]
        self.procs = {}
        self.started = []

    def transfer_cli(self, k: int, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ledgerd tx transfer` of 1 from account0 to account1 through node k, waiting for the commit."""
        to = self.cli("keys", "show", str(self.net / "accounts" / "account1.pem")).stdout.strip()
        return self.cli("tx", "transfer", "--key", str(self.net / "accounts" / "account0.pem"), "--to", to,
                        "--amount", "1", "--node", self.urls[k], "--wait", *extra, check=check)

    def committed_height(self, k: int) -> int:
        answer: dict[str, Any] = json.loads(self.transfer_cli(k).stdout)
        assert answer["status"] == "committed", answer
        return int(answer["height"])


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
        for k in (0, 1):
            p.start(k)
            p.wait_ready(k)
        p.committed_height(0)
        wait_for(lambda: p.height(1) >= 1, 30, "the observer to follow the lone validator")
        new_id = p.client(1).status()["node_id"]
        members = sorted(str(f) for f in (p.net / "committee").glob("member*.pem"))
        proposed = p.gov("propose", "add-validator", "--node-id", new_id, "--p2p-url",
                         f"wss://127.0.0.1:{p.base + 1100}", "--name", "second", "--key", members[0], "--wait")
        voted = p.gov("vote", proposed["proposal"], "--approve", "--key", members[1], "--wait")
        assert voted["status"] == "executed", voted
        effective = p.gov("show", proposed["proposal"])["effective_height"]
        for k in (0, 1):
            wait_for(lambda k=k: [v["name"] for v in p.client(k).status()["validators"]] == ["node0", "second"]
                     and p.height(k) >= effective, 30, f"node {k} to show the set of two")
        assert p.client(1).status()["role"] == "validator"
        heights = [p.committed_height(k) for k in (0, 1, 0)]
        assert min(heights) > effective
        if consensus == "pbft":  # n = 2, f = 0: every block from the activation height needs both seals
            block = p.get(0, f"/v1/blocks/{max(heights)}")
            assert {s["validator"] for s in block["certificate"]["seals"]} == {p.client(0).status()["node_id"], new_id}
        # Two validators, a quorum of two: with the newcomer gone nothing commits, and the node says why.
        p.procs[1].kill()
        p.procs[1].wait(timeout=30)
        stuck = p.transfer_cli(0, "--timeout", "3", check=False)
        assert stuck.returncode == 1 and "not committed within" in stuck.stderr, stuck.stderr


def test_a_lone_validator_without_a_committee_runs_no_p2p(tmp_path: Path) -> None:
    """Its set can never change, so nobody could ever join it: no p2p port, and --peer-arg says so."""
    with pair(tmp_path, "pbft", "--committee", "0") as p:
        p.start(0)
        p.wait_ready(0)
        assert p.client(0).status()["p2p_url"] in (None, "")
        lone = p.cli("status", "--node", p.urls[0], "--peer-arg", check=False)
        assert lone.returncode == 1 and "reports no p2p URL" in lone.stderr, lone.stderr
