"""The node feeds the BFT proposer schedule from its store: after block sync and after a restart it
computes the round-0 proposer that the committed chain implies, the one every other node computes.

The chain: validator 0 missed its turn at height 4 (validator 1 proposed that block instead), so at
height 8, validator 0's next turn, validator 1 stands in for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.testnet import make_testnet
from consensus.bft.messages import Kind, signing_bytes
from ledger import keys
from ledger.block import Block, decode_block_header
from node.net.sync import BlockSync, SyncSettings, encode_status, serve_blocks
from node.node import Node, recent_proposers
from storage import Store
from tests.helpers.chain import next_block
from tests.helpers.nodes import pay

pytestmark = pytest.mark.timeout(60)
MAX_PAYLOAD = 1 << 20
PEER = "0a" * 32


def certificate(block: Block, signers: list[keys.PrivateKey]) -> dict[str, Any]:
    message = signing_bytes(block.header.chain_id, Kind.COMMIT, block.height, 0, block.hash)
    return {"height": block.height, "round": 0, "block_hash": block.hash,
            "seals": [{"validator": k.address, "signature": k.sign(message).hex()} for k in signers]}


async def test_a_synced_and_then_restarted_node_skips_the_validator_the_chain_shows_absent(tmp_path: Path) -> None:
    net = make_testnet(tmp_path / "net", validators=4, accounts=2)
    validators = [keys.PrivateKey.load(home / "node_key.pem") for home in net.node_homes]
    accounts = [keys.PrivateKey.load(p) for p in net.account_files]
    honest = Store.open(tmp_path / "honest", net.genesis)
    for height in range(1, 8):
        proposer = validators[1] if height == 4 else validators[height % 4]
        block, execution = next_block(honest, [pay(accounts[0], height - 1, accounts[1])], proposer.address)
        honest.save_block(block, certificate(block, validators[1:]), execution)
    assert recent_proposers(honest, 5) == [validators[h % 4 if h != 4 else 1].address for h in range(3, 8)]
    raw = honest.load_block_bytes(4)
    assert raw is not None and decode_block_header(raw) == honest.load_block(4).header  # type: ignore[union-attr]

    node = Node.open(net.node_homes[2], {"p2p_port": 0, "peers": {}, "tick_ms": 10}, environ={})
    await node.start()
    try:
        async def request(peer: str, topic: str, payload: bytes, timeout_s: float) -> bytes:
            return serve_blocks(honest, payload, 64, MAX_PAYLOAD)

        async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        sync = BlockSync(store=node.store, kind="pbft", validators=net.genesis.validator_ids, request=request,
                         apply=node.runtime.apply_synced, run_blocking=run_blocking, sync_hint=lambda: None,
                         max_payload_bytes=lambda: MAX_PAYLOAD, settings=SyncSettings(penalty_s=30),
                         on_syncing=lambda on: None, logger=logging.getLogger("test.sync"))
        sync.on_status(PEER, encode_status(7, "00" * 32))
        assert await sync.sync_to(7)
        assert node.height == 7
        status = node.engine.status()
        assert (status["height"], status["round"]) == (8, 0)
        assert status["proposer"] == validators[1].address, "validator 0 missed its turn at height 4"
    finally:
        await node.stop()
    honest.close()

    restarted = Node.open(net.node_homes[2], {"p2p_port": 0, "peers": {}, "tick_ms": 10}, environ={})
    try:
        assert restarted.engine.status()["proposer"] == validators[1].address
    finally:
        restarted.store.close()
