"""One node, in process, with the real single-validator PBFT engine, its real database and mempool:
submit -> committed, reads, the event stream, restart at the same height/hash/state, and the
start-up refusals an operator can meet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ledger.tx import Issue, Record, Transfer
from node.config import ConfigError
from node.node import Node
from storage import StorageError
from tests.helpers.nodes import Net, pay, signed, single_node_net, wire

WAIT_S = 10.0


@pytest.fixture
def net(tmp_path: Path) -> Net:
    return single_node_net(tmp_path)


@pytest.fixture
async def node(net: Net) -> AsyncIterator[Node]:
    n = Node.open(net.home, {"tick_ms": 10}, environ={})
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def commit(node: Node, *txs: Any) -> list[Any]:
    outcomes = await node.service.submit(wire(*txs))
    assert [o.code for o in outcomes] == ["accepted"] * len(txs)
    statuses = [await node.service.wait_committed(tx.hash, WAIT_S) for tx in txs]
    assert all(s is not None for s in statuses)
    return statuses


async def test_a_transfer_commits_and_every_read_shows_it(net: Net, node: Node) -> None:
    alice, bob = net.accounts[0], net.accounts[1]
    before = node.service.account(bob.address)["balances"]["LDG"]
    tx = pay(alice, 0, bob, 25)
    [status] = await commit(node, tx)
    assert (status.status, status.height, status.index, status.result) == ("committed", 1, 0, {"code": "ok"})
    assert node.service.tx_status(tx.hash) == status
    assert node.service.account(bob.address)["balances"]["LDG"] == before + 25
    assert node.service.account(alice.address)["nonce"] == 1
    block = node.service.block(None)
    assert block is not None and block == node.service.block(1)
    assert block["header"]["height"] == 1 and block["header"]["hash"] == block["hash"]
    assert block["txs"] == [tx.to_json()]
    assert block["receipts"] == [{"hash": tx.hash, "code": "ok"}]
    assert block["certificate"]  # the engine's commit certificate, stored with the block
    assert node.service.block(2) is None and node.service.block(0) is None
    status_doc = node.service.status()
    assert status_doc["height"] == 1 and status_doc["latest_hash"] == block["hash"]
    assert status_doc["consensus"] == "pbft" and status_doc["chain_id"] == "ledger-local"
    assert status_doc["validators"][0]["node_id"] == node.node_id
    assert status_doc["engine"]["engine"] == "pbft" and status_doc["mempool_size"] == 0
    json.dumps(status_doc)  # the API serves it as is


async def test_blocks_are_paced_by_block_interval_unless_a_full_block_waits(net: Net) -> None:
    """An idle chain proposes its first transaction at once; the next block is built no sooner
    than block_interval_ms after the last commit (header timestamps are taken when a block is
    built); a full block (max_block_txs ready) does not wait."""
    alice, bob = net.accounts[0], net.accounts[1]
    paced = Node.open(net.home, {"tick_ms": 10, "block_interval_ms": 300, "max_block_txs": 2}, environ={})
    await paced.start()
    try:
        [first] = await commit(paced, pay(alice, 0, bob))
        [second] = await commit(paced, pay(alice, 1, bob))  # one transaction: not a full block
        ts = [paced.service.block(h)["header"]["timestamp"] for h in (first.height, second.height)]  # type: ignore[index]
        assert second.height == first.height + 1 and ts[1] - ts[0] >= 300
    finally:
        await paced.stop()
    eager = Node.open(net.home, {"tick_ms": 10, "block_interval_ms": 10_000, "max_block_txs": 2}, environ={})
    await eager.start()
    try:
        [a, b] = await commit(eager, pay(alice, 2, bob), pay(alice, 3, bob))  # a full block: at once
        pair = [pay(alice, 4, bob), pay(alice, 5, bob)]
        assert [o.code for o in await eager.service.submit(wire(*pair))] == ["accepted"] * 2
        # Well inside the 10 s interval: only the full-block rule can have built this block.
        c, d = [await eager.service.wait_committed(tx.hash, 5.0) for tx in pair]
        assert c is not None and d is not None
        assert a.height == b.height and c.height == d.height == a.height + 1
    finally:
        await eager.stop()


async def test_failed_execution_and_records_issue(net: Net, node: Node) -> None:
    alice, bob = net.accounts[0], net.accounts[1]
    issue = signed(alice, 0, Issue("GOLD", 100))
    give = signed(alice, 1, Transfer(bob.address, "GOLD", 40))
    note = signed(bob, 0, Record("invoice-7", "sha256:abcd"))
    statuses = await commit(node, issue, give, note)
    assert [s.status for s in statuses] == ["committed"] * 3
    assert node.service.account(bob.address)["balances"]["GOLD"] == 40
    record = node.service.record(bob.address, "invoice-7")
    assert record == {"owner": bob.address, "key": "invoice-7", "value": "sha256:abcd",
                      "height": statuses[2].height, "tx": note.hash}
    assert node.service.record(bob.address, "nope") is None


async def test_refusals_come_back_per_transaction_in_order(net: Net, node: Node) -> None:
    alice, bob = net.accounts[0], net.accounts[1]
    good = pay(alice, 0, bob)
    bad_sig = pay(bob, 0, alice).to_json()
    bad_sig["signature"] = "00" * 64
    outcomes = await node.service.submit([{"body": {}}, good.to_json(), bad_sig, good.to_json(),
                                  pay(alice, 0, bob, 2).to_json()])
    assert [o.code for o in outcomes] == ["malformed", "accepted", "invalid_signature", "duplicate",
                                          "nonce_pending"]
    assert outcomes[0].hash is None and outcomes[1].hash == good.hash


async def test_a_batch_commits_in_nonce_order(net: Net, node: Node) -> None:
    alice, bob, carol = net.accounts
    txs = [pay(alice, n, carol) for n in range(150)] + [pay(bob, n, carol) for n in range(150)]
    outcomes = await node.service.submit(wire(*txs))
    assert all(o.accepted for o in outcomes)
    last = [await node.service.wait_committed(txs[149].hash, WAIT_S),
            await node.service.wait_committed(txs[-1].hash, WAIT_S)]
    assert all(s is not None and s.status == "committed" for s in last)
    assert node.service.account(alice.address)["nonce"] == 150 and node.service.account(bob.address)["nonce"] == 150
    assert len(node.mempool) == 0
    # Every committed block lists each sender's transactions in nonce order.
    nonces: dict[str, int] = {}
    for height in range(1, node.height + 1):
        block = node.service.block(height)
        assert block is not None
        for tx in block["txs"]:
            sender, nonce = tx["body"]["sender"], tx["body"]["nonce"]
            assert nonce == nonces.get(sender, 0)
            nonces[sender] = nonce + 1


async def test_pending_and_unknown_status_and_wait_timeout(net: Net, node: Node) -> None:
    alice, bob = net.accounts[0], net.accounts[1]
    future = pay(alice, 1, bob)  # nonce 0 never sent: waits behind the gap
    assert (await node.service.submit(wire(future)))[0].accepted
    status = node.service.tx_status(future.hash)
    assert status is not None and status.status == "pending" and status.height is None
    assert await node.service.wait_committed(future.hash, 0.05) is None
    assert node.service.tx_status("ab" * 32) is None
    assert await node.service.wait_committed("ab" * 32, 0.05) is None


async def test_events_replay_then_follow_live_without_gaps(net: Net, node: Node) -> None:
    alice, bob = net.accounts[0], net.accounts[1]
    for n in range(3):
        await commit(node, pay(alice, n, bob))
    assert node.height == 3
    stream = node.service.events(2)
    got = [await anext(stream), await anext(stream)]
    assert [e["height"] for e in got] == [2, 3]
    nxt = asyncio.ensure_future(anext(stream))
    await commit(node, pay(alice, 3, bob))
    live = await asyncio.wait_for(nxt, WAIT_S)
    assert live["height"] == 4 and live["type"] == "block"
    assert live["txs"][0]["status"] == "committed" and live["txs"][0]["result"] == {"code": "ok"}
    assert live["hash"] == node.service.block(4)["hash"]  # type: ignore[index]
    await stream.aclose()
    # from_height=None means "from the next block".
    fresh = node.service.events(None)
    nxt = asyncio.ensure_future(anext(fresh))
    await commit(node, pay(alice, 4, bob))
    assert (await asyncio.wait_for(nxt, WAIT_S))["height"] == 5
    await fresh.aclose()
    # A from_height beyond the head waits for that height, skipping the blocks before it.
    ahead = node.service.events(7)
    nxt = asyncio.ensure_future(anext(ahead))
    await commit(node, pay(alice, 5, bob))
    await commit(node, pay(alice, 6, bob))
    assert not nxt.done()
    await commit(node, pay(alice, 7, bob))
    assert (await asyncio.wait_for(nxt, WAIT_S))["height"] == 7
    await ahead.aclose()
    assert node.feed.subscribers == 0  # closing a stream unsubscribes it


async def test_a_slow_subscriber_is_cut_off_not_buffered_forever(net: Net, tmp_path: Path) -> None:
    node = Node.open(net.home, {"ws_buffer_blocks": 2}, environ={})
    await node.start()
    try:
        alice, bob = net.accounts[0], net.accounts[1]
        stream = node.service.events(None)
        first = asyncio.ensure_future(anext(stream))
        await commit(node, pay(alice, 0, bob))
        assert (await asyncio.wait_for(first, WAIT_S))["height"] == 1
        for n in range(1, 5):  # four blocks while the reader takes nothing; it buffers only two
            await commit(node, pay(alice, n, bob))
        event = await asyncio.wait_for(anext(stream), WAIT_S)
        assert event["type"] == "error" and event["code"] == "subscriber_too_slow"
        assert "from_height=2" in event["message"]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    finally:
        await node.stop()


async def test_streams_and_waiters_end_when_the_node_stops(net: Net) -> None:
    node = Node.open(net.home, environ={})
    await node.start()
    stream = node.service.events(None)
    nxt = asyncio.ensure_future(anext(stream))
    waiter = asyncio.ensure_future(node.service.wait_committed("cd" * 32, 60))
    await asyncio.sleep(0)
    await node.stop()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(nxt, WAIT_S)
    assert await asyncio.wait_for(waiter, WAIT_S) is None
    outcome = await node.service.submit(wire(pay(net.accounts[0], 0, net.accounts[1])))
    assert outcome[0].code == "shutting_down"


def snapshot(node: Node, address: str) -> tuple[Any, ...]:
    status = node.service.status()
    return node.height, status["latest_hash"], status["app_hash"], node.service.account(address)


async def test_restart_resumes_at_the_same_height_hash_and_state(net: Net) -> None:
    alice, bob = net.accounts[0], net.accounts[1]
    node = Node.open(net.home, environ={})
    await node.start()
    for n in range(3):
        await commit(node, pay(alice, n, bob, 7))
    before = snapshot(node, bob.address)
    await node.stop()
    node = Node.open(net.home, environ={})
    await node.start()
    try:
        assert snapshot(node, bob.address) == before
        [status] = await commit(node, pay(alice, 3, bob))
        assert status.height == 4
        replay = node.service.events(1)
        assert [(await anext(replay))["height"] for _ in range(4)] == [1, 2, 3, 4]
        await replay.aclose()
    finally:
        await node.stop()


async def test_a_failed_durable_write_halts_the_node_with_a_clear_reason(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node.open(net.home, environ={})
    await node.start()
    try:
        def disk_full(*args: object) -> None:
            raise StorageError("durable write of block 1 to data failed: IO error: No space left on device")

        monkeypatch.setattr(node.store, "save_block", disk_full)  # fault injection: the disk is full
        tx = pay(net.accounts[0], 0, net.accounts[1])
        waiter = asyncio.ensure_future(node.service.wait_committed(tx.hash, 60))
        await node.service.submit(wire(tx))
        await asyncio.wait_for(node.wait_stopped(), WAIT_S)
        assert node.fatal_error is not None and "No space left on device" in node.fatal_error
        assert node.service.status()["state"] == "halted"
        assert node.height == 0 and node.service.tx_status(tx.hash) is not None
        assert await asyncio.wait_for(waiter, WAIT_S) is None
        refused = await node.service.submit(wire(pay(net.accounts[1], 0, net.accounts[0])))
        assert refused[0].code == "shutting_down" and "No space left" in refused[0].message
    finally:
        await node.stop()


def test_start_up_refusals_are_one_clear_line(net: Net, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configured for raft but the genesis file says pbft"):
        Node.open(net.home, {"consensus": "raft"}, environ={})
    other = single_node_net(tmp_path / "other")
    with pytest.raises(ConfigError, match="not a validator"):
        Node.open(net.home, {"node_key_file": str(other.testnet.node_homes[0] / "node_key.pem")}, environ={})
    with pytest.raises(ConfigError, match="genesis"):
        Node.open(net.home, {"genesis_file": "missing.json"}, environ={})
    first = Node.open(net.home, environ={})
    try:
        with pytest.raises(StorageError, match="in use"):
            Node.open(net.home, environ={})
    finally:
        first.store.close()
    # The other chain's database under this node's home.
    with pytest.raises(StorageError, match="belongs to chain"):
        Node.open(net.home, {"genesis_file": str(other.testnet.node_homes[0] / "genesis.json"),
                             "node_key_file": str(other.testnet.node_homes[0] / "node_key.pem")}, environ={})


class Recorder:
    """A gossip sink that keeps what the node broadcast (stands in for a p2p topic channel)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def broadcast(self, data: bytes) -> int:
        self.sent.append(data)
        return 0


