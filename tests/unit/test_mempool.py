"""Mempool admission rules, nonce ordering, bounds, expiry and re-checking after commits.

Runs against a real Store (LevelDB in tmp_path) so committed state is what a node would read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.state import execute
from ledger.tx import Issue, Record, Transaction, Transfer, build, sign_tx
from node.core.mempool import Mempool, MempoolLimits, encoded_size
from storage import Store
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, next_block, resigned, transfer

V0 = key(0, b"node")
ALICE, BOB, CAROL = key(1), key(2), key(3)
DAVE = key(4)  # no genesis funds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "db", make_genesis([V0], [ALICE, BOB, CAROL], amount=100))
    yield s
    s.close()


def pool(store: Store, clock: Clock | None = None, **limits: int | float) -> Mempool:
    return Mempool(store, CHAIN, MempoolLimits(**limits), clock or Clock())  # type: ignore[arg-type]


def codes(outcomes: list) -> list[str]:  # type: ignore[type-arg]
    return [o.code for o in outcomes]


def commit(store: Store, mp: Mempool, txs: list[Transaction]) -> list[str]:
    block, execution = next_block(store, txs, V0.address)
    store.save_block(block, certificate_for(block), execution)
    return [d.code for d in mp.on_committed(block.txs, execution.writes)]


def test_a_valid_transaction_is_admitted_once_and_remembered_as_verified(store: Store) -> None:
    mp = pool(store)
    tx = transfer(ALICE, 0, BOB, 10)
    [outcome] = mp.add([tx])
    assert outcome.accepted and outcome.hash == tx.hash
    assert len(mp) == 1 and tx.hash in mp
    assert mp.is_verified(tx)
    # Same body (so same hash), other signature: not the transaction that was verified.
    forged = build(tx.chain_id, tx.sender, tx.nonce, tx.type, tx.payload, b"\x01" * 64)
    assert forged.hash == tx.hash and not mp.is_verified(forged)
    assert codes(mp.add([tx])) == ["duplicate"]


def test_each_signature_is_verified_once_and_cheap_refusals_skip_verification(store: Store) -> None:
    calls: list[str] = []

    def verify(tx: Transaction) -> bool:
        calls.append(tx.hash)
        return tx.signature_valid()

    mp = Mempool(store, CHAIN, MempoolLimits(), Clock(), verify)
    txs = [transfer(ALICE, n, BOB) for n in range(3)]
    assert codes(mp.add(txs + txs)) == ["accepted"] * 3 + ["duplicate"] * 3
    assert calls == [t.hash for t in txs]


def test_wrong_chain_and_bad_signature_are_refused(store: Store) -> None:
    mp = pool(store)
    other_chain = transfer(ALICE, 0, BOB, chain_id="other-chain")
    good = transfer(ALICE, 0, BOB)
    bad_sig = resigned(good, BOB)
    assert codes(mp.add([other_chain, bad_sig])) == ["wrong_chain_id", "invalid_signature"]
    assert len(mp) == 0


def test_nonce_rules_used_pending_and_duplicate_of_committed(store: Store) -> None:
    mp = pool(store)
    tx0 = transfer(ALICE, 0, BOB, 1)
    assert codes(mp.add([tx0])) == ["accepted"]
    assert codes(mp.add([transfer(ALICE, 0, BOB, 2)])) == ["nonce_pending"]
    assert commit(store, mp, [tx0]) == []
    assert len(mp) == 0
    assert codes(mp.add([tx0])) == ["duplicate"]  # replay of a committed transaction
    assert codes(mp.add([transfer(ALICE, 0, BOB, 3)])) == ["nonce_used"]
    assert codes(mp.add([transfer(ALICE, 1, BOB, 1)])) == ["accepted"]


def test_future_nonces_wait_for_the_gap_within_a_bound(store: Store) -> None:
    mp = pool(store, max_future_per_sender=2)
    assert codes(mp.add([transfer(ALICE, 3, BOB)])) == ["nonce_too_far"]
    t2, t1, t0 = transfer(ALICE, 2, BOB), transfer(ALICE, 1, BOB), transfer(ALICE, 0, BOB)
    assert codes(mp.add([t2, t1])) == ["accepted", "accepted"]
    assert mp.reap(10, 1 << 20) == []  # nothing is ready until nonce 0 arrives
    assert codes(mp.add([transfer(ALICE, 2, BOB, 5)])) == ["nonce_pending"]  # a future slot is taken too
    assert codes(mp.add([t0])) == ["accepted"]
    assert mp.reap(10, 1 << 20) == [t0, t1, t2]
    assert mp.next_nonce(ALICE.address) == 3


def test_zero_future_nonces_means_only_the_next_nonce_is_admitted(store: Store) -> None:
    mp = pool(store, max_future_per_sender=0)
    assert codes(mp.add([transfer(ALICE, 1, BOB), transfer(ALICE, 0, BOB)])) == ["nonce_too_far", "accepted"]


def test_funds_are_checked_against_the_senders_pending_state(store: Store) -> None:
    mp = pool(store)
    assert codes(mp.add([transfer(ALICE, 0, BOB, 60), transfer(ALICE, 1, BOB, 60),
                         transfer(ALICE, 1, BOB, 40)])) == ["accepted", "insufficient_funds", "accepted"]
    # BOB's incoming 100 is pending, not committed: admission does not count it.
    assert codes(mp.add([transfer(BOB, 0, CAROL, 150)])) == ["insufficient_funds"]
    # DAVE has nothing at all.
    assert codes(mp.add([transfer(DAVE, 0, BOB, 1)])) == ["insufficient_funds"]


def test_assets_unknown_issued_and_claimed(store: Store) -> None:
    mp = pool(store)
    assert codes(mp.add([sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "GOLD", 1))])) == ["unknown_asset"]
    assert codes(mp.add([sign_tx(ALICE, CHAIN, 0, Issue("LDG", 5))])) == ["asset_exists"]
    # An issue then a transfer of the new asset by the same sender: both visible in pending state.
    assert codes(mp.add([sign_tx(ALICE, CHAIN, 0, Issue("GOLD", 5)),
                         sign_tx(ALICE, CHAIN, 1, Transfer(BOB.address, "GOLD", 5)),
                         sign_tx(ALICE, CHAIN, 2, Transfer(BOB.address, "GOLD", 1))])) == \
        ["accepted", "accepted", "insufficient_funds"]
    # Another sender cannot issue a symbol that a pending issue claims.
    assert codes(mp.add([sign_tx(BOB, CHAIN, 0, Issue("GOLD", 9))])) == ["asset_exists"]
    assert codes(mp.add([sign_tx(BOB, CHAIN, 0, Record("doc", "sha256:00"))])) == ["accepted"]


def test_full_mempool_refuses_with_a_retry_hint(store: Store) -> None:
    mp = pool(store, max_txs=2, retry_after_s=3)
    outcomes = mp.add([transfer(ALICE, n, BOB) for n in range(3)])
    assert codes(outcomes) == ["accepted", "accepted", "mempool_full"]
    assert outcomes[2].retry_after_s == 3
    size = len(transfer(ALICE, 0, BOB).encode())
    mp = pool(store, max_bytes=size * 2 + size // 2)
    outcomes = mp.add([transfer(BOB, n, ALICE) for n in range(3)])
    assert codes(outcomes) == ["accepted", "accepted", "mempool_full"]
    assert mp.size_bytes == 2 * size


def test_reap_keeps_nonce_order_and_is_fair_across_senders(store: Store) -> None:
    mp = pool(store)
    per_sender = {s.address: [transfer(s, n, DAVE) for n in range(5)] for s in (ALICE, BOB, CAROL)}
    for txs in per_sender.values():
        assert codes(mp.add(txs)) == ["accepted"] * 5
    picked = mp.reap(6, 1 << 20)
    assert len(picked) == 6
    for address, txs in per_sender.items():
        mine = [t for t in picked if t.sender == address]
        assert mine == txs[:2]  # two each, in nonce order
    everything = mp.reap(100, 1 << 20)
    assert len(everything) == 15
    for txs in per_sender.values():
        assert [t for t in everything if t.sender == txs[0].sender] == txs


def test_reap_respects_the_byte_budget_without_skipping_nonces(store: Store) -> None:
    mp = pool(store)
    small = transfer(ALICE, 0, BOB)
    big = sign_tx(BOB, CHAIN, 0, Record("k", "x" * 3000))
    after_big = transfer(BOB, 1, ALICE)
    assert codes(mp.add([small, big, after_big])) == ["accepted"] * 3
    picked = mp.reap(10, len(small.encode()) + 500)
    assert picked == [small]  # BOB's record does not fit and BOB's nonce 1 may not jump it


def test_future_transactions_expire_but_ready_ones_do_not(store: Store) -> None:
    clock = Clock()
    mp = pool(store, clock, tx_ttl_s=60)
    ready, stuck = transfer(ALICE, 0, BOB), transfer(BOB, 5, ALICE)
    assert codes(mp.add([ready, stuck])) == ["accepted", "accepted"]
    clock.now += 59
    assert mp.expire() == []
    clock.now += 2
    [gone] = mp.expire()
    assert (gone.hash, gone.code) == (stuck.hash, "expired")
    assert stuck.hash not in mp and ready.hash in mp
    dropped = mp.dropped(stuck.hash)
    assert dropped is not None and dropped.code == "expired"


def test_commit_drops_what_can_no_longer_execute_and_keeps_the_rest(store: Store) -> None:
    mp = pool(store)
    ours = [transfer(ALICE, 0, BOB, 60), transfer(ALICE, 1, BOB, 30), transfer(ALICE, 2, BOB, 1)]
    other = transfer(CAROL, 0, BOB, 5)
    assert codes(mp.add([*ours, other])) == ["accepted"] * 4
    # Another node's transaction with ALICE's nonce 0 spending 90 commits instead of ours.
    theirs = transfer(ALICE, 0, CAROL, 90)
    dropped = commit(store, mp, [theirs])
    assert sorted(dropped) == ["insufficient_funds", "nonce_used"]
    assert ours[0].hash not in mp and ours[1].hash not in mp
    assert ours[2].hash in mp and other.hash in mp
    # ALICE's nonce 2 now waits behind a gap at nonce 1; CAROL's is still ready.
    assert mp.reap(10, 1 << 20) == [other]
    assert codes(mp.add([transfer(ALICE, 1, BOB, 1)])) == ["accepted"]
    assert [t.nonce for t in mp.reap(10, 1 << 20) if t.sender == ALICE.address] == [1, 2]


def test_commit_removes_included_transactions_and_the_rest_stay_ready(store: Store) -> None:
    mp = pool(store)
    txs = [transfer(ALICE, n, BOB, 10) for n in range(4)]
    assert codes(mp.add(txs)) == ["accepted"] * 4
    assert commit(store, mp, mp.reap(2, 1 << 20)) == []
    assert len(mp) == 2
    assert mp.reap(10, 1 << 20) == txs[2:]
    # The remaining ones still execute against the new committed state.
    execution = execute(store.state, CHAIN, store.tip.height + 1, txs[2:], store.tip.app_hash)
    assert [r.code for r in execution.receipts] == ["ok", "ok"]


def test_incoming_funds_count_once_committed(store: Store) -> None:
    mp = pool(store)
    assert codes(mp.add([transfer(DAVE, 0, BOB, 50)])) == ["insufficient_funds"]
    incoming = transfer(ALICE, 0, DAVE, 50)
    assert codes(mp.add([incoming])) == ["accepted"]
    assert commit(store, mp, [incoming]) == []
    assert codes(mp.add([transfer(DAVE, 0, BOB, 50)])) == ["accepted"]


def test_a_committed_issue_from_elsewhere_drops_our_pending_issue(store: Store) -> None:
    mp = pool(store)
    ours = sign_tx(ALICE, CHAIN, 0, Issue("GOLD", 5))
    assert codes(mp.add([ours])) == ["accepted"]
    theirs = sign_tx(BOB, CHAIN, 0, Issue("GOLD", 7))
    assert commit(store, mp, [theirs]) == ["asset_exists"]
    assert len(mp) == 0
    assert codes(mp.add([sign_tx(CAROL, CHAIN, 0, Issue("GOLD", 1))])) == ["asset_exists"]


def test_signature_checks_done_elsewhere_are_used_and_ready_count_tracks_nonces(store: Store) -> None:
    mp = pool(store)
    txs = [transfer(ALICE, 0, BOB), transfer(ALICE, 2, BOB), transfer(BOB, 0, ALICE)]
    assert codes(mp.add(txs, [True, True, False])) == ["accepted", "accepted", "invalid_signature"]
    assert mp.ready_total == 1  # nonce 2 waits for nonce 1
    assert codes(mp.add([transfer(ALICE, 1, BOB)])) == ["accepted"]
    assert mp.ready_total == 3
    commit(store, mp, mp.reap(2, 1 << 20))
    assert mp.ready_total == 1 and len(mp) == 1
    with pytest.raises(ValueError):
        mp.add(txs, [True])


def test_signatures_verified_elsewhere_are_remembered_within_the_mempool_bound(store: Store) -> None:
    calls: list[str] = []

    def verify(tx: Transaction) -> bool:
        calls.append(tx.hash)
        return tx.signature_valid()

    mp = Mempool(store, CHAIN, MempoolLimits(max_txs=2), Clock(), verify)
    seen = [transfer(ALICE, n, BOB) for n in range(3)]
    for tx in seen:
        mp.note_verified(tx)
    assert not mp.is_verified(seen[0]) and mp.is_verified(seen[1]) and mp.is_verified(seen[2])
    assert not mp.is_verified(resigned(seen[2], BOB))


def test_stale_means_admission_refuses_by_nonce_before_the_signature(store: Store) -> None:
    calls: list[str] = []

    def verify(tx: Transaction) -> bool:
        calls.append(tx.hash)
        return tx.signature_valid()

    mp = Mempool(store, CHAIN, MempoolLimits(), Clock(), verify)
    first, second = transfer(ALICE, 0, BOB), transfer(ALICE, 1, BOB)
    assert not mp.is_stale(first)
    commit(store, mp, [first])
    assert mp.is_stale(first) and not mp.is_stale(second)  # nonce 0 is used on chain
    assert codes(mp.add([second])) == ["accepted"]
    other = transfer(ALICE, 1, CAROL)  # same nonce as a pending one, another transaction
    assert mp.is_stale(other) and not mp.is_stale(second)  # the pending one itself is a duplicate
    calls.clear()
    assert codes(mp.add([first, other], [None, None])) == ["duplicate", "nonce_pending"]
    assert calls == []  # refused without looking at the signature, as is_stale promised


def test_the_size_the_mempool_counts_is_the_encoded_size() -> None:
    for tx in (transfer(ALICE, 0, BOB), sign_tx(BOB, CHAIN, 7, Record("ключ", "значение \"q\" \u2028")),
               sign_tx(CAROL, CHAIN, 2**40, Issue("GOLD", 2**53 - 1))):
        assert encoded_size(tx) == len(tx.encode())


def test_funds_received_while_the_sender_has_pending_transactions_count_after_commit(store: Store) -> None:
    mp = pool(store)
    # BOB has a pending transfer, so his pending state is kept across commits (the cheap path).
    assert codes(mp.add([transfer(BOB, 0, CAROL, 90)])) == ["accepted"]
    assert codes(mp.add([transfer(BOB, 1, CAROL, 50)])) == ["insufficient_funds"]
    incoming = transfer(ALICE, 0, BOB, 60)
    assert codes(mp.add([incoming])) == ["accepted"]
    assert commit(store, mp, [incoming]) == []
    # The credit is committed now: the refusal above would be wrong, and is not repeated.
    assert codes(mp.add([transfer(BOB, 1, CAROL, 50)])) == ["accepted"]
    assert [t.nonce for t in mp.reap(10, 1 << 20) if t.sender == BOB.address] == [0, 1]


def test_a_long_lived_sender_queue_keeps_admitting_across_many_commits(store: Store) -> None:
    mp = pool(store)
    nonce = 0
    for _round in range(40):
        batch = [sign_tx(ALICE, CHAIN, nonce + k, Record(f"k{nonce + k}", "v")) for k in range(10)]
        assert codes(mp.add(batch)) == ["accepted"] * 10
        nonce += 10
        assert commit(store, mp, mp.reap(7, 1 << 20)) == []
    assert len(mp) == 40 * 3 and mp.ready_total == 120
    assert mp.next_nonce(ALICE.address) == 400
    block = mp.reap(1000, 1 << 20)
    assert [t.nonce for t in block] == list(range(280, 400))
    assert commit(store, mp, block) == [] and len(mp) == 0


def test_take_stale_answers_old_pending_transactions_once_per_period(store: Store) -> None:
    clock = Clock()
    mp = pool(store, clock)
    old = [transfer(ALICE, n, BOB) for n in range(3)]
    mp.add(old)
    clock.now += 5
    young = transfer(BOB, 0, ALICE)
    mp.add([young])
    assert mp.take_stale(3, 2) == old[:2]  # oldest first, within the limit
    assert mp.take_stale(3, 10) == old[2:]  # the first two were just sent again
    assert mp.take_stale(3, 10) == []
    clock.now += 3
    assert mp.take_stale(3, 10) == [*old, young]
    commit(store, mp, old)
    clock.now += 3
    assert mp.take_stale(3, 10) == [young]  # committed transactions are gone from the mempool
