"""Block sync's pure parts: the batch format a peer answers with, when a node decides to sync,
and how accepted transactions are batched for gossip."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consensus.api import ChainTip
from ledger import keys
from ledger.block import Block
from node.core import SyncOutcome
from node.net.gossip import TxBatcher
from node.net.sync import (
    MAGIC,
    BadBatch,
    BlockSync,
    RefusedRequest,
    SyncSettings,
    decode_batch,
    decode_status,
    encode_status,
    first_invalid,
    serve_blocks,
    signature_items,
)
from storage import Store
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, next_block, transfer

VALIDATOR = key(0, b"node")
ACCOUNTS = [key(i) for i in range(2)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "db", make_genesis([VALIDATOR], ACCOUNTS))
    for nonce in range(5):
        block, execution = next_block(s, [transfer(ACCOUNTS[0], nonce, ACCOUNTS[1])], VALIDATOR.address)
        s.save_block(block, certificate_for(block), execution)
    return s


def request(from_height: int, max_blocks: int = 64) -> bytes:
    return json.dumps({"from_height": from_height, "max_blocks": max_blocks}).encode()


def test_a_served_batch_decodes_to_the_stored_blocks_and_certificates(store: Store) -> None:
    peer_tip, blocks = decode_batch(serve_blocks(store, request(2), 64, 1 << 20), 2, CHAIN, 64)
    assert peer_tip == 5
    assert [b.height for b, _ in blocks] == [2, 3, 4, 5]
    for block, cert in blocks:
        assert block.encode() == store.load_block_bytes(block.height)
        assert cert == store.load_certificate(block.height)


def test_signatures_of_a_run_are_in_order_and_a_bad_verdict_names_its_block(store: Store) -> None:
    _, blocks = decode_batch(serve_blocks(store, request(1), 64, 1 << 20), 1, CHAIN, 64)  # one tx a block
    items = signature_items(blocks)
    assert [(sender, signature) for sender, signature, _ in items] == \
        [(b.txs[0].sender, b.txs[0].signature) for b, _ in blocks]
    assert first_invalid(blocks, [True] * 5) is None
    bad = first_invalid(blocks, [True, True, True, False, True])
    assert bad is not None and bad.height == 4 and "transaction 0 has an invalid signature" in bad.reason
    with pytest.raises(ValueError):
        first_invalid(blocks, [True] * 4)  # a verdict missing is a bug, never a pass


def test_serving_stops_at_the_batch_limit_the_payload_limit_and_the_head(store: Store) -> None:
    assert len(decode_batch(serve_blocks(store, request(1, 2), 64, 1 << 20), 1, CHAIN, 64)[1]) == 2
    assert len(decode_batch(serve_blocks(store, request(1), 3, 1 << 20), 1, CHAIN, 64)[1]) == 3
    one = len(serve_blocks(store, request(1, 1), 64, 1 << 20))
    assert len(decode_batch(serve_blocks(store, request(1), 64, one + 10), 1, CHAIN, 64)[1]) == 1
    assert decode_batch(serve_blocks(store, request(6), 64, 1 << 20), 6, CHAIN, 64) == (5, [])
    with pytest.raises(RefusedRequest):
        serve_blocks(store, request(1), 64, 50)  # not even one block fits
    for bad in (b"{}", b"junk", request(0), json.dumps({"from_height": 1, "max_blocks": 1, "x": 1}).encode()):
        with pytest.raises(RefusedRequest):
            serve_blocks(store, bad, 64, 1 << 20)


def test_a_malformed_or_inconsistent_batch_is_the_peers_fault(store: Store) -> None:
    good = serve_blocks(store, request(1), 64, 1 << 20)
    cases: list[tuple[bytes, int, str]] = [
        (b"nonsense", 1, "not a sync batch"),
        (good[:-1], 1, "cut short"),
        (good + b"x", 1, "trailing"),
        (good, 2, "expected block 2"),  # blocks from another height than asked
    ]
    for data, from_height, reason in cases:
        with pytest.raises(BadBatch, match=reason):
            decode_batch(data, from_height, CHAIN, 64)
    with pytest.raises(BadBatch, match="more than"):
        decode_batch(good, 1, CHAIN, 3)
    with pytest.raises(BadBatch, match="for chain"):
        decode_batch(good, 1, "other-chain", 64)
    # A block that does not link to the one before it.
    b1 = store.load_block_bytes(1)
    b3 = store.load_block_bytes(3)
    assert b1 is not None and b3 is not None
    body = bytearray(good[:len(MAGIC) + 12])
    for raw in (b1, b3.replace(b'"height":3', b'"height":2')):
        cert = b"{}"
        body += len(raw).to_bytes(4, "big") + raw + len(cert).to_bytes(4, "big") + cert
    body[len(MAGIC) + 8:len(MAGIC) + 12] = (2).to_bytes(4, "big")
    with pytest.raises(BadBatch, match="does not link"):
        decode_batch(bytes(body), 1, CHAIN, 64)


def test_status_messages_round_trip_and_refuse_anything_else() -> None:
    message = decode_status(encode_status(7, "ab" * 32))
    assert message is not None and (message.height, message.hash) == (7, "ab" * 32)
    for bad in (b"", b"[]", b'{"height": -1, "hash": "' + b"ab" * 32 + b'"}',
                b'{"height": "7", "hash": "' + b"ab" * 32 + b'"}', b'{"height": 7, "hash": "xyz"}',
                b'{"height": 7, "hash": "' + b"ab" * 32 + b'", "extra": 1}'):
        assert decode_status(bad) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def peer_id(i: int) -> str:
    return keys.PrivateKey.from_seed(b"p%d" % i + b"\0" * 30).address


def deciding_sync(height: int, clock: Clock, hint: list[int | None], validators: int = 2, kind: str = "pbft"
                  ) -> tuple[BlockSync, Any]:
    """A syncer at `height` among `validators` (itself and peer_id(0), peer_id(1), ...)."""
    head = SimpleNamespace(tip=ChainTip(height, "00" * 32, 0, "00" * 32), chain_id=CHAIN)

    async def never(*args: Any) -> Any:
        raise AssertionError("the decision tests do not fetch")

    members = [VALIDATOR.address, *(peer_id(i) for i in range(validators - 1))]
    sync = BlockSync(store=head, kind=kind, validators=members,  # type: ignore[arg-type]
                     request=never, apply=never, run_blocking=never, sync_hint=lambda: hint[0],
                     max_payload_bytes=lambda: 1 << 20, settings=SyncSettings(lag_grace_s=2.0),
                     on_syncing=lambda on: None, logger=logging.getLogger("test"), clock=clock)
    return sync, head


def test_sync_starts_two_blocks_behind_at_once_and_one_block_behind_only_after_the_grace() -> None:
    clock, hint = Clock(), [None]
    sync, head = deciding_sync(10, clock, hint)
    peer = peer_id(0)
    assert sync.wanted_target() is None
    sync.on_status(peer, encode_status(11, "ab" * 32))
    assert sync.wanted_target() is None  # one behind: consensus usually finishes the height itself
    clock.now += 1.0
    assert sync.wanted_target() is None
    clock.now += 1.5
    assert sync.wanted_target() == 11  # still one behind, no progress, after the grace
    head.tip = ChainTip(11, "00" * 32, 0, "00" * 32)
    assert sync.wanted_target() is None
    sync.on_status(peer, encode_status(13, "ab" * 32))
    assert sync.wanted_target() == 13
    assert sync.status() == {"syncing": False, "sync_target_height": 13, "blocks_behind": 2}
    # A head not refreshed for several status intervals no longer counts.
    clock.now += 60
    assert sync.wanted_target() is None and sync.status()["blocks_behind"] == 0
    # The engine's own hint (Raft needs_sync) counts at once.
    hint[0] = 12
    assert sync.wanted_target() == 12


HUGE = 10**12


def test_a_height_one_validator_claims_is_not_reported_but_one_that_f_plus_one_claim_is() -> None:
    """PBFT, n = 4, f = 1: any f + 1 validators include an honest one; a lone claim may be a lie."""
    clock = Clock()
    sync, _ = deciding_sync(10, clock, [None], validators=4)
    liar, honest, other = (peer_id(i) for i in range(3))
    for peer in (honest, other):
        sync.on_status(peer, encode_status(10, "ab" * 32))
    sync.on_status(liar, encode_status(HUGE, "ab" * 32))
    assert sync.status() == {"syncing": False, "sync_target_height": None, "blocks_behind": 0}
    assert sync.peer_height(liar) == HUGE  # the peer's own entry still shows what it claims
    assert sync.wanted_target() == HUGE  # and the claim is still worth a fetch attempt
    sync.on_status(other, encode_status(HUGE, "ab" * 32))
    assert sync.status() == {"syncing": False, "sync_target_height": HUGE, "blocks_behind": HUGE - 10}
    # Raft assumes crash faults only: its validators do not lie, so one claim is enough there.
    raft, _ = deciding_sync(10, clock, [None], validators=4, kind="raft")
    raft.on_status(liar, encode_status(12, "ab" * 32))
    assert raft.status()["blocks_behind"] == 2


def fetching_sync(answers: dict[str, Any], gate: asyncio.Event, reported: list[bool],
                  run_blocking: Any = None, height: int = 10) -> tuple[BlockSync, list[str]]:
    """A syncer at `height` among 4 validators, its 3 peers last seen at the same height, that answer
    from `answers` once `gate` opens (bytes, or an exception to raise)."""
    asked: list[str] = []
    head = SimpleNamespace(tip=ChainTip(height, "00" * 32, 0, "00" * 32), chain_id=CHAIN)

    async def request(peer: str, topic: str, payload: bytes, timeout_s: float) -> bytes:
        asked.append(peer)
        await gate.wait()
        answer = answers[peer]
        if isinstance(answer, Exception):
            raise answer
        return bytes(answer)

    async def apply(blocks: Any) -> SyncOutcome:
        return SyncOutcome(0, 0, "not executed in this test", blocks[0][0].height)

    async def direct(fn: Any, *args: Any) -> Any:
        return fn(*args)

    sync = BlockSync(store=head, kind="pbft", validators=[VALIDATOR.address, *(peer_id(i) for i in range(3))],  # type: ignore[arg-type]
                     request=request, apply=apply, run_blocking=run_blocking or direct, sync_hint=lambda: None,
                     max_payload_bytes=lambda: 1 << 20, settings=SyncSettings(), on_syncing=reported.append,
                     logger=logging.getLogger("test"))
    for i in range(3):
        sync.on_status(peer_id(i), encode_status(height, "ab" * 32))
    return sync, asked


async def settle(asked: list[str], count: int) -> None:
    for _ in range(100):
        if len(asked) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError("the syncer did not send its request")


async def test_fetching_towards_a_lone_claim_is_not_syncing_and_a_peer_that_cannot_serve_it_is_penalized() -> None:
    liar, other = peer_id(0), peer_id(1)
    empty = MAGIC + (10).to_bytes(8, "big") + (0).to_bytes(4, "big")  # its real head, no blocks
    gate, reported = asyncio.Event(), list[bool]()
    sync, asked = fetching_sync({liar: empty, other: empty}, gate, reported)
    sync.on_status(liar, encode_status(HUGE, "ab" * 32))
    target = sync.wanted_target()
    assert target == HUGE
    fetch = asyncio.create_task(sync.sync_to(target))
    await settle(asked, 1)
    assert asked == [liar] and sync.syncing
    assert sync.status() == {"syncing": False, "sync_target_height": None, "blocks_behind": 0}
    gate.set()
    assert await fetch is False
    assert sync.counters["claims_not_served"] == 1 and sync.penalized_for_s(liar) > 0
    assert sync.wanted_target() is None  # a penalized peer's claim is no target any more
    assert reported == []  # the syncing gauge never went up
    # Once f + 1 validators claim a height, fetching towards it is syncing (the liar sits out).
    gate.clear()
    sync.on_status(liar, encode_status(HUGE, "ab" * 32))
    sync.on_status(other, encode_status(HUGE, "ab" * 32))
    fetch = asyncio.create_task(sync.sync_to(HUGE))
    await settle(asked, 2)
    assert asked[1] == other
    assert sync.status() == {"syncing": True, "sync_target_height": HUGE, "blocks_behind": HUGE - 10}
    assert reported == [True]
    gate.set()
    assert await fetch is False
    assert reported == [True, False]


async def test_peers_whose_height_is_vouched_for_are_asked_before_a_lone_higher_claim() -> None:
    """Else a liar that claims the highest head and never answers is waited for every round."""
    liar, honest, other = peer_id(0), peer_id(1), peer_id(2)
    gate, reported = asyncio.Event(), list[bool]()
    gate.set()
    sync, asked = fetching_sync({liar: TimeoutError(), honest: TimeoutError(), other: TimeoutError()}, gate,
                                reported)
    sync.on_status(liar, encode_status(HUGE, "ab" * 32))
    for peer in (honest, other):
        sync.on_status(peer, encode_status(20, "ab" * 32))
    assert await sync.sync_to(20) is False
    assert sorted(asked[:2]) == sorted([honest, other]) and asked[2:] == [liar]
    # Not answering is no fault: a link may be down.
    assert sync.counters["requests_failed"] == 3 and sync.counters["peers_penalized"] == 0


async def test_blocks_with_valid_certificates_prove_a_height_a_lone_peer_claims(store: Store) -> None:
    """A lone peer's claim is not believed, but the certified blocks it serves are proof."""
    served = {block.height: (block, certificate_for(block))
              for block in (store.load_block(h) for h in range(1, 6)) if isinstance(block, Block)}

    async def certified(fn: Any, raw: Any, height: int, *args: Any) -> Any:
        return [served[height]]  # stands for a block that passed decoding and its certificate check

    gate, reported = asyncio.Event(), list[bool]()
    gate.set()
    sync, _ = fetching_sync({peer_id(0): serve_blocks(store, request(1), 64, 1 << 20)}, gate, reported,
                            run_blocking=certified, height=0)
    sync.on_status(peer_id(0), encode_status(HUGE, "ab" * 32))
    assert sync.status()["blocks_behind"] == 0
    assert await sync.sync_to(HUGE) is False  # apply refuses (see fetching_sync): the tip stays at 0
    assert sync.status() == {"syncing": False, "sync_target_height": 5, "blocks_behind": 5}