async def test_accepted_submissions_are_gossiped_and_gossip_is_admitted(net: Net, node: Node) -> None:
    alice, bob, carol = net.accounts
    gossip = Recorder()
    node.set_transport(None, gossip, lambda: [])
    mine = [pay(alice, 0, bob), pay(alice, 1, bob)]
    outcomes = await node.service.submit([*wire(*mine), {"junk": 1}, mine[0].to_json()])
    assert [o.code for o in outcomes] == ["accepted", "accepted", "malformed", "duplicate"]
    assert len(gossip.sent) == 1 and [t["body"]["nonce"] for t in json.loads(gossip.sent[0])] == [0, 1]
    # Transactions arriving from a peer go through the same admission and commit.
    theirs = pay(carol, 0, bob, 3)
    assert node.intake.receive_txs("ab" * 32, json.dumps([theirs.to_json(), {"nope": True}]).encode())
    assert node.intake.receive_txs("ab" * 32, b"not json")
    status = await node.service.wait_committed(theirs.hash, WAIT_S)
    assert status is not None and status.status == "committed"
    assert len(gossip.sent) == 1  # what came from a peer is not echoed back out
    dropped = node.metrics.registry.get_sample_value("ledgerd_dropped_messages_total",
                                                     {"reason": "malformed_tx_gossip"})
    assert dropped == 2


