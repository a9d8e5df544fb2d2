"""Governance on a 4-validator PBFT cluster of real `ledgerd start` processes, driven like a user
would: `ledgerd testnet` writes the committee keys, `ledgerd gov propose|vote|show` decide, REST
shows the result on every node.

The tests run in order against one cluster (module scope) with a proposal lifetime of 3 blocks:
a freeze voted by 2 of 3 members takes effect on every node at the same height and the frozen
account is refused at submission everywhere; refusals (non-member, double vote, closed, expired,
unknown) come back with their codes; the allowlist policy refuses an unknown sender until it is
allowed; a node whose data directory is wiped resyncs the whole governed chain to the same app hash.

Every child is killed by PID in a finally; waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cli.client import ClientError, LedgerClient, RequestFailed
from ledger import keys
from ledger.tx import Transfer, Vote, sign_tx
from tests.helpers import ports

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
N = 4
CHAIN = "ledger-local"
LIFETIME = 3
START_TIMEOUT_S = 40.0
NODE_ENV = {"LEDGERD_STATUS_INTERVAL_S": "0.5", "LEDGERD_SYNC_LAG_GRACE_S": "1.0"}

pytestmark = pytest.mark.timeout(240)
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    return ports.wait_for(predicate, timeout_s, what, 0.1)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.base = ports.free_base_port(N)
        self.net = root / "net"
        self.cli("testnet", "--validators", str(N), "--out", str(self.net), "--accounts", "4",
                 "--base-port", str(self.base), "--proposal-lifetime", str(LIFETIME))
        self.homes = [self.net / f"node{k}" for k in range(N)]
        self.urls = [f"http://127.0.0.1:{self.base + k}" for k in range(N)]
        self.account_files = [self.net / "accounts" / e["key_file"]
                              for e in json.loads((self.net / "accounts" / "index.json").read_text())]
        self.accounts = [keys.PrivateKey.load(p) for p in self.account_files]
        members = json.loads((self.net / "committee" / "index.json").read_text())
        assert [m["weight"] for m in members] == [1, 1, 1]
        self.member_files = [self.net / "committee" / m["key_file"] for m in members]
        self.members = [keys.PrivateKey.load(p) for p in self.member_files]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def gov(self, *args: str, node: int = 0, check: bool = True) -> Any:
        result = self.cli("gov", *args, "--node", self.urls[node], check=check)
        return json.loads(result.stdout) if result.returncode == 0 else result

    def start(self, k: int) -> None:
        log = (self.homes[k] / "node.log").open("ab")
        try:
            proc = subprocess.Popen([*CLI, "start", "--home", str(self.homes[k])], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **NODE_ENV})
        finally:
            log.close()
        self.procs[k] = proc
        self.started.append(proc)

    def wait_ready(self, k: int) -> None:
        def up() -> bool:
            if self.procs[k].poll() is not None:
                raise AssertionError(f"node{k} exited with {self.procs[k].returncode}")
            try:
                self.client(k, 1.0).health()
            except ClientError:
                return False
            return True
        wait_for(up, START_TIMEOUT_S, f"node{k} to answer")

    def reap(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def client(self, k: int, timeout_s: float = 5.0) -> LedgerClient:
        return LedgerClient(self.urls[k], timeout_s=timeout_s)

    def get(self, k: int, path: str) -> Any:
        return self.client(k).request("GET", path)

    def height(self, k: int) -> int:
        return int(self.client(k).status()["height"])

    def transfer(self, sender: keys.PrivateKey, to: keys.PrivateKey, node: int = 0) -> dict[str, Any]:
        nonce = int(self.client(node).account(sender.address)["nonce"])
        tx = sign_tx(sender, CHAIN, nonce, Transfer(to.address, "LDG", 1))
        return self.client(node).submit(tx.to_json(), wait=True, wait_timeout_s=15)

    def converged(self) -> int:
        def same() -> int | None:
            heights = [self.height(k) for k in range(N)]
            return heights[0] if len(set(heights)) == 1 else None
        return wait_for(same, 60, "every node at the same height")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("gov"))
    try:
        for k in range(N):
            c.start(k)
        for k in range(N):
            c.wait_ready(k)
        wait_for(lambda: all(sum(p["connected"] for p in c.client(k).status()["peers"]) == N - 1
                             for k in range(N)), START_TIMEOUT_S, "a full mesh")
        yield c
    finally:
        c.reap()


def refused(cluster: Cluster, k: int, tx: Any) -> RequestFailed:
    with pytest.raises(RequestFailed) as info:
        cluster.client(k).submit(tx.to_json())
    return info.value


def test_a_freeze_voted_by_two_of_three_takes_effect_everywhere_at_one_height(cluster: Cluster) -> None:
    thief, victim = cluster.accounts[1], cluster.accounts[0]
    m0, m1, _ = (str(p) for p in cluster.member_files)
    proposed = cluster.gov("propose", "freeze-account", "--account", thief.address, "--key", m0, "--wait")
    pid = proposed["proposal"]
    assert proposed["status"] == "open" and proposed["tally"]["approve_weight"] == 1
    voted = cluster.gov("vote", pid, "--approve", "--key", m1, "--wait", node=2)
    assert voted["status"] == "executed"
    height = voted["executed_height"]
    cluster.converged()
    for k in range(N):
        view = cluster.get(k, f"/v1/governance/proposals/{pid}")
        assert view["status"] == "executed" and view["executed_height"] == height
        assert {v["member"] for v in view["votes"]} == {cluster.members[0].address, cluster.members[1].address}
        account = cluster.client(k).account(thief.address)
        assert account["frozen"] is True and account["roles"] == []
        block = cluster.get(k, f"/v1/blocks/{height}")
        assert [r["hash"] for r in block["receipts"]] == [voted["vote"]]
    # Refused at submission on every node, with the same code.
    nonce = int(cluster.client(0).account(thief.address)["nonce"])
    tx = sign_tx(thief, CHAIN, nonce, Transfer(victim.address, "LDG", 5))
    for k in range(N):
        error = refused(cluster, k, tx)
        assert (error.status, error.code) == (403, "account_frozen")
    result = cluster.cli("tx", "transfer", "--key", str(cluster.account_files[1]), "--to", victim.address,
                         "--amount", "5", "--node", cluster.urls[3], check=False)
    assert result.returncode == 1 and "account_frozen" in result.stderr
    # It may still receive.
    assert cluster.transfer(victim, thief)["status"] == "committed"
    shown = cluster.gov("show", pid, node=1)
    assert shown["status"] == "executed" and shown["executed_height"] == height and len(shown["votes"]) == 2


def test_votes_are_refused_with_their_codes(cluster: Cluster) -> None:
    m0, m1, m2 = cluster.members
    outsider = cluster.accounts[2]
    executed = cluster.get(0, "/v1/governance/proposals?status=executed")["proposals"][0]["id"]
    assert refused(cluster, 1, sign_tx(outsider, CHAIN, 0, Vote(executed, True))).code == "not_a_member"
    nonce = int(cluster.client(0).account(m2.address)["nonce"])
    assert refused(cluster, 0, sign_tx(m2, CHAIN, nonce, Vote(executed, True))).code == "proposal_closed"
    unknown = refused(cluster, 2, sign_tx(m2, CHAIN, nonce, Vote("ab" * 32, True)))
    assert (unknown.status, unknown.code) == (404, "unknown_proposal")
    # A fresh proposal: its proposer cannot vote again; after its lifetime nobody can.
    proposed = cluster.gov("propose", "freeze-account", "--account", outsider.address,
                           "--key", str(cluster.member_files[0]), "--wait")
    pid = proposed["proposal"]
    again = cluster.gov("vote", pid, "--approve", "--key", str(cluster.member_files[0]), check=False)
    assert again.returncode == 1 and "already_voted" in again.stderr
    for _ in range(LIFETIME):
        assert cluster.transfer(cluster.accounts[3], cluster.accounts[2], node=1)["status"] == "committed"
    late = cluster.gov("vote", pid, "--approve", "--key", str(cluster.member_files[1]), node=3, check=False)
    assert late.returncode == 1 and "proposal_closed" in late.stderr
    cluster.converged()
    for k in range(N):
        assert cluster.get(k, f"/v1/governance/proposals/{pid}")["status"] == "expired"
        assert cluster.client(k).account(outsider.address)["frozen"] is False
    bad = cluster.gov("propose", "freeze-account", "--account", m1.address, "--key",
                      str(cluster.member_files[0]), check=False)
    assert bad.returncode == 1 and "invalid_proposal" in bad.stderr


def _decide(cluster: Cluster, *action: str) -> dict[str, Any]:
    pid = cluster.gov("propose", *action, "--key", str(cluster.member_files[0]), "--wait")["proposal"]
    voted = cluster.gov("vote", pid, "--approve", "--key", str(cluster.member_files[2]), "--wait", node=1)
    assert voted["status"] == "executed", voted
    return voted  # type: ignore[no-any-return]


def test_the_allowlist_refuses_an_unknown_sender_until_it_is_allowed(cluster: Cluster) -> None:
    a0, a1 = cluster.accounts[0], cluster.accounts[3]
    _decide(cluster, "allow-account", "--account", a0.address)
    _decide(cluster, "set-policy", "--accounts", "allowlist")
    cluster.converged()
    nonce = int(cluster.client(0).account(a1.address)["nonce"])
    tx = sign_tx(a1, CHAIN, nonce, Transfer(a0.address, "LDG", 1))
    for k in range(N):
        error = refused(cluster, k, tx)
        assert (error.status, error.code) == (403, "not_permitted")
    assert cluster.transfer(a0, a1)["status"] == "committed"
    _decide(cluster, "allow-account", "--account", a1.address)
    assert cluster.client(2).submit(tx.to_json(), wait=True, wait_timeout_s=15)["status"] == "committed"
    overview = cluster.get(3, "/v1/governance")
    assert overview["policy"]["accounts"] == "allowlist" and overview["policy"]["allowlisted_accounts"] == 2


def test_unfreezing_restores_the_account(cluster: Cluster) -> None:
    thief = cluster.accounts[1]
    _decide(cluster, "allow-account", "--account", thief.address)
    _decide(cluster, "unfreeze-account", "--account", thief.address)
    assert cluster.transfer(thief, cluster.accounts[0], node=2)["status"] == "committed"


def test_a_wiped_node_resyncs_the_governed_chain_to_the_same_app_hash(cluster: Cluster) -> None:
    victim = 3
    height = cluster.converged()
    reference = cluster.client(0).status()["app_hash"]
    os.kill(cluster.procs[victim].pid, signal.SIGTERM)
    cluster.procs[victim].wait(timeout=30)
    shutil.rmtree(cluster.homes[victim] / "data")
    cluster.start(victim)
    cluster.wait_ready(victim)
    wait_for(lambda: cluster.height(victim) >= height, 60, "the wiped node to resync")
    status = cluster.client(victim).status()
    assert status["height"] == height and status["app_hash"] == reference
    for pid in (p["id"] for p in cluster.get(0, "/v1/governance/proposals")["proposals"]):
        path = f"/v1/governance/proposals/{pid}"
        assert cluster.get(victim, path) == cluster.get(0, path)