def test_gossip_batches_respect_the_count_and_byte_limits() -> None:
    sent: list[bytes] = []
    overflow: list[int] = []
    txs = [transfer(ACCOUNTS[0], n, ACCOUNTS[1]) for n in range(7)]
    size = len(txs[0].encode())
    batcher = TxBatcher(sent.append, max_batch_txs=3, max_batch_bytes=2 + 2 * size + 1, max_pending_txs=5,
                        flush_s=0, on_overflow=overflow.append)
    batcher.add(txs)
    assert overflow == [2]  # only max_pending_txs are taken
    batches = [json.loads(b) for b in sent]
    assert [len(b) for b in batches] == [2, 2, 1]  # the byte limit binds before the count limit
    assert [t["body"]["nonce"] for b in batches for t in b] == [0, 1, 2, 3, 4]


def test_gossip_keeps_nothing_while_no_peer_would_get_it() -> None:
    """A lone validator (listening for a newcomer) or one whose links are all down: no batch is
    built for nobody, and none is sent later for what came in meanwhile."""
    sent: list[bytes] = []
    peers = [False]
    batcher = TxBatcher(sent.append, max_batch_txs=10, max_batch_bytes=1 << 20, max_pending_txs=10, flush_s=0,
                        on_overflow=lambda n: None, has_peers=lambda: peers[0])
    batcher.add([transfer(ACCOUNTS[0], 0, ACCOUNTS[1])])
    assert (batcher.pending, sent, batcher.batches_sent) == (0, [], 0)
    peers[0] = True
    batcher.add([transfer(ACCOUNTS[0], 1, ACCOUNTS[1])])
    assert [t["body"]["nonce"] for t in json.loads(sent[0])] == [1] and len(sent) == 1


async def test_an_unexpected_error_while_decoding_ends_the_sync_instead_of_hanging_it(store: Store) -> None:
    """Only a BadBatch is the peer's fault; anything else raised while a block is decoded and
    certified (a bug) must reach the sync task, which the node supervises, not leave it waiting."""
    async def broken(fn: Any, *args: Any) -> Any:
        raise RuntimeError("a bug in a check")

    gate, reported = asyncio.Event(), list[bool]()
    gate.set()
    sync, _ = fetching_sync({peer_id(i): serve_blocks(store, request(1), 64, 1 << 20) for i in range(3)}, gate,
                            reported, run_blocking=broken, height=0)
    sync.on_status(peer_id(0), encode_status(5, "ab" * 32))
    with pytest.raises(RuntimeError, match="a bug in a check"):
        await asyncio.wait_for(sync.sync_to(5), timeout=30)
