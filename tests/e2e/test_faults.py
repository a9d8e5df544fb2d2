"""Fault tests on the docker compose cluster: crashes, restarts, pauses and network partitions.

Four validators tolerate one faulty node (PBFT: f = 1, quorum 3; Raft: majority 3 of 4), so:
- with any one node killed, stopped, paused or cut off, the other three keep committing;
- a node that missed blocks catches up when it comes back, to the very same blocks;
- a 2-2 split leaves no side with a quorum: nothing commits until the split heals, then it does.

They run in every `./scripts/test` where docker and a compose tool are present; they are written
against the REST API of the contract and run unchanged under either engine (LEDGERD_CONSENSUS=raft).
Each test uses its own funded sender, so one failing test cannot leave a nonce gap for the next.
"""

from __future__ import annotations

import time

import pytest

from ledger.tx import Record, Transfer
from tests.e2e.cluster import NODES, Cluster

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1500),
]

COMMIT_TIMEOUT_S = 90.0  # covers a view/round change or a Raft election after a node vanished
CATCH_UP_TIMEOUT_S = 120.0
DISCONNECT_S = 15.0
SPLIT_OBSERVE_S = 10.0


def commit_transfers(cluster: Cluster, via: str, sender_index: int, count: int) -> int:
    """Submit `count` transfers from account `sender_index` through `via`, one after another, each
    committed before the next; returns the height of the last one."""
    accounts = cluster.accounts()
    sender, receiver = accounts[sender_index], accounts[-1]
    nonce = cluster.next_nonce(via, sender.address)
    height = 0
    for i in range(count):
        tx = cluster.sign(sender, Transfer(receiver.address, "LDG", 1 + i), nonce + i)
        tx_hash = cluster.submit(via, tx)
        height = int(cluster.wait_committed(via, tx_hash, COMMIT_TIMEOUT_S)["height"])
    return height


def assert_caught_up(cluster: Cluster, services: tuple[str, ...], height: int) -> None:
    for name in services:
        cluster.wait_height(name, height, CATCH_UP_TIMEOUT_S)
    cluster.assert_same_chain(services, height)


def test_a_transfer_commits_and_every_node_agrees(healed: Cluster) -> None:
    accounts = healed.accounts()
    sender, receiver = accounts[0], accounts[1]
    before = healed.get("node0", f"/v1/accounts/{receiver.address}")["balances"]["LDG"]
    nonce = healed.next_nonce("node1", sender.address)
    tx = healed.sign(sender, Transfer(receiver.address, "LDG", 25), nonce)
    # Submitted to node1 and read back from all four: the tx travels and the block is everyone's.
    status = healed.wait_committed("node1", healed.submit("node1", tx), COMMIT_TIMEOUT_S)
    assert status["result"]["code"] == "ok", status
    assert_caught_up(healed, NODES, int(status["height"]))
    for name in NODES:
        assert healed.get(name, f"/v1/accounts/{receiver.address}")["balances"]["LDG"] == before + 25
        on_node = healed.tx_status(name, tx.hash)
        assert on_node is not None and on_node["height"] == status["height"], (name, on_node)


def test_with_one_node_killed_the_others_keep_committing_and_it_recovers(healed: Cluster) -> None:
    healed.kill("node3")
    height = commit_transfers(healed, "node0", sender_index=2, count=3)
    for name in ("node0", "node1", "node2"):
        healed.wait_height(name, height, CATCH_UP_TIMEOUT_S)
    # The crashed node restarts from its own database and fetches what it missed.
    healed.start("node3")
    healed.wait_healthy(("node3",))
    assert_caught_up(healed, NODES, height)


def test_a_stopped_node_restarts_and_catches_up(healed: Cluster) -> None:
    healed.stop("node2")
    height = commit_transfers(healed, "node1", sender_index=3, count=3)
    healed.start("node2")
    healed.wait_healthy(("node2",))
    assert_caught_up(healed, NODES, height)
    # And it takes part again: a transaction sent to it commits everywhere.
    later = commit_transfers(healed, "node2", sender_index=3, count=1)
    assert_caught_up(healed, NODES, later)


def test_a_paused_node_catches_up_after_unpause(healed: Cluster) -> None:
    healed.pause("node1")
    height = commit_transfers(healed, "node0", sender_index=4, count=2)
    healed.unpause("node1")
    assert_caught_up(healed, NODES, height)


def test_a_node_cut_off_for_15_seconds_rejoins(healed: Cluster) -> None:
    sender = healed.accounts()[5]
    healed.disconnect("node3")
    cut_at = time.monotonic()
    # The outage lasts a fixed time by design; the other three commit throughout it.
    height = commit_transfers(healed, "node0", sender_index=5, count=1)
    nonce = healed.next_nonce("node0", sender.address)
    while time.monotonic() - cut_at < DISCONNECT_S:
        tx = healed.sign(sender, Record(f"during-outage-{nonce}", "x"), nonce)
        height = int(healed.wait_committed("node0", healed.submit("node0", tx), COMMIT_TIMEOUT_S)["height"])
        nonce += 1
    # It really was cut off: it has not seen what the others committed meanwhile.
    assert healed.get_inside("node3", "/v1/status")["height"] < height
    healed.connect("node3")
    assert_caught_up(healed, NODES, height)


def test_a_two_two_split_commits_nothing_until_it_heals(healed: Cluster) -> None:
    sender, receiver = healed.accounts()[6], healed.accounts()[7]
    healed.partition(("node0", "node1"), ("node2", "node3"))
    heights = {name: healed.height(name) for name in NODES}
    tx = healed.sign(sender, Transfer(receiver.address, "LDG", 7), healed.next_nonce("node0", sender.address))
    tx_hash = healed.submit("node0", tx)
    # Safety under partition: with quorum 3, neither half may commit anything. Watched for a while.
    deadline = time.monotonic() + SPLIT_OBSERVE_S
    while time.monotonic() < deadline:
        status = healed.tx_status("node0", tx_hash)
        assert status is None or status["status"] == "pending", status
        for name in NODES:
            assert healed.height(name) == heights[name], f"{name} committed during a 2-2 split"
        time.sleep(1.0)
    healed.heal()
    # Liveness after healing: the pending transaction commits and all four agree on the chain.
    status = healed.wait_committed("node0", tx_hash, COMMIT_TIMEOUT_S)
    assert_caught_up(healed, NODES, int(status["height"]))
