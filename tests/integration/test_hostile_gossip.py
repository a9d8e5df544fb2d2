"""A hostile validator's transaction gossip must not cost a node its intake.

One deeply nested JSON array in a tx-gossip frame used to make the parser raise RecursionError,
which ended the intake task: the node silently never admitted a gossiped transaction again. Each
test here sends such frames (or an oversize one) and then a valid transaction, which must still
be admitted and committed, with the bad frame counted under its drop reason. Once through the
node's own entry point, once over a real authenticated p2p link with a validator's key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from cli import testnet as tn
from ledger import keys
from node import intake as intake_module
from node.config import load_config
from node.intake import TxIntake
from node.node import Node
from p2p import P2PConfig, P2PNode
from tests.helpers.nodes import pay, single_node_net
from tests.helpers.ports import free_base_port

pytestmark = pytest.mark.timeout(90)
WAIT_S = 20.0
NESTED = b"[" * 100_000 + b"]" * 100_000
PEER = "ab" * 32
# Drop reasons, as ledgerd_dropped_messages_total{reason} shows them.
TOO_DEEP, TOO_LARGE, TOO_MANY, MALFORMED = (
    "tx_gossip_too_deep", "tx_gossip_too_large", "tx_gossip_too_many", "malformed_tx_gossip")


def dropped(node: Node, reason: str) -> float:
    value = node.metrics.registry.get_sample_value("ledgerd_dropped_messages_total", {"reason": reason})
    return value or 0.0


async def eventually(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def test_hostile_batches_are_dropped_and_counted_and_the_intake_goes_on(tmp_path: Path) -> None:
    net = single_node_net(tmp_path)
    alice, bob, _ = net.accounts
    node = Node.open(net.home, {"tick_ms": 10, "gossip_max_batch_bytes": 256 * 1024, "max_batch_txs": 10},
                     environ={})
    await node.start()
    try:
        hostile = [
            NESTED,
            b'[{"body":' + b"[" * 50_000,
            b"[" + b"[]," * 200_000 + b"[]]",  # 600 kB: over gossip_max_batch_bytes, refused unread
            b"[" + b",".join([b"0"] * 11) + b"]",  # over max_batch_txs
            b'{"not": "a list"}',
        ]
        for data in hostile:
            assert node.intake.receive_txs(PEER, data)
        tx = pay(alice, 0, bob)
        assert node.intake.receive_txs(PEER, b"[" + tx.encode() + b"]")
        status = await node.service.wait_committed(tx.hash, WAIT_S)
        assert status is not None and status.status == "committed"
        assert (dropped(node, TOO_DEEP), dropped(node, TOO_LARGE), dropped(node, TOO_MANY),
                dropped(node, MALFORMED)) == (2, 1, 1, 1)
        assert node.running and node.fatal_error is None
        # And the next round is admitted too: the intake did not end after the first one.
        again = pay(alice, 1, bob)
        assert node.intake.receive_txs(PEER, NESTED)
        assert node.intake.receive_txs(PEER, b"[" + again.encode() + b"]")
        status = await node.service.wait_committed(again.hash, WAIT_S)
        assert status is not None and status.status == "committed"
        assert dropped(node, TOO_DEEP) == 3
    finally:
        await node.stop()
    assert node.store.closed


async def test_an_unexpected_error_handling_a_batch_drops_it_and_the_intake_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever a batch provokes, even a fault of our own in reading or admitting it, costs that
    batch (counted, one log line), never the intake."""
    real_read, real_admit = intake_module.read_tx_batch, TxIntake._admit
    admit_calls = 0

    def read_or_explode(data: bytes, limits: Any, memo: Any = None) -> Any:
        if data == b"explode":
            raise MemoryError("while reading")
        return real_read(data, limits, memo)

    async def admit_fails_once(self: TxIntake, txs: Any, trusted: bool = False) -> Any:
        nonlocal admit_calls
        admit_calls += 1
        if admit_calls == 1:
            raise KeyError("while admitting")
        return await real_admit(self, txs, trusted)

    monkeypatch.setattr(intake_module, "read_tx_batch", read_or_explode)
    monkeypatch.setattr(TxIntake, "_admit", admit_fails_once)
    net = single_node_net(tmp_path)
    alice, bob, _ = net.accounts
    node = Node.open(net.home, {"tick_ms": 10}, environ={})
    await node.start()
    try:
        first = pay(alice, 0, bob)
        assert node.intake.receive_txs(PEER, b"[" + first.encode() + b"]")  # admission raises: dropped
        await eventually(lambda: dropped(node, "tx_gossip_failed") == 1, "the failed admission to be counted")
        assert node.intake.receive_txs(PEER, b"explode")  # reading raises: dropped
        tx = pay(alice, 0, bob)
        assert node.intake.receive_txs(PEER, b"[" + tx.encode() + b"]")
        status = await node.service.wait_committed(tx.hash, WAIT_S)
        assert status is not None and status.status == "committed"
        assert dropped(node, "tx_gossip_failed") == 2
        assert node.running and node.fatal_error is None
        lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(lines) == 2 and "KeyError" in lines[0] and "MemoryError" in lines[1]
    finally:
        await node.stop()


async def test_a_validator_gossiping_a_nested_array_over_p2p_does_not_stop_its_peers_intake(
        tmp_path: Path) -> None:
    """Three honest validators of four run in process; the fourth validator's key is used by a
    hostile P2PNode on that validator's own address, which the honest ones dial and authenticate.
    It gossips the nested array and then a valid transaction: every honest node drops and counts
    the first, and the chain commits the second."""
    net = tn.make_testnet(tmp_path / "net", validators=4, accounts=2, base_port=free_base_port())
    alice, bob = (keys.PrivateKey.load(p) for p in net.account_files)
    fast = {"tick_ms": 10, "status_interval_s": 0.1}
    async with AsyncExitStack() as stack:
        honest: list[Node] = []
        for k in range(3):
            node = Node.open(net.node_homes[k], fast, environ={})
            stack.push_async_callback(node.stop)
            await node.start()
            honest.append(node)
        home = net.node_homes[3]
        config = load_config(home, environ={})
        hostile_key = keys.PrivateKey.load(config.path("node_key_file"))
        hostile = P2PNode(P2PConfig(listen_host=config.p2p_host, listen_port=config.p2p_port), hostile_key,
                          net.genesis.chain_id, net.genesis.validator_ids, {}, lambda peer, topic, data: None)
        await hostile.start()
        stack.push_async_callback(hostile.stop)
        await eventually(lambda: len(hostile.connected_peers()) == 3, "the honest validators to link up")

        assert hostile.broadcast("txs", NESTED) == 3
        tx = pay(alice, 0, bob)
        assert hostile.broadcast("txs", b"[" + tx.encode() + b"]") == 3
        for node in honest:
            status = await node.service.wait_committed(tx.hash, WAIT_S)
            assert status is not None and status.status == "committed"
        await eventually(lambda: all(dropped(n, TOO_DEEP) == 1 for n in honest), "every node to count the drop")
        assert all(n.running and n.fatal_error is None for n in honest)
