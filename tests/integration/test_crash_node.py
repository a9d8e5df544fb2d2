"""A real node (single-validator PBFT, its database, mempool and runtime) killed with SIGKILL while
it commits: it restarts at the stored height with the same head hash and state, its consensus
engine resumes from its persisted records, and it goes on committing."""

from __future__ import annotations

import random
from pathlib import Path

from ledger.genesis import Genesis
from node.node import Node
from storage import Store
from tests.helpers.chain import replay_chain, stored_state
from tests.helpers.crash import run_until_killed
from tests.helpers.nodes import pay, single_node_net

WAIT_S = 10.0


async def test_sigkill_while_committing_restarts_consistent_and_keeps_going(tmp_path: Path) -> None:
    net = single_node_net(tmp_path, accounts=4)
    home = net.home
    genesis = Genesis.load(home / "genesis.json")
    rng = random.Random(7)
    for _round in range(2):
        last_seen = run_until_killed("tests.helpers.node_loop", home, rng, 2, 8)
        store = Store.open(home / "data", genesis)
        try:
            assert last_seen <= store.tip.height <= last_seen + 1
            state, _ = replay_chain(store, genesis)
        finally:
            store.close()
        assert stored_state(home / "data") == state

        node = Node.open(home, environ={})
        await node.start()
        try:
            height = node.height
            assert node.service.status()["latest_hash"] == genesis_or_block_hash(node, height)
            # The loop never uses the last account, so this transaction cannot collide with a block
            # the killed node had prepared but not committed (which the engine may re-propose first).
            spare, to = net.accounts[-1], net.accounts[0]
            tx = pay(spare, node.service.account(spare.address)["nonce"], to)
            assert (await node.service.submit([tx.to_json()]))[0].accepted
            status = await node.service.wait_committed(tx.hash, WAIT_S)
            assert status is not None and status.status == "committed"
            assert status.height is not None and status.height > height
        finally:
            await node.stop()


def genesis_or_block_hash(node: Node, height: int) -> str:
    block = node.service.block(height)
    return node.store.genesis_hash if block is None else str(block["hash"])
