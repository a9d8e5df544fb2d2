"""A proposal's transaction signatures are checked once, in the signature worker processes, before
the engine sees it (`node.prefetch`), and a check already in flight is shared rather than repeated
(`SignatureChecks.verify`). Real workers, a real store and block checker; the engine's verdict on
the block must come out the same, an invalid signature included."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from consensus import bft
from consensus.api import Ed25519Signer
from consensus.bft.messages import Kind, encode, sign
from ledger.block import Block
from ledger.tx import DecodeMemo, Transaction
from node.core.executor import BlockExecutor
from node.core.mempool import Mempool
from node.metrics import NodeMetrics
from node.prefetch import ProposalPrefetch
from node.signatures import VERIFY_INLINE_BELOW, SignatureChecks
from storage import Store
from tests.helpers.chain import CHAIN, make_genesis, resigned, transfer
from tests.unit.test_executor import ALICE, BOB, V0, V1, foreign_block, make

LOG = logging.getLogger("test.prefetch")
N = VERIFY_INLINE_BELOW + 16  # enough that they go to the workers, not the event loop


class Posted:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def __call__(self, peer: str, data: bytes) -> bool:
        self.messages.append((peer, data))
        return True


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db", make_genesis([V0, V1], [ALICE, BOB], amount=1000))
    yield s
    s.close()


async def handed_on(posted: Posted) -> None:
    for _ in range(400):
        if posted.messages:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the proposal was not handed on within 20 s")


Parts = tuple[BlockExecutor, Mempool, SignatureChecks]


@pytest.fixture
async def parts(store: Store) -> AsyncIterator[Parts]:
    executor, mempool = make(store)
    checks = SignatureChecks(mempool, NodeMetrics(), LOG, processes=2, name="test")
    checks.start()
    try:
        yield executor, mempool, checks
    finally:
        await checks.close_workers()
        checks.close_threads()


def payments(bad: int | None = None) -> list[Transaction]:
    txs = [transfer(ALICE, n, BOB) for n in range(N)]
    if bad is not None:
        txs[bad] = resigned(txs[bad], BOB)  # same body, signed by someone else
    return txs


def proposal(block: Block, height: int = 1) -> bytes:
    return encode(sign(Ed25519Signer(V1), CHAIN, Kind.PROPOSAL, height, 0, 1, block.hash,
                       block_bytes=block.encode()))



async def test_a_check_already_in_flight_is_waited_for_not_repeated(parts: Parts) -> None:
    _, _, checks = parts
    txs = payments(bad=7)
    first, second = await asyncio.gather(checks.verify(txs), checks.verify(txs[:20]))
    assert first == [i != 7 for i in range(N)]
    assert second == first[:20]
    assert checks.counts == {"inline": 0, "workers": N, "shared": 20}
    # Once answered, nothing is left in flight: the same transactions are checked afresh.
    assert await checks.verify(txs[:VERIFY_INLINE_BELOW]) == first[:VERIFY_INLINE_BELOW]
    assert checks.counts["workers"] == N + VERIFY_INLINE_BELOW and checks.counts["shared"] == 20


@pytest.fixture
def prefetch(store: Store, parts: Parts) -> tuple[ProposalPrefetch, Posted]:
    """A prefetcher whose task is not running: nothing it queues moves on."""
    _, mempool, checks = parts
    posted = Posted()
    return ProposalPrefetch(bft.carried_block, checks, mempool, DecodeMemo(), lambda: store.tip.height + 1,
                            posted, LOG), posted


@pytest.fixture
async def running(prefetch: tuple[ProposalPrefetch, Posted]) -> AsyncIterator[tuple[ProposalPrefetch, Posted]]:
    task = asyncio.create_task(prefetch[0].run())
    try:
        yield prefetch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_proposal_reaches_the_engine_with_its_signatures_checked(
        store: Store, parts: Parts, running: tuple[ProposalPrefetch, Posted]) -> None:
    executor, _, checks = parts
    prefetch, posted = running
    block = foreign_block(store, payments())
    frame = proposal(block)
    assert prefetch.deliver("peer1", frame)
    assert posted.messages == []  # held until its signatures are checked
    await handed_on(posted)
    assert posted.messages == [("peer1", frame)] and prefetch.prefetched == 1
    assert checks.counts["workers"] == N
    # The engine's check of the block then verifies nothing on the event loop.
    assert executor.check_block(block, store.tip) is None
    assert executor.signatures_verified == 0


async def test_an_invalid_signature_is_still_refused_by_the_block_check(
        store: Store, parts: Parts, running: tuple[ProposalPrefetch, Posted]) -> None:
    executor, mempool, _ = parts
    prefetch, posted = running
    txs = payments(bad=N - 1)
    block = foreign_block(store, txs)
    assert prefetch.deliver("peer1", proposal(block))
    await handed_on(posted)
    assert not mempool.is_verified(txs[-1]) and all(mempool.is_verified(tx) for tx in txs[:-1])
    verdict = executor.check_block(block, store.tip)
    assert verdict is not None and "invalid signature" in verdict
    assert executor.signatures_verified == 1  # only the one the workers found invalid


async def test_what_it_need_not_hold_goes_straight_to_the_engine(
        store: Store, prefetch: tuple[ProposalPrefetch, Posted]) -> None:
    held_back, posted = prefetch  # its task is not running: nothing it queues moves
    block = foreign_block(store, payments())
    vote = encode(sign(Ed25519Signer(V1), CHAIN, Kind.PREPARE, 1, 0, 1, block.hash))
    small = foreign_block(store, payments()[:VERIFY_INLINE_BELOW - 1])
    for frame in (vote, proposal(block, height=2), proposal(small), b"not a frame"):
        assert held_back.deliver("peer1", frame)
        assert posted.messages[-1] == ("peer1", frame)  # at once: no block for the next height worth it
    assert held_back.deliver("peer1", proposal(block))
    held = len(posted.messages)
    assert held_back.deliver("peer1", proposal(block))  # one message per peer waits at a time
    assert len(posted.messages) == held + 1
