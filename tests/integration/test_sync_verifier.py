"""Block sync against peers that lie, in process: a real node (runtime, store, executor) and
`node.net.sync.BlockSync` fed by stand-in peers that answer sync requests from a store of their own,
honestly or with forged blocks. Certificates are real PBFT certificates signed with the testnet's
validator keys, so a forgery is exactly what a peer holding (or lacking) a quorum could send.

Rules checked: a block is committed by sync only with a certificate that proves it final under the
genesis validators (a quorum of valid commit seals) and only if it re-executes to its app_hash on
the committed head; a peer that serves anything else is penalised (not asked again) and the next
peer is asked; a peer that merely does not answer is skipped without penalty.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cli.testnet import make_testnet
from consensus.bft.messages import Kind, signing_bytes
from ledger import keys
from ledger.block import Block
from ledger.genesis import Genesis
from node.net.sync import (
    MAGIC,
    BlockSync,
    PeerHead,
    SyncSettings,
    VerifySignatures,
    encode_status,
    serve_blocks,
    split_batch,
)
from node.node import Node
from p2p import RequestTimeout
from storage import Store
from tests.helpers.chain import next_block, resigned
from tests.helpers.nodes import pay

pytestmark = pytest.mark.timeout(60)
MAX_PAYLOAD = 1 << 20


def certificate(block: Block, signers: list[keys.PrivateKey], block_hash: str | None = None) -> dict[str, Any]:
    """A PBFT commit certificate: each signer's COMMIT seal over (height, round 0, hash)."""
    digest = block_hash or block.hash
    message = signing_bytes(block.header.chain_id, Kind.COMMIT, block.height, 0, digest)
    return {"height": block.height, "round": 0, "block_hash": digest,
            "seals": [{"validator": k.address, "signature": k.sign(message).hex()} for k in signers]}


@dataclass
class Chain:
    node: Node
    validators: list[keys.PrivateKey]
    accounts: list[keys.PrivateKey]
    genesis: Genesis
    honest: Store  # a peer's store holding the real chain
    tmp: Path


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    net = make_testnet(tmp_path / "net", validators=4, accounts=3)
    validators = [keys.PrivateKey.load(home / "node_key.pem") for home in net.node_homes]
    accounts = [keys.PrivateKey.load(p) for p in net.account_files]
    honest = Store.open(tmp_path / "honest", net.genesis)
    quorum = validators[:3]
    for height in range(1, 4):
        txs = [pay(accounts[0], height - 1, accounts[1], 10), pay(accounts[2], height - 1, accounts[0], 5)]
        block, execution = next_block(honest, txs, validators[height % 4].address)
        honest.save_block(block, certificate(block, quorum), execution)
    node = Node.open(net.node_homes[0], {"p2p_port": 0, "peers": {}, "tick_ms": 10}, environ={})
    await node.start()
    try:
        yield Chain(node, validators, accounts, net.genesis, honest, tmp_path)
    finally:
        await node.stop()
        honest.close()


Peer = Callable[[bytes], bytes]


def make_sync(c: Chain, peers: dict[str, Peer], heads: dict[str, int], settings: SyncSettings | None = None,
              verify_signatures: VerifySignatures | None = None) -> BlockSync:
    async def request(peer: str, topic: str, payload: bytes, timeout_s: float) -> bytes:
        assert topic == "sync"
        return peers[peer](payload)

    async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    apply: Callable[..., Awaitable[Any]] = c.node.runtime.apply_synced
    sync = BlockSync(store=c.node.store, kind="pbft", validators=c.genesis.validator_ids, request=request,
                     apply=apply, run_blocking=run_blocking, sync_hint=lambda: None,
                     max_payload_bytes=lambda: MAX_PAYLOAD, settings=settings or SyncSettings(penalty_s=30),
                     on_syncing=lambda on: None, logger=logging.getLogger("test.sync"),
                     verify_signatures=verify_signatures)
    for peer, height in heads.items():
        sync.on_status(peer, encode_status(height, "00" * 32))
    return sync


def honest_peer(c: Chain) -> Peer:
    return lambda payload: serve_blocks(c.honest, payload, 64, MAX_PAYLOAD)


def forging_peer(c: Chain, forge: Callable[[int, Block, dict[str, Any]], tuple[Block, dict[str, Any]]]) -> Peer:
    """Serves the honest chain with each (block, certificate) passed through `forge` first; a
    forged block (new hash) ends the forger's chain, since nothing honest links to it."""
    forged = Store.open(c.tmp / f"forged-{id(forge)}", c.genesis)
    for height in range(1, c.honest.tip.height + 1):
        block = c.honest.load_block(height)
        cert = c.honest.load_certificate(height)
        assert block is not None and cert is not None
        original = block.hash
        block, cert = forge(height, block, cert)
        _, execution = next_block(forged, block.txs, block.header.proposer)
        # Stored as is: storage checks only the link and that the execution names the app_hash.
        forged.save_block(block, cert, replace(execution, app_hash=block.header.app_hash))
        if block.hash != original:
            break
    return lambda payload: serve_blocks(forged, payload, 64, MAX_PAYLOAD)