async def test_transactions_pending_too_long_are_gossiped_again(net: Net) -> None:
    """Gossip is best effort: what stays pending (here: future nonces behind a gap) goes out again
    every gossip_resend_after_s, and what committed does not."""
    alice, bob, _ = net.accounts
    node = Node.open(net.home, {"tick_ms": 10, "gossip_resend_after_s": 0.2}, environ={})
    await node.start()
    try:
        gossip = Recorder()
        node.set_transport(None, gossip, lambda: [])
        waiting = [pay(alice, 1, bob), pay(alice, 2, bob)]  # nonce 0 is missing: never ready here
        done = pay(bob, 0, alice)
        assert all(o.accepted for o in await node.service.submit(wire(*waiting, done)))
        status = await node.service.wait_committed(done.hash, WAIT_S)
        assert status is not None and status.status == "committed"

        def sent_nonces() -> list[list[tuple[str, int]]]:
            return [[(t["body"]["sender"], t["body"]["nonce"]) for t in json.loads(b)] for b in gossip.sent]

        for _ in range(int(WAIT_S / 0.05)):  # two resend periods, polled with a deadline
            if len(gossip.sent) >= 3:
                break
            await asyncio.sleep(0.05)
        batches = sent_nonces()
        assert batches[0] == [(alice.address, 1), (alice.address, 2), (bob.address, 0)]  # at admission
        assert batches[1:3] == [[(alice.address, 1), (alice.address, 2)]] * 2  # again, not the committed one
        assert node.metrics.registry.get_sample_value("ledgerd_txs_regossiped_total") >= 4
    finally:
        await node.stop()


