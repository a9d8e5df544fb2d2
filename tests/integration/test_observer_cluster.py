"""An observer follows a 4-validator PBFT chain of real `ledgerd start` processes: written by
`ledgerd testnet --observers 1`, it reports role observer, keeps up under an outside client's load
and through a validator's `kill -9`, ends with the validators' blocks and state, never appears in
a certificate, and a transaction sent to it (forwarded to the validators) commits. The proof
bundles it serves are byte for byte those of the validator it took each block from, and verify
offline with `ledgerd verify`.

Every child is killed by PID in a finally; waits poll with deadlines.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cli.client import ClientError, LedgerClient
from ledger import keys
from ledger.tx import Transfer, sign_tx
from tests.helpers import ports
from tests.integration.test_governance_cluster import CHAIN, START_TIMEOUT_S, Cluster, N, wait_for

pytestmark = pytest.mark.timeout(240)
OBSERVER = N  # the observer's index in Cluster.homes / urls / procs


class ObservedCluster(Cluster):
    def __init__(self, root: Path, consensus: str = "pbft") -> None:  # not super().__init__: no observer
        self.base = ports.free_base_port(N, observers=1)
        self.net = root / "net"
        self.cli("testnet", "--validators", str(N), "--out", str(self.net), "--accounts", "4",
                 "--base-port", str(self.base), "--observers", "1", "--consensus", consensus)
        self.homes = [*(self.net / f"node{k}" for k in range(N)), self.net / "observer0"]
        self.urls = [*(f"http://127.0.0.1:{self.base + k}" for k in range(N)), f"http://127.0.0.1:{self.base + 100}"]
        index = json.loads((self.net / "accounts" / "index.json").read_text())
        self.account_files = [self.net / "accounts" / e["key_file"] for e in index]
        self.accounts = [keys.PrivateKey.load(p) for p in self.account_files]
        self.procs = {}
        self.started = []


@contextmanager
def running(c: ObservedCluster) -> Iterator[ObservedCluster]:
    """Every node of `c` started (validators and observer) and the validators in a full mesh; every
    node stopped afterwards, also when the test failed."""
    try:
        for k in range(N + 1):
            c.start(k)
        for k in range(N + 1):
            c.wait_ready(k)
        wait_for(lambda: all(sum(p["connected"] for p in c.client(k).status()["peers"]) == N - 1
                             for k in range(N)), START_TIMEOUT_S, "a full mesh of validators")
        yield c
    finally:
        c.reap()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedCluster]:
    with running(ObservedCluster(tmp_path_factory.mktemp("observer"))) as c:
        yield c


def _load(cluster: ObservedCluster, stop: threading.Event, committed: list[str]) -> None:
    """An outside client: transfers from account0 to account1 through node0..node2, one at a time."""
    sender, to = cluster.accounts[0], cluster.accounts[1]
    k = 0
    while not stop.is_set():
        node = k % 3
        k += 1
        try:
            client = cluster.client(node)
            nonce = int(client.account(sender.address)["nonce"])
            tx = sign_tx(sender, CHAIN, nonce, Transfer(to.address, "LDG", 1))
            result = client.submit(tx.to_json(), wait=True, wait_timeout_s=10)
        except ClientError:
            continue
        if result.get("status") == "committed":
            committed.append(tx.hash)


def test_an_observer_follows_under_load_and_a_kill_and_its_transaction_commits(cluster: ObservedCluster) -> None:
    observer = cluster.client(OBSERVER)
    status = observer.status()
    assert status["role"] == "observer"
    observer_id = status["node_id"]
    assert observer_id not in {v["node_id"] for v in status["validators"]}
    assert all(cluster.client(k).status()["role"] == "validator" for k in range(N))

    stop, committed = threading.Event(), []
    loader = threading.Thread(target=_load, args=(cluster, stop, committed), daemon=True)
    loader.start()
    try:
        wait_for(lambda: len(committed) >= 5, 60, "load to commit")
        cluster.procs[3].kill()  # kill -9 one validator: f = 1, the chain goes on
        cluster.procs[3].wait(timeout=30)
        before = len(committed)
        wait_for(lambda: len(committed) >= before + 5, 60, "load to commit without node3")
        # A transaction sent to the observer: forwarded to the validators, committed, seen here.
        sender, to = cluster.accounts[2], cluster.accounts[3]
        tx = sign_tx(sender, CHAIN, 0, Transfer(to.address, "LDG", 7))
        result = LedgerClient(cluster.urls[OBSERVER], timeout_s=30).submit(tx.to_json(), wait=True,
                                                                           wait_timeout_s=25)
        assert result["status"] == "committed", result
    finally:
        stop.set()
        loader.join(timeout=30)

    height = max(cluster.height(k) for k in range(3))
    wait_for(lambda: observer.status()["height"] >= height, 60, "the observer to catch up")
    for h in range(1, height + 1):
        mine: dict[str, Any] = cluster.get(OBSERVER, f"/v1/blocks/{h}")
        theirs: dict[str, Any] = cluster.get(h % 3, f"/v1/blocks/{h}")
        assert mine["hash"] == theirs["hash"]
        assert observer_id not in str(mine.get("certificate"))
    for account in cluster.accounts:
        assert observer.account(account.address)["balances"] == cluster.client(0).account(account.address)["balances"]
    assert observer.status()["role"] == "observer"
    assert observer.transaction(tx.hash)["status"] == "committed"


def _raw(cluster: ObservedCluster, k: int, path: str) -> bytes:
    with urllib.request.urlopen(cluster.urls[k] + path, timeout=10) as response:
        body: bytes = response.read()
    return body


def _committed(cluster: ObservedCluster, k: int, tx_hash: str) -> bool:
    try:
        return bool(cluster.client(k).transaction(tx_hash)["status"] == "committed")
    except ClientError:  # not known there yet
        return False


def test_the_observer_serves_the_same_proof_bundles_as_the_validators(cluster: ObservedCluster,
                                                                      tmp_path: Path) -> None:
    """The observer holds no certificate of its own: block sync gives it the one the validator it
    fetched the block from assembled. So each of its bundles is byte-identical to that validator's,
    and equal to every validator's except (PBFT) for which quorum of seals the certificate holds."""
    validators = [k for k in range(N) if cluster.procs[k].poll() is None]  # node3 may have been killed above
    sender, to = cluster.accounts[3], cluster.accounts[0]
    hashes = []
    for _ in range(3):
        nonce = int(cluster.client(0).account(sender.address)["nonce"])
        tx = sign_tx(sender, CHAIN, nonce, Transfer(to.address, "LDG", 2))
        result = LedgerClient(cluster.urls[0], timeout_s=30).submit(tx.to_json(), wait=True, wait_timeout_s=25)
        assert result["status"] == "committed", result
        hashes.append(tx.hash)
    for k in [*validators, OBSERVER]:
        wait_for(lambda k=k: all(_committed(cluster, k, h) for h in hashes), 60,
                 f"node {k} to commit the transfers")
    observer_id = cluster.client(OBSERVER).status()["node_id"]
    genesis_file = cluster.homes[0] / "genesis.json"
    for n, tx_hash in enumerate(hashes):
        height = cluster.client(OBSERVER).transaction(tx_hash)["height"]
        for path in (f"/v1/transactions/{tx_hash}/proof", f"/v1/blocks/{height}/proof"):
            mine = _raw(cluster, OBSERVER, path)
            theirs = [_raw(cluster, k, path) for k in validators]
            assert mine in theirs, f"the observer's {path} is no validator's"
            without_certificate = {k: v for k, v in json.loads(mine).items() if k != "certificate"}
            for bundle in theirs:
                assert {k: v for k, v in json.loads(bundle).items() if k != "certificate"} == without_certificate
        bundle_file = tmp_path / f"observer-{n}.json"
        bundle_file.write_bytes(_raw(cluster, OBSERVER, f"/v1/transactions/{tx_hash}/proof"))
        summary = json.loads(cluster.cli("verify", str(bundle_file), "--genesis", str(genesis_file)).stdout)
        assert summary["valid"] is True and summary["tx"] == tx_hash and summary["height"] == height, summary
        assert summary["finality"] == "bft-quorum" and summary["validators"] == N
        assert observer_id not in {s["node_id"] for s in summary["signers"]}


