"""Validators wired by their own p2p links inside one process (real Nodes, real P2PNodes, loopback):
transaction gossip and catching up a missed commit, where a real-process test could not look inside.

Ports come from `make_testnet(base_port=P)` with P..P+1003 free; every node started is stopped in a
finally (the exit stack). Waiting polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from cli import testnet as tn
from ledger import keys
from node.node import Node
from tests.helpers.chain import resigned
from tests.helpers.nodes import pay
from tests.helpers.ports import free_base_port

pytestmark = pytest.mark.timeout(60)
FAST = {"tick_ms": 10, "status_interval_s": 0.1, "sync_lag_grace_s": 0.3}


async def eventually(predicate: Callable[[], Any], what: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


class Nodes:
    def __init__(self, stack: AsyncExitStack, net: tn.Testnet) -> None:
        self.stack, self.net = stack, net
        self.nodes: dict[int, Node] = {}
        self.accounts = [keys.PrivateKey.load(p) for p in net.account_files]

    async def start(self, k: int, **overrides: Any) -> Node:
        node = Node.open(self.net.node_homes[k], {**FAST, **overrides}, environ={})
        self.stack.push_async_callback(node.stop)
        await node.start()
        self.nodes[k] = node
        return node


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Nodes]:
    net = tn.make_testnet(tmp_path / "net", validators=4, accounts=3, base_port=free_base_port())
    async with AsyncExitStack() as stack:
        yield Nodes(stack, net)


async def test_a_transaction_reaches_every_running_validator_once_and_is_not_echoed(cluster: Nodes) -> None:
    """Two of four validators: no quorum, so the transaction stays pending where it can be seen."""
    a, b = await cluster.start(0), await cluster.start(1)
    await eventually(lambda: a.network is not None and len(a.network.connected_peers()) == 1, "a link")
    alice, bob = cluster.accounts[:2]
    tx = pay(alice, 0, bob)
    assert [o.code for o in await a.service.submit([tx.to_json()])] == ["accepted"]
    await eventually(lambda: tx.hash in b.mempool, "the transaction to reach node1's mempool")
    assert a.network is not None and b.network is not None
    assert a.network.gossip.batches_sent == 1
    assert b.network.gossip.batches_sent == 0  # what came by gossip is not passed on
    # A client resubmitting the pending transaction to node1 makes node1 send it out again.
    assert [o.code for o in await b.service.submit([tx.to_json()])] == ["duplicate"]
    await eventually(lambda: b.network is not None and b.network.gossip.batches_sent == 1, "a resend")
    # Peer heads are announced and shown.
    await eventually(lambda: [p["height"] for p in a.service.status()["peers"] if p["connected"]] == [0], "heads")


async def test_a_validator_that_missed_a_commit_catches_up_by_sync(cluster: Nodes) -> None:
    """PBFT: three of four commit without node3; started later at least one block behind, node3 sees its
    peers' heads one above its own for `sync_lag_grace_s`, fetches the block and its certificate,
    and then takes part in the next height."""
    nodes = [await cluster.start(k) for k in range(3)]
    alice, bob = cluster.accounts[:2]
    first = pay(alice, 0, bob)
    await nodes[0].service.submit([first.to_json()])
    status = await nodes[0].service.wait_committed(first.hash, 20)
    assert status is not None and status.height is not None
    # Usually height 1; on a loaded machine a round change may commit an empty block first.
    head = status.height
    await eventually(lambda: all(n.height == head for n in nodes), "three nodes at the same height")

    late = await cluster.start(3)
    assert late.height == 0 and late.network is not None
    await eventually(lambda: late.height == head, "node3 to fetch the blocks it missed")
    # The syncer counts a batch once the runtime has stored it, a moment after the height shows.
    sync = late.network.sync
    await eventually(lambda: sync.counters["blocks_applied"] == head, "node3's syncer to count them")
    for height in range(1, head + 1):
        assert late.store.load_block(height) == nodes[0].store.load_block(height)
        assert late.store.load_certificate(height) == nodes[0].store.load_certificate(height)
    assert late.service.status()["syncing"] is False and late.service.status()["blocks_behind"] == 0

    # Now a full member: with node0 gone, the remaining three (node3 among them) still commit.
    await nodes[0].stop()
    second = pay(alice, 1, bob)
    await nodes[1].service.submit([second.to_json()])
    status = await late.service.wait_committed(second.hash, 30)
    assert status is not None and status.status == "committed" and status.height is not None
    assert status.height > head


@pytest.mark.parametrize(("consensus", "admitted"), [("pbft", False), ("raft", True)])
async def test_gossiped_signatures_are_checked_unless_the_engine_trusts_validators(
        tmp_path: Path, consensus: str, admitted: bool) -> None:
    """The fault model decides: under PBFT a validator may lie, so a forged signature gossiped by a
    peer is refused; Raft assumes crash faults only, so a peer's gossip was verified by the validator
    that took it from the client and is not checked again (the docs state this trade)."""
    net = tn.make_testnet(tmp_path / "net", validators=2, consensus=consensus, accounts=2,
                          base_port=free_base_port())
    alice, bob = (keys.PrivateKey.load(p) for p in net.account_files)
    honest = pay(alice, 0, bob)
    forged = resigned(pay(alice, 1, bob), bob)  # alice's transfer, signed by bob
    async with AsyncExitStack() as stack:
        node = Node.open(net.node_homes[0], dict(FAST), environ={})
        stack.push_async_callback(node.stop)
        await node.start()
        peer = node.genesis.validators[1].node_id
        # Both in one batch: one admission round decides both, so waiting for one is waiting for both.
        assert node.intake.receive_txs(peer, b"[" + honest.encode() + b"," + forged.encode() + b"]")
        await eventually(lambda: honest.hash in node.mempool, "the honest transaction to be admitted")
        assert (forged.hash in node.mempool) is admitted
