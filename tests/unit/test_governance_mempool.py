"""Governance at admission: what the committed state (plus the sender's own pending transactions)
forbids is refused at submission with the code execution would give, and pending transactions
that a committed governance change forbids leave the mempool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.genesis import Genesis
from ledger.governance import GenesisGovernance, decode_action
from ledger.tx import Propose, Transaction, Transfer, Vote, sign_tx
from node.core.mempool import Mempool, MempoolLimits
from storage import Store
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, next_block

V0 = key(0, b"node")
ALICE, BOB = key(1), key(2)
M = [key(i, b"member") for i in range(3)]
LIFETIME = 3


class Clock:
    def __call__(self) -> float:
        return 1000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    base = make_genesis([V0], [ALICE, BOB, *M], amount=100)
    g = Genesis(base.chain_id, base.genesis_time, base.consensus, base.validators, base.allocations,
                GenesisGovernance(tuple((m.address, 1) for m in M), 2, 3, LIFETIME))
    s = Store.open(tmp_path / "db", g)
    yield s
    s.close()


def pool(store: Store) -> Mempool:
    return Mempool(store, CHAIN, MempoolLimits(), Clock())


def propose(who: Any, nonce: int, action: str, **args: Any) -> Transaction:
    return sign_tx(who, CHAIN, nonce, Propose(*decode_action(action, args)))


def vote(who: Any, nonce: int, pid: str, approve: bool = True) -> Transaction:
    return sign_tx(who, CHAIN, nonce, Vote(pid, approve))


def commit(store: Store, mp: Mempool, txs: list[Transaction]) -> dict[str, str]:
    """Commit `txs` as the next block; the mempool's drops by hash -> code."""
    block, execution = next_block(store, txs, V0.address)
    assert all(r.ok for r in execution.receipts), execution.receipts
    store.save_block(block, certificate_for(block), execution)
    return {d.hash: d.code for d in mp.on_committed(block.txs, execution.writes)}


def code(mp: Mempool, tx: Transaction) -> str:
    [outcome] = mp.add([tx])
    return outcome.code


def test_a_frozen_account_is_refused_at_submission_and_its_pending_transactions_are_dropped(store: Store) -> None:
    mp = pool(store)
    freeze = propose(M[0], 0, "freeze-account", account=ALICE.address)
    assert code(mp, freeze) == "accepted"
    commit(store, mp, [freeze])
    pending = sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 1))
    assert code(mp, pending) == "accepted"
    approve = vote(M[1], 0, freeze.hash)
    assert code(mp, approve) == "accepted"
    dropped = commit(store, mp, [approve])
    assert dropped == {pending.hash: "account_frozen"}
    assert code(mp, sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 1))) == "account_frozen"
    assert code(mp, sign_tx(BOB, CHAIN, 0, Transfer(ALICE.address, "LDG", 1))) == "accepted"  # it may receive


def test_votes_are_refused_at_submission_for_every_governance_reason(store: Store) -> None:
    mp = pool(store)
    prop = propose(M[0], 0, "freeze-account", account=ALICE.address)
    assert code(mp, vote(M[1], 0, prop.hash)) == "unknown_proposal"  # not committed yet
    assert code(mp, prop) == "accepted"
    commit(store, mp, [prop])
    assert code(mp, vote(ALICE, 0, prop.hash)) == "not_a_member"
    assert code(mp, propose(ALICE, 0, "freeze-account", account=BOB.address)) == "not_a_member"
    assert code(mp, vote(M[0], 1, prop.hash)) == "already_voted"
    assert code(mp, propose(M[0], 1, "freeze-account", account=M[2].address)) == "invalid_proposal"
    # A member's own pending vote is part of its pending state: a second one is refused too.
    assert code(mp, vote(M[1], 0, prop.hash, approve=False)) == "accepted"
    assert code(mp, vote(M[1], 1, prop.hash)) == "already_voted"


def test_a_vote_after_the_proposal_lifetime_is_refused_even_before_a_block_expires_it(store: Store) -> None:
    mp = pool(store)
    prop = propose(M[0], 0, "freeze-account", account=ALICE.address)
    mp.add([prop])
    commit(store, mp, [prop])
    for i in range(LIFETIME - 1):
        commit(store, mp, [sign_tx(BOB, CHAIN, i, Transfer(ALICE.address, "LDG", 1))])
    late = vote(M[1], 0, prop.hash)
    assert code(mp, late) == "accepted"  # the next block is the last of its lifetime
    mp2 = pool(store)
    commit(store, mp2, [sign_tx(BOB, CHAIN, LIFETIME - 1, Transfer(ALICE.address, "LDG", 1))])
    assert code(pool(store), vote(M[2], 0, prop.hash)) == "proposal_closed"


def test_a_chain_without_a_committee_refuses_governance_and_admits_everything_else(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "db", make_genesis([V0], [ALICE, BOB], amount=100))
    try:
        mp = pool(s)
        assert code(mp, propose(ALICE, 0, "freeze-account", account=BOB.address)) == "not_a_member"
        assert code(mp, sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 1))) == "accepted"
    finally:
        s.close()
