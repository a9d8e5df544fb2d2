"""The block checker and proposal builder: every rule a proposal must pass against committed state,
signatures verified once per node, and executions cached so that a commit does not execute again."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.block import Block, make_block, receipts_root_hex
from ledger.errors import Rejected
from ledger.state import OK, execute
from ledger.tx import Transaction
from node.core.executor import BlockExecutor, BuildLimits
from node.core.mempool import Mempool, MempoolLimits
from storage import Store
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, resigned, transfer

V0, V1, OUTSIDER = key(0, b"node"), key(1, b"node"), key(9, b"node")
ALICE, BOB = key(1), key(2)
NOW_MS = 1_700_000_100_000


class ClockMs:
    def __init__(self) -> None:
        self.now = NOW_MS

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db", make_genesis([V0, V1], [ALICE, BOB], amount=1000))
    yield s
    s.close()


def make(store: Store, clock: ClockMs | None = None, **limits: int | bool) -> tuple[BlockExecutor, Mempool]:
    mempool = Mempool(store, CHAIN, MempoolLimits(), lambda: 0.0)
    executor = BlockExecutor(store, mempool, V0.address, (V0.address, V1.address), BuildLimits(**limits),  # type: ignore[arg-type]
                             clock or ClockMs())
    return executor, mempool


def foreign_block(store: Store, txs: list[Transaction], proposer: str = V1.address,
                  timestamp: int | None = None, app_hash: str | None = None, height: int | None = None,
                  prev_hash: str | None = None) -> Block:
    """A block another validator built on our head."""
    tip = store.tip
    h = tip.height + 1 if height is None else height
    try:
        receipts = execute(store.state, CHAIN, h, txs, tip.app_hash).receipts
    except Rejected:  # a block that cannot execute: the check must say so, whatever its receipts
        receipts = tuple(OK for _ in txs)
    if app_hash is None:
        app_hash = execute(store.state, CHAIN, h, txs, tip.app_hash).app_hash
    return make_block(CHAIN, h, tip.block_hash if prev_hash is None else prev_hash,
                      NOW_MS if timestamp is None else timestamp, proposer, tuple(txs), app_hash, receipts)


def test_a_built_proposal_passes_its_own_check_without_executing_or_verifying_again(store: Store) -> None:
    executor, mempool = make(store)
    txs = [transfer(ALICE, n, BOB, 10) for n in range(3)]
    assert all(o.accepted for o in mempool.add(txs))
    block = executor.build_proposal(1, 0, store.tip)
    assert block is not None
    assert list(block.txs) == txs
    assert block.header.proposer == V0.address and block.header.timestamp == NOW_MS
    assert executor.check_block(block, store.tip) is None
    assert executor.signatures_verified == 0
    execution = executor.execution_for(block)
    assert execution.app_hash == block.header.app_hash
    store.save_block(block, certificate_for(block), execution)


def test_nothing_to_propose_builds_nothing_in_round_0_and_an_empty_block_later(store: Store) -> None:
    executor, _ = make(store)
    assert executor.build_proposal(1, 0, store.tip) is None
    # After a round change an empty proposal is what lets the height finish.
    block = executor.build_proposal(1, 2, store.tip)
    assert block is not None and block.txs == ()
    assert executor.check_block(block, store.tip) is None
    # Raft passes its term as the round: it must never get an empty block.
    raft, _ = make(store, empty_block_after_round_0=False)
    assert raft.build_proposal(1, 2, store.tip) is None


def test_proposal_timestamp_is_after_the_parent_even_with_a_slow_clock(store: Store) -> None:
    clock = ClockMs()
    clock.now = store.tip.timestamp - 5_000  # our clock is behind genesis time
    executor, mempool = make(store, clock)
    mempool.add([transfer(ALICE, 0, BOB)])
    block = executor.build_proposal(1, 0, store.tip)
    assert block is not None and block.header.timestamp == store.tip.timestamp + 1


def test_proposal_respects_block_limits(store: Store) -> None:
    executor, mempool = make(store, max_block_txs=2)
    mempool.add([transfer(ALICE, n, BOB) for n in range(5)])
    block = executor.build_proposal(1, 0, store.tip)
    assert block is not None and len(block.txs) == 2


def test_a_foreign_block_is_checked_and_its_unknown_signatures_verified(store: Store) -> None:
    executor, mempool = make(store)
    known = transfer(ALICE, 0, BOB)
    mempool.add([known])
    unknown = transfer(BOB, 0, ALICE)
    block = foreign_block(store, [known, unknown])
    assert executor.check_block(block, store.tip) is None
    assert executor.signatures_verified == 1  # only the one this node had not admitted itself
    assert executor.check_block(block, store.tip) is None
    assert executor.signatures_verified == 1  # a re-proposal of the same block is free
    # The one verified for the block is known to admission too: its gossip copy is not checked again.
    assert mempool.is_verified(unknown)
    assert not mempool.is_verified(resigned(unknown, ALICE))


def test_an_invalid_signature_is_refused_even_for_a_block_hash_seen_before(store: Store) -> None:
    executor, _ = make(store)
    good = transfer(BOB, 0, ALICE)
    forged = resigned(good, ALICE)
    block = foreign_block(store, [good])
    assert executor.check_block(block, store.tip) is None
    twin = foreign_block(store, [forged])
    assert twin.hash == block.hash  # signatures are not part of the block hash
    reason = executor.check_block(twin, store.tip)
    assert reason is not None and "invalid signature" in reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"height": 2}, "does not follow"),
    ({"prev_hash": "ab" * 32}, "prev_hash"),
    ({"proposer": OUTSIDER.address}, "not a validator"),
    ({"timestamp": 1}, "not after its parent"),
    ({"timestamp": NOW_MS + 10_001}, "ahead of this node's clock"),
    ({"app_hash": "cd" * 32}, "app_hash does not match"),
])
def test_blocks_breaking_a_rule_are_refused_with_the_reason(store: Store, change: dict[str, object],
                                                            reason: str) -> None:
    executor, _ = make(store)
    block = foreign_block(store, [transfer(ALICE, 0, BOB)], **change)  # type: ignore[arg-type]
    result = executor.check_block(block, store.tip)
    assert result is not None and reason in result


def test_invalid_transactions_make_the_block_invalid(store: Store) -> None:
    executor, _ = make(store)
    gap = transfer(ALICE, 5, BOB)
    block = foreign_block(store, [gap], app_hash="00" * 32)
    result = executor.check_block(block, store.tip)
    assert result is not None and "nonce" in result
    other_chain = make_block("other", 1, store.tip.block_hash, NOW_MS, V1.address, (), "00" * 32)
    result = executor.check_block(other_chain, store.tip)
    assert result is not None and "chain" in result


def test_a_parent_other_than_the_committed_head_cannot_be_checked(store: Store) -> None:
    executor, _ = make(store)
    block = foreign_block(store, [transfer(ALICE, 0, BOB)])
    stale = dataclasses.replace(store.tip, height=5)
    result = executor.check_block(block, stale)
    assert result is not None and "committed head" in result
    assert executor.build_proposal(6, 0, stale) is None


def test_committing_an_unchecked_block_executes_it_and_divergence_raises(store: Store) -> None:
    executor, _ = make(store)
    block = foreign_block(store, [transfer(ALICE, 0, BOB)])
    assert executor.execution_for(block).app_hash == block.header.app_hash
    bad = foreign_block(store, [transfer(ALICE, 0, BOB)], app_hash="ee" * 32)
    with pytest.raises(Rejected, match="app_hash"):
        executor.execution_for(bad)


def test_a_block_must_commit_to_the_results_its_transactions_produce(store: Store) -> None:
    executor, mempool = make(store)
    txs = [transfer(ALICE, 0, BOB), transfer(BOB, 0, ALICE, 10**9)]  # the second fails: insufficient funds
    good = foreign_block(store, txs)
    assert good.header.version == 2 and executor.check_block(good, store.tip) is None
    h = good.header
    all_ok = make_block(CHAIN, h.height, h.prev_hash, h.timestamp, h.proposer, good.txs, h.app_hash, (OK, OK))
    result = executor.check_block(all_ok, store.tip)
    assert result is not None and "receipts_root" in result
    with pytest.raises(Rejected, match="receipts_root"):
        executor.execution_for(all_ok)
    # A version-1 block (no receipts_root) is no longer proposed, but one from history syncs.
    v1 = make_block(CHAIN, h.height, h.prev_hash, h.timestamp, h.proposer, good.txs, h.app_hash)
    result = executor.check_block(v1, store.tip)
    assert v1.header.version == 1 and result is not None and "version 1" in result
    assert executor.check_block(v1, store.tip, synced=True) is None
    # What this node builds commits to its results.
    mempool.add(txs[:1])
    built = executor.build_proposal(1, 0, store.tip)
    assert built is not None and built.header.version == 2
    receipts = [r.encode() for r in executor.execution_for(built).receipts]
    assert built.header.receipts_root == receipts_root_hex([txs[0].hash], receipts)
