"""An observer on an idle chain: how fast it follows, and how it is voted in. Real Nodes and
P2PNodes in one process, over loopback.

- A validator tells its observers its head as soon as it commits a block, and an observer (which
  never commits by consensus) fetches a block as soon as a peer is one ahead. The periodic status
  and the one-block-behind grace are set to a minute in that test, so that only the commit
  announcement can bring the observer a block within its deadline.
- A validator-set change decided on an idle chain takes effect without any other traffic: the
  heights up to its activation are proposed even empty, and then the chain is quiet again. Both
  engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from cli import testnet as tn
from ledger import keys
from ledger.governance import decode_action
from ledger.tx import Propose, Vote
from node.node import Node
from tests.helpers import ports
from tests.helpers.nodes import pay, signed, wire
from tests.integration.test_cluster_inprocess import FAST, eventually

pytestmark = pytest.mark.timeout(90)
N = 4
SLOW_HEADS = {"tick_ms": 10, "status_interval_s": 60.0, "sync_lag_grace_s": 60.0}
Started = tuple[list[Node], Node, tn.Testnet]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    """start(consensus, settings): 4 validators and an observer of a fresh testnet, all running."""
    async with AsyncExitStack() as stack:
        async def go(consensus: str, settings: dict[str, Any]) -> Started:
            net = tn.make_testnet(tmp_path / "net", validators=N, accounts=2, observers=1, consensus=consensus,
                                  base_port=ports.free_base_port(N, observers=1))
            started = []
            for home in (*net.node_homes, *net.observer_homes):
                node = Node.open(home, settings, environ={})
                stack.push_async_callback(node.stop)
                await node.start()
                started.append(node)
            validators = started[:N]
            await eventually(lambda: all(v.network is not None and len(v.network.connected_peers()) == N
                                         for v in validators), "every validator linked to the others and the observer")
            return validators, started[N], net
        yield go


async def test_an_observer_has_each_block_without_waiting_for_the_periodic_status(
        start: Callable[..., Awaitable[Started]]) -> None:
    validators, observer, net = await start("pbft", SLOW_HEADS)
    alice, bob = (keys.PrivateKey.load(p) for p in net.account_files)
    assert observer.network is not None and observer.network.sync.following_only
    assert validators[0].network is not None and not validators[0].network.sync.following_only
    for nonce in range(3):
        tx = pay(alice, nonce, bob)
        assert [o.code for o in await validators[nonce % N].service.submit([tx.to_json()])] == ["accepted"]
        await eventually(lambda n=nonce: validators[0].store.tip.height >= n + 1, f"block {nonce + 1} on node0")
        height = validators[0].store.tip.height
        await eventually(lambda h=height: observer.store.tip.height >= h, f"the observer at height {height}",
                         timeout_s=20.0)
        mine, theirs = observer.store.load_block(height), validators[0].store.load_block(height)
        assert mine is not None and theirs is not None and mine.hash == theirs.hash
    assert observer.network.sync.counters["blocks_applied"] >= 3
    await asyncio.sleep(0)  # nothing pending on the loop when the stack closes the nodes


@pytest.mark.parametrize("consensus", ["pbft", "raft"])
async def test_a_change_decided_on_an_idle_chain_takes_effect_without_other_traffic(
        start: Callable[..., Awaitable[Started]], consensus: str) -> None:
    validators, observer, net = await start(consensus, FAST)
    members = [keys.PrivateKey.load(p) for p in net.member_files[:2]]
    new_id = observer.status()["node_id"]
    add = signed(members[0], 0, Propose(*decode_action("add-validator", {
        "node_id": new_id, "p2p_url": observer.status()["p2p_url"], "name": "observer0"})))
    assert [o.code for o in await validators[0].service.submit(wire(add))] == ["accepted"]
    await eventually(lambda: validators[1].store.has_tx(add.hash), "the proposal committed")
    vote = signed(members[1], 0, Vote(add.hash, True))
    assert [o.code for o in await validators[1].service.submit(wire(vote))] == ["accepted"]
    await eventually(lambda: validators[0].store.has_tx(vote.hash), "the vote committed")
    change = validators[0].status()["validator_change"]
    assert change is not None and change["validators"][-1] == new_id
    effective = int(change["effective_height"])

    # No other transaction: the chain makes the blocks up to the activation height by itself (that
    # one decided by the new set), and every node then shows the new set, the newcomer a validator.
    await eventually(lambda: all(v.store.tip.height >= effective for v in validators), "the activation height")
    await eventually(lambda: observer.status()["role"] == "validator", "the newcomer to be a validator")
    for node in (*validators, observer):
        await eventually(lambda n=node: [v["node_id"] for v in n.status()["validators"]][-1] == new_id,
                         "every node to show the new set")
    quiet_at = validators[0].store.tip.height
    await asyncio.sleep(1.0)  # an idle chain again: no block without a transaction
    assert validators[0].store.tip.height == quiet_at == effective
    certificate = validators[0].store.load_certificate(effective)
    assert certificate is not None
    if consensus == "pbft":
        assert len(certificate["seals"]) >= 4  # the quorum of five, no longer three of four

    # The newcomer votes: the next transaction commits with it counted.
    alice, bob = (keys.PrivateKey.load(p) for p in net.account_files)
    tx = pay(alice, 0, bob)
    assert [o.code for o in await validators[2].service.submit(wire(tx))] == ["accepted"]
    await eventually(lambda: observer.store.has_tx(tx.hash), "the transfer committed on the newcomer")
