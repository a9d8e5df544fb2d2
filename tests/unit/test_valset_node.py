"""The node's side of validator-set changes: the set in force at each height from committed state
(`node.core.validators.ValidatorSets`), and block sync checking each certificate against the set of
its own height (`node.net.sync.verify_batch`), so a chain that skips a change is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from consensus.bft.messages import Kind, signing_bytes
from ledger import keys, valset
from ledger.block import Block, make_block
from ledger.genesis import Genesis, Validator
from ledger.governance import GenesisGovernance, decode_action
from ledger.proof import change_is_committed
from ledger.tx import Propose, Vote, sign_tx
from node.core.validators import ValidatorSets
from node.net.sync import BadBatch, verify_batch
from storage import Store
from tests.helpers.chain import certificate_for, next_block

CHAIN = "ledger-valset"
VAL = [keys.PrivateKey.from_seed(bytes([0x30 + i]) * 32) for i in range(5)]
M = [keys.PrivateKey.from_seed(bytes([0x50 + i]) * 32) for i in range(3)]


def genesis() -> Genesis:
    validators = tuple(Validator(v.address, f"v{i}") for i, v in enumerate(VAL[:4]))
    return Genesis(CHAIN, 1_700_000_000_000, "pbft", validators,
                   tuple((m.address, 10) for m in M),
                   GenesisGovernance(tuple((m.address, 1) for m in M), 2, 3, 10))


def commit(store: Store, *txs: Any) -> None:
    block, execution = next_block(store, txs, VAL[0].address)
    store.save_block(block, certificate_for(block), execution)


def test_the_set_of_every_height_follows_the_committed_changes(tmp_path: Path) -> None:
    g = genesis()
    store = Store.open(tmp_path / "db", g)
    try:
        sets = ValidatorSets(store, g)
        old = tuple(v.address for v in VAL[:4])
        assert sets.at(1) == old and sets.known_through() == valset.ACTIVATION_DELAY
        with pytest.raises(ValueError):
            sets.at(valset.ACTIVATION_DELAY + 1)
        propose = sign_tx(M[0], CHAIN, 0, Propose(*decode_action(
            "add-validator", {"node_id": VAL[4].address, "p2p_url": "ws://127.0.0.1:9"})))
        commit(store, propose)
        commit(store, sign_tx(M[1], CHAIN, 0, Vote(propose.hash, True)))  # executes in block 2
        new = (*old, VAL[4].address)
        assert sets.at(3) == old and sets.at(2 + valset.ACTIVATION_DELAY) == new
        for _ in range(5):
            commit(store)
        assert [sets.at(h) for h in range(1, 8)] == [old] * 3 + [new] * 4
        assert VAL[4].address in sets.ever()
        assert sets.entries_at(store.tip.height)[-1]["p2p_url"] == "ws://127.0.0.1:9"
        # Proofs list each change with the block that decided it.
        assert sets.changes_through(3) == []
        [change] = sets.changes_through(4)
        assert change.header.height == 2 and change.activation_height == 4 and change.validators == new
        # ... and the deciding vote's receipt, in the block's receipts root, names it.
        assert change.tx_index == 0 and change_is_committed(change) is None
        for forged in (dataclasses.replace(change, validators=old), dataclasses.replace(change, activation_height=5),
                       dataclasses.replace(change, tx_hash=propose.hash)):
            assert change_is_committed(forged) is not None
    finally:
        store.close()


def _certified(height: int, signers: list[keys.PrivateKey]) -> tuple[Block, dict[str, Any]]:
    block = make_block(CHAIN, height, "11" * 32, 1_000 + height, VAL[0].address, (), "22" * 32)
    data = signing_bytes(CHAIN, Kind.COMMIT, height, 0, block.hash)
    seals = [{"validator": k.address, "signature": k.sign(data).hex()} for k in signers]
    return block, {"height": height, "round": 0, "block_hash": block.hash, "seals": seals}


def test_block_sync_checks_each_certificate_under_the_set_of_its_height() -> None:
    """A rotation of VAL[3] to VAL[4] in force from height 6: block 6 certified by the old set
    (VAL[0..2] are a quorum of both, so use VAL[1..3]) proves nothing under the new one."""
    old = [v.address for v in VAL[:4]]
    new = [*old[:3], VAL[4].address]

    def at(height: int) -> list[str]:
        return old if height < 6 else new

    assert verify_batch("pbft", at, [_certified(5, VAL[1:4]), _certified(6, [*VAL[1:3], VAL[4]])]) == 2
    with pytest.raises(BadBatch) as info:
        verify_batch("pbft", at, [_certified(5, VAL[1:4]), _certified(6, VAL[1:4])])
    assert info.value.height == 6
    # Above the heights whose set is known, the last known set is a guess: a block it does not
    # prove ends the batch (fetched again later), and is not held against the peer.
    assert verify_batch("pbft", lambda h: old, [_certified(5, VAL[1:4]), _certified(6, [*VAL[1:3], VAL[4]])],
                        known_through=5) == 1
    with pytest.raises(BadBatch):
        verify_batch("pbft", lambda h: old, [_certified(5, [*VAL[1:3], VAL[4]])], known_through=5)