def chain_hashes(store: Store) -> list[str]:
    return [b.hash for b in (store.load_block(h) for h in range(1, store.tip.height + 1)) if b is not None]


FORGER = "f0" * 32
HONEST = "0a" * 32


async def test_a_certificate_short_of_a_quorum_is_refused_and_the_peer_penalised(chain: Chain) -> None:
    """PBFT: a block is final only with 2f + 1 commit seals; two of four are not enough."""
    def two_seals(height: int, block: Block, cert: dict[str, Any]) -> tuple[Block, dict[str, Any]]:
        return block, ({**cert, "seals": cert["seals"][:2]} if height == 2 else cert)

    # The forger claims the higher head, so it is asked first.
    sync = make_sync(chain, {FORGER: forging_peer(chain, two_seals), HONEST: honest_peer(chain)},
                     {FORGER: 5, HONEST: 3})
    assert await sync.sync_to(3)
    assert chain.node.height == 3
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)
    assert sync.penalized_for_s(FORGER) > 0 and sync.penalized_for_s(HONEST) == 0
    assert sync.counters["peers_penalized"] == 1 and sync.counters["blocks_applied"] == 3
    # Penalised: not asked again, even though it still claims the highest head.
    assert FORGER not in sync._candidates(0)


async def test_seals_over_another_hash_or_by_strangers_are_refused(chain: Chain) -> None:
    stranger = keys.PrivateKey.from_seed(b"stranger".ljust(32, b"\0"))

    def other_hash(height: int, block: Block, cert: dict[str, Any]) -> tuple[Block, dict[str, Any]]:
        return block, certificate(block, chain.validators[:3], block_hash="ab" * 32) if height == 1 else cert

    def strangers(height: int, block: Block, cert: dict[str, Any]) -> tuple[Block, dict[str, Any]]:
        return block, certificate(block, [*chain.validators[:2], stranger]) if height == 1 else cert

    a, b = "a1" * 32, "b1" * 32
    sync = make_sync(chain, {a: forging_peer(chain, other_hash), b: forging_peer(chain, strangers)},
                     {a: 3, b: 3})
    assert not await sync.sync_to(3)
    assert chain.node.height == 0
    assert sync.penalized_for_s(a) > 0 and sync.penalized_for_s(b) > 0


async def test_a_certified_block_with_a_wrong_app_hash_is_refused_on_re_execution(chain: Chain) -> None:
    """Even with a quorum certificate (a Byzantine quorum, or a bug), a block whose transactions do
    not produce its app_hash on this node's state is not stored; the peer is penalised."""
    def bad_app_hash(height: int, block: Block, cert: dict[str, Any]) -> tuple[Block, dict[str, Any]]:
        if height != 2:
            return block, cert
        forged = Block(replace(block.header, app_hash="cd" * 32), block.txs)
        return forged, certificate(forged, chain.validators[:3])

    sync = make_sync(chain, {FORGER: forging_peer(chain, bad_app_hash)}, {FORGER: 3})
    assert await sync.sync_to(3)  # block 1 is fine and is committed; block 2 is not
    assert chain.node.height == 1
    assert sync.penalized_for_s(FORGER) > 0
    assert chain.node.store.load_block(1) == chain.honest.load_block(1)
    # The honest peer, asked next, completes the chain.
    sync2 = make_sync(chain, {HONEST: honest_peer(chain)}, {HONEST: 3})
    assert await sync2.sync_to(3)
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)


async def test_a_silent_peer_is_skipped_without_penalty_and_garbage_is_penalised(chain: Chain) -> None:
    def silent(payload: bytes) -> bytes:
        raise RequestTimeout("timeout", "no answer")

    def garbage(payload: bytes) -> bytes:
        return serve_blocks(chain.honest, payload, 64, MAX_PAYLOAD)[:-7]

    silent_id, garbage_id = "5a" * 32, "6a" * 32
    sync = make_sync(chain, {silent_id: silent, garbage_id: garbage, HONEST: honest_peer(chain)},
                     {silent_id: 9, garbage_id: 8, HONEST: 3})
    assert await sync.sync_to(3)
    assert chain.node.height == 3
    assert sync.penalized_for_s(silent_id) == 0 and sync.counters["requests_failed"] >= 1
    assert sync.penalized_for_s(garbage_id) > 0


async def test_blocks_the_node_already_committed_are_skipped(chain: Chain) -> None:
    sync = make_sync(chain, {HONEST: honest_peer(chain)}, {HONEST: 3})
    blocks = [(chain.honest.load_block(h), chain.honest.load_certificate(h)) for h in (1, 2)]
    outcome = await chain.node.runtime.apply_synced(blocks)  # type: ignore[arg-type]
    assert (outcome.applied, outcome.error) == (2, None)
    outcome = await chain.node.runtime.apply_synced(blocks)  # type: ignore[arg-type]
    assert (outcome.applied, outcome.skipped, outcome.error) == (0, 2, None)
    sync.heads[HONEST] = PeerHead(3, "00" * 32, sync.heads[HONEST].seen_at)
    assert await sync.sync_to(3)
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)


