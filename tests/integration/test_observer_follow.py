"""How fast an observer follows: a validator tells its observers its head as soon as it commits a
block, and an observer (which never commits by consensus) fetches a block as soon as a peer is one
ahead. Real Nodes and P2PNodes in one process, over loopback.

The periodic status and the one-block-behind grace are set to a minute here, so that only the
commit announcement can bring the observer a block within the test's deadline: without it (or with
the validators' two-block rule applied to observers) the test times out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from cli import testnet as tn
from ledger import keys
from node.node import Node
from tests.helpers import ports
from tests.helpers.nodes import pay
from tests.integration.test_cluster_inprocess import eventually

pytestmark = pytest.mark.timeout(90)
N = 4
SLOW_HEADS = {"tick_ms": 10, "status_interval_s": 60.0, "sync_lag_grace_s": 60.0}


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[list[Node], Node, list[keys.PrivateKey]]]:
    base = ports._pick(lambda b: [b + k for k in range(N)] + [b + 1000 + k for k in range(N)]
                       + [b + 100, b + 1100], 1101)[0]
    net = tn.make_testnet(tmp_path / "net", validators=N, accounts=2, base_port=base, observers=1)
    async with AsyncExitStack() as stack:
        started = []
        for home in (*net.node_homes, *net.observer_homes):
            node = Node.open(home, SLOW_HEADS, environ={})
            stack.push_async_callback(node.stop)
            await node.start()
            started.append(node)
        yield started[:N], started[N], [keys.PrivateKey.load(p) for p in net.account_files]


async def test_an_observer_has_each_block_without_waiting_for_the_periodic_status(
        nodes: tuple[list[Node], Node, list[keys.PrivateKey]]) -> None:
    validators, observer, (alice, bob) = nodes
    assert observer.network is not None and observer.network.sync.following_only
    assert validators[0].network is not None and not validators[0].network.sync.following_only
    await eventually(lambda: all(v.network is not None and len(v.network.connected_peers()) == N
                                 for v in validators), "every validator linked to the others and the observer")
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