def test_a_raft_observer_follows_and_forwards(tmp_path: Path) -> None:
    """A Raft observer runs the engine as a learner outside the set: it follows by block sync."""
    c = ObservedCluster(tmp_path, consensus="raft")
    try:
        for k in range(N + 1):
            c.start(k)
        for k in range(N + 1):
            c.wait_ready(k)
        assert c.client(OBSERVER).status()["role"] == "observer"
        sender, to = c.accounts[0], c.accounts[1]
        for nonce in range(3):
            tx = sign_tx(sender, CHAIN, nonce, Transfer(to.address, "LDG", 1))
            result = LedgerClient(c.urls[OBSERVER], timeout_s=30).submit(tx.to_json(), wait=True, wait_timeout_s=25)
            assert result["status"] == "committed", result
        height = max(c.height(k) for k in range(N))
        wait_for(lambda: c.height(OBSERVER) >= height, 60, "the observer to catch up")
        assert c.get(OBSERVER, f"/v1/blocks/{height}")["hash"] == c.get(0, f"/v1/blocks/{height}")["hash"]
    finally:
        c.reap()


def test_a_node_joined_from_the_validators_peer_args_follows(cluster: ObservedCluster, tmp_path: Path) -> None:
    """The runbook's first step: `ledgerd status --peer-arg` of each running validator gives the
    `--peer` arguments of `ledgerd join`, and the observer it writes follows the chain."""
    live = [k for k in range(N) if cluster.procs[k].poll() is None]  # node3 may have been killed above
    args = [cluster.cli("status", "--node", cluster.urls[k], "--peer-arg").stdout.strip() for k in live]
    for k, arg in zip(live, args, strict=True):
        status = cluster.client(k).status()
        assert arg == f"{status['node_id']}={status['p2p_url']}"
    rest, p2p = ports.free_ports(2)
    home = tmp_path / "joined"
    cluster.cli("join", "--genesis", str(cluster.homes[0] / "genesis.json"),
                *(a for arg in args for a in ("--peer", arg)), "--out", str(home),
                "--rest-port", str(rest), "--p2p-port", str(p2p))
    k = len(cluster.homes)
    cluster.homes.append(home)
    cluster.urls.append(f"http://127.0.0.1:{rest}")
    cluster.start(k)  # reaped with the cluster
    cluster.wait_ready(k)
    height = max(cluster.height(v) for v in live)
    wait_for(lambda: cluster.height(k) >= height, 60, "the joined node to catch up")
    assert cluster.get(k, f"/v1/blocks/{height}")["hash"] == cluster.get(live[0], f"/v1/blocks/{height}")["hash"]
    assert cluster.client(k).status()["role"] == "observer"