def extend(c: Chain, to_height: int) -> None:
    """More certified blocks on the honest chain, two transfers each."""
    for height in range(c.honest.tip.height + 1, to_height + 1):
        txs = [pay(c.accounts[0], height - 1, c.accounts[1], 10), pay(c.accounts[2], height - 1, c.accounts[0], 5)]
        block, execution = next_block(c.honest, txs, c.validators[height % 4].address)
        c.honest.save_block(block, certificate(block, c.validators[:3]), execution)


def later_runs_answered_first() -> tuple[VerifySignatures, list[int]]:
    """A signature checker whose jobs finish in reverse order of asking (the workers run in
    parallel: a later run may be checked before an earlier one); records the order answered."""
    answered: list[int] = []
    asked = [0]

    async def verify(items: list[tuple[str, bytes, bytes]]) -> list[bool]:
        if not items:
            return []  # the syncer's "start the workers" while it fetches
        index = asked[0]
        asked[0] += 1
        for _ in range(4 * (20 - index)):  # yield: the runs asked later answer first
            await asyncio.sleep(0)
        answered.append(index)
        return keys.verify_many(items)

    return verify, answered


async def test_a_bad_signature_mid_batch_stops_the_commits_at_the_block_before_it(chain: Chain) -> None:
    """A peer swaps one signature in block 4 of 6 (the block hash, and so its certificate, still
    hold: a signature is not part of a transaction's hash). With one block per signature run, all
    runs checked at once and answered out of order, blocks 1-3 are committed, block 4 and the
    valid blocks after it are not, and the peer is penalised; the honest peer completes the chain."""
    extend(chain, 6)

    def swapped_signature(height: int, block: Block, cert: dict[str, Any]) -> tuple[Block, dict[str, Any]]:
        if height != 4:
            return block, cert
        txs = (block.txs[0], resigned(block.txs[1], chain.accounts[0]))
        return Block(block.header, txs), cert

    verify, answered = later_runs_answered_first()
    settings = SyncSettings(penalty_s=30, signature_job_txs=1)
    sync = make_sync(chain, {FORGER: forging_peer(chain, swapped_signature)}, {FORGER: 6}, settings, verify)
    assert await sync.sync_to(6)  # progress: blocks 1-3
    assert answered[0] != 0  # the runs were checked together, not one after the other
    assert chain.node.height == 3
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)[:3]
    assert sync.penalized_for_s(FORGER) > 0 and sync.counters["blocks_applied"] == 3
    sync2 = make_sync(chain, {HONEST: honest_peer(chain)}, {HONEST: 6}, settings, verify)
    assert await sync2.sync_to(6)
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)


async def test_a_long_chain_arrives_in_batches_asked_for_ahead_and_committed_in_order(chain: Chain) -> None:
    extend(chain, 9)
    verify, _ = later_runs_answered_first()
    asked: list[int] = []

    def counting(payload: bytes) -> bytes:
        asked.append(json.loads(payload)["from_height"])
        return serve_blocks(chain.honest, payload, 64, MAX_PAYLOAD)

    settings = SyncSettings(penalty_s=30, batch_blocks=4, signature_job_txs=3)  # runs of two blocks
    sync = make_sync(chain, {HONEST: counting}, {HONEST: 9}, settings, verify)
    assert await sync.sync_to(9)
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)
    assert asked == [1, 5, 9]  # each batch once, none skipped or asked twice
    assert sync.counters["batches_fetched_ahead"] == 2  # every batch after the first was asked for ahead
    assert sync.counters["blocks_applied"] == 9 and sync.counters["peers_penalized"] == 0


async def test_a_malformed_block_mid_batch_stops_the_commits_at_the_block_before_it(chain: Chain) -> None:
    """Blocks are decoded one by one while the earlier ones are checked and committed: block 4 of 6
    is garbage, so blocks 1-3 are committed, nothing from block 4 on, and the peer is penalised."""
    extend(chain, 6)

    def garbled(payload: bytes) -> bytes:
        answer = serve_blocks(chain.honest, payload, 64, MAX_PAYLOAD)
        from_height = json.loads(payload)["from_height"]
        peer_tip, raws = split_batch(answer, from_height, 64)
        raws = [(b'{"header":{}}' if from_height + i == 4 else raw, cert) for i, (raw, cert) in enumerate(raws)]
        body = b"".join(len(raw).to_bytes(4, "big") + raw + len(cert).to_bytes(4, "big") + cert
                        for raw, cert in raws)
        return MAGIC + peer_tip.to_bytes(8, "big") + len(raws).to_bytes(4, "big") + body

    verify, _ = later_runs_answered_first()
    settings = SyncSettings(penalty_s=30, signature_job_txs=1)
    sync = make_sync(chain, {FORGER: garbled}, {FORGER: 6}, settings, verify)
    assert await sync.sync_to(6)  # progress: blocks 1-3
    assert chain.node.height == 3
    assert sync.penalized_for_s(FORGER) > 0 and sync.counters["blocks_applied"] == 3
    assert chain_hashes(chain.node.store) == chain_hashes(chain.honest)[:3]