async def test_draining_a_deep_mempool_yields_between_blocks(net: Net) -> None:
    """The runtime queues each proposal behind the inbox, so other tasks run while the chain drains
    many blocks' worth of transactions (HTTP handlers must not wait for the whole backlog)."""
    node = Node.open(net.home, {"max_block_txs": 5}, environ={})
    await node.start()
    try:
        seen: set[int] = set()
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                seen.add(node.height)
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        txs = [pay(net.accounts[0], n, net.accounts[1]) for n in range(30)]
        assert all(o.accepted for o in await node.service.submit(wire(*txs)))
        status = await node.service.wait_committed(txs[-1].hash, WAIT_S)
        done.set()
        await watcher
        assert status is not None and status.height == 6
        assert {1, 2, 3, 4, 5} <= seen
    finally:
        await node.stop()


async def test_a_single_raft_node_commits_and_restarts(tmp_path: Path) -> None:
    from consensus import factory
    from consensus.raft.engine import RaftEngine

    net = single_node_net(tmp_path, consensus="raft")
    engines = None if "raft" in factory.ENGINES else (lambda kind, ctx: RaftEngine(ctx))
    alice, bob = net.accounts[0], net.accounts[1]
    for nonces in (range(0, 5), range(5, 8)):
        node = Node.open(net.home, {"tick_ms": 10}, environ={}, engine_factory=engines)
        await node.start()
        try:
            statuses = await commit(node, *[pay(alice, n, bob) for n in nonces])
            assert all(s.status == "committed" for s in statuses)
            assert node.service.status()["engine"]["engine"] == "raft"
            assert node.service.account(alice.address)["nonce"] == nonces.stop
        finally:
            await node.stop()
